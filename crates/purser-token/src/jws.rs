//! Compact JWS signing and verification with a key parsed once.

use std::path::Path;

use data_encoding::{BASE64, BASE64URL_NOPAD};
use purser_core::{SignError, Signer, VerifyError};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer as _, Verifier};
use serde_json::Value;
use sha2::Sha256;

use crate::cert::{check_cert_matches_key, load_cert_chain};
use crate::error::TokenError;
use crate::key::{load_signing_key, Alg, PrivateKey, PublicKey, SigningKey};
use crate::kid::{key_id, KeyIdMode};

/// Longest token [`JwsSigner::verify`] looks at; anything longer is malformed. Tokens purser
/// makes are far shorter (an `x5c` chain of a few certificates is their largest part), and the
/// bound keeps hostile input from costing work.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Signs tokens with one key. The header (with `kid` and `x5c`) and the JWK are built once, at
/// load; signing a token costs one signature.
pub struct JwsSigner {
    key: SigningKey,
    /// The same key in aws-lc's form, which signs several times faster than the portable code;
    /// `None` for a key aws-lc refuses.
    fast: Option<FastKey>,
    public: PublicKey,
    kid: String,
    /// `base64url(header JSON) + "."`.
    header_prefix: String,
    jwk: Value,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for JwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwsSigner")
            .field("alg", &self.key.alg())
            .field("kid", &self.kid)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl JwsSigner {
    /// Builds a signer. `chain` is the DER certificate chain for the key, leaf first, or empty;
    /// when given, its leaf must hold the key's public key and tokens carry it as `x5c`.
    pub fn new(key: SigningKey, mode: KeyIdMode, chain: Vec<Vec<u8>>) -> Result<Self, TokenError> {
        let public = key.public_key();
        if let Some(leaf) = chain.first() {
            check_cert_matches_key(leaf, &public)?;
        }
        let kid = key_id(&public, mode);
        let x5c: Vec<String> = chain.iter().map(|c| BASE64.encode(c)).collect();
        let mut header = serde_json::Map::new();
        header.insert("typ".into(), "JWT".into());
        header.insert("alg".into(), key.alg().as_str().into());
        header.insert("kid".into(), kid.clone().into());
        if !x5c.is_empty() {
            header.insert("x5c".into(), x5c.clone().into());
        }
        let header_json = serde_json::to_vec(&Value::Object(header)).expect("header serializes");
        let header_prefix = format!("{}.", BASE64URL_NOPAD.encode(&header_json));
        let jwk = crate::jwk::jwk_of(&public, mode, &chain);
        let fast = FastKey::of(&key);
        Ok(JwsSigner {
            key,
            fast,
            public,
            kid,
            header_prefix,
            jwk,
            chain,
        })
    }

    /// Parses a key PEM and, optionally, a certificate chain PEM for it.
    pub fn from_pem(
        key_pem: &str,
        cert_pem: Option<&str>,
        mode: KeyIdMode,
    ) -> Result<Self, TokenError> {
        let key = load_signing_key(key_pem)?;
        let chain = match cert_pem {
            Some(c) => load_cert_chain(c)?,
            None => Vec::new(),
        };
        Self::new(key, mode, chain)
    }

    /// Reads the key file and, optionally, the certificate file; errors name the file at fault.
    pub fn from_files(
        key_path: &Path,
        cert_path: Option<&Path>,
        mode: KeyIdMode,
    ) -> Result<Self, TokenError> {
        let key = crate::key::load_signing_key_file(key_path)?;
        let chain = match cert_path {
            Some(p) => crate::cert::load_cert_chain_file(p)?,
            None => Vec::new(),
        };
        let file_of_cert = cert_path.map(Path::to_path_buf);
        Self::new(key, mode, chain).map_err(|e| match file_of_cert {
            Some(p) => e.in_file(p),
            None => e,
        })
    }

    pub fn algorithm(&self) -> Alg {
        self.key.alg()
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The certificate chain (DER, leaf first); empty when none was given.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Whether signatures are made by aws-lc (`true`) or by the RustCrypto types.
    #[doc(hidden)]
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    fn raw_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        if let Some(fast) = &self.fast {
            return fast.sign(msg);
        }
        self.raw_sign_portable(msg)
    }

    /// Signing with the RustCrypto types, for keys aws-lc refused.
    fn raw_sign_portable(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let crypto = |e: rsa::signature::Error| SignError::Crypto(e.to_string());
        Ok(match &self.key.inner {
            // Blinded with fresh randomness, so the time taken does not follow the private key.
            PrivateKey::Rsa(k) => k
                .try_sign_with_rng(&mut rand::rngs::OsRng, msg)
                .map_err(crypto)?
                .to_vec(),
            // ECDSA per RFC 6979 (deterministic nonces); JOSE wants the fixed-size r || s.
            PrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.try_sign(msg).map_err(crypto)?;
                sig.to_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.try_sign(msg).map_err(crypto)?;
                sig.to_bytes().to_vec()
            }
            PrivateKey::Ed25519(k) => k.try_sign(msg).map_err(crypto)?.to_bytes().to_vec(),
        })
    }

    fn raw_verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.public {
            PublicKey::Rsa(k) => {
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
            }
            PublicKey::P256(k) => {
                p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            PublicKey::P384(k) => {
                p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
        }
    }
}

/// A signing key in aws-lc's form. aws-lc signs on assembly arithmetic (AVX-512 for RSA where
/// the CPU has it) and is several times faster than the portable code (docs/performance.md has
/// the figures). Signatures are standard: RSASSA-PKCS1-v1_5 with SHA-256 (deterministic,
/// blinded), ECDSA with fixed-size `r || s` and a nonce from the system RNG, and Ed25519 (RFC 8032,
/// deterministic: the same bytes as the portable signer).
enum FastKey {
    Rsa(aws_lc_rs::rsa::KeyPair, aws_lc_rs::rand::SystemRandom),
    Ecdsa(
        aws_lc_rs::signature::EcdsaKeyPair,
        aws_lc_rs::rand::SystemRandom,
    ),
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
}

impl FastKey {
    /// The key in aws-lc's form, or `None` when aws-lc refuses it (an RSA modulus outside
    /// 2048-8192 bits, say): the portable signer then serves.
    fn of(key: &SigningKey) -> Option<FastKey> {
        use aws_lc_rs::signature::{
            EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
            ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use sec1::pkcs8::EncodePrivateKey;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // The DER documents below are zeroized when dropped.
        match &key.inner {
            PrivateKey::Rsa(k) => {
                let private: &rsa::RsaPrivateKey = k.as_ref().as_ref();
                let der = private.to_pkcs1_der().ok()?;
                aws_lc_rs::rsa::KeyPair::from_der(der.as_bytes())
                    .ok()
                    .map(|k| FastKey::Rsa(k, rng))
            }
            PrivateKey::P256(k) => {
                let der = p256::SecretKey::from(k).to_pkcs8_der().ok()?;
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_bytes())
                    .ok()
                    .map(|k| FastKey::Ecdsa(k, rng))
            }
            PrivateKey::P384(k) => {
                let der = p384::SecretKey::from(k).to_pkcs8_der().ok()?;
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der.as_bytes())
                    .ok()
                    .map(|k| FastKey::Ecdsa(k, rng))
            }
            PrivateKey::Ed25519(k) => {
                let seed = zeroize::Zeroizing::new(k.to_bytes());
                let public = k.verifying_key().to_bytes();
                Ed25519KeyPair::from_seed_and_public_key(seed.as_ref(), &public)
                    .ok()
                    .map(FastKey::Ed25519)
            }
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let failed = |_| SignError::Crypto("signing failed".into());
        match self {
            FastKey::Rsa(k, rng) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, rng, msg, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            FastKey::Ecdsa(k, rng) => Ok(k.sign(rng, msg).map_err(failed)?.as_ref().to_vec()),
            FastKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }
}

/// The header fields [`JwsSigner::verify`] looks at.
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Signer for JwsSigner {
    fn alg(&self) -> &'static str {
        self.key.alg().as_str()
    }

    fn key_id(&self) -> &str {
        &self.kid
    }

    fn sign_payload(&self, payload_json: &[u8]) -> Result<String, SignError> {
        let payload_len = BASE64URL_NOPAD.encode_len(payload_json.len());
        let mut token = String::with_capacity(self.header_prefix.len() + payload_len + 1 + 700);
        token.push_str(&self.header_prefix);
        BASE64URL_NOPAD.encode_append(payload_json, &mut token);
        let sig = self.raw_sign(token.as_bytes())?;
        token.push('.');
        BASE64URL_NOPAD.encode_append(&sig, &mut token);
        Ok(token)
    }

    fn verify(&self, token: &str) -> Result<Vec<u8>, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header_json = BASE64URL_NOPAD
            .decode(h.as_bytes())
            .map_err(|_| VerifyError::Malformed)?;
        let header: Header =
            serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed)?;
        if header.alg != self.alg() || header.kid.as_deref().is_some_and(|k| k != self.kid) {
            return Err(VerifyError::WrongKey);
        }
        let sig = BASE64URL_NOPAD
            .decode(s.as_bytes())
            .map_err(|_| VerifyError::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        if !self.raw_verify(signed.as_bytes(), &sig) {
            return Err(VerifyError::BadSignature);
        }
        BASE64URL_NOPAD
            .decode(p.as_bytes())
            .map_err(|_| VerifyError::Malformed)
    }

    fn public_jwk(&self) -> Value {
        self.jwk.clone()
    }
}

/// A random token id: 128 unpredictable bits, base64url without padding.
pub fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    // The thread's CSPRNG (ChaCha, seeded and periodically reseeded from the operating system):
    // as unpredictable as asking the kernel, without a system call per token.
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    BASE64URL_NOPAD.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate_key;

    fn signer(alg: Alg) -> JwsSigner {
        JwsSigner::new(generate_key(alg).unwrap(), KeyIdMode::Libtrust, vec![]).unwrap()
    }

    fn header_of(token: &str) -> Value {
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(&BASE64URL_NOPAD.decode(h.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn signs_and_verifies_with_each_alg() {
        for alg in [Alg::Es256, Alg::Es384, Alg::EdDsa] {
            let s = signer(alg);
            let t = s.sign_payload(br#"{"a":1}"#).unwrap();
            assert_eq!(s.verify(&t).unwrap(), br#"{"a":1}"#);
            let h = header_of(&t);
            assert_eq!(h["alg"], alg.as_str());
            assert_eq!(h["typ"], "JWT");
            assert_eq!(h["kid"], s.key_id());
            assert!(h.get("x5c").is_none());
        }
    }

    #[test]
    fn ecdsa_signatures_are_raw_fixed_size() {
        for (alg, len) in [(Alg::Es256, 64), (Alg::Es384, 96), (Alg::EdDsa, 64)] {
            let s = signer(alg);
            for _ in 0..8 {
                let t = s.sign_payload(b"{}").unwrap();
                let sig = t.rsplit('.').next().unwrap();
                assert_eq!(
                    BASE64URL_NOPAD.decode(sig.as_bytes()).unwrap().len(),
                    len,
                    "{alg}"
                );
            }
        }
    }

    #[test]
    fn verify_refuses_tampering_other_keys_and_junk() {
        let s = signer(Alg::Es256);
        let other = signer(Alg::Es256);
        let t = s.sign_payload(br#"{"sub":"alice"}"#).unwrap();

        // Another key of the same alg: its kid differs.
        assert_eq!(other.verify(&t), Err(VerifyError::WrongKey));

        // Payload swapped, signature kept.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            BASE64URL_NOPAD.encode(br#"{"sub":"admin"}"#),
            parts[2]
        );
        assert_eq!(s.verify(&forged), Err(VerifyError::BadSignature));

        // A header claiming another algorithm.
        let none_header = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let alg_none = format!("{none_header}.{}.", parts[1]);
        assert_eq!(s.verify(&alg_none), Err(VerifyError::WrongKey));
        let hs = BASE64URL_NOPAD.encode(br#"{"alg":"HS256"}"#);
        assert_eq!(
            s.verify(&format!("{hs}.{}.{}", parts[1], parts[2])),
            Err(VerifyError::WrongKey)
        );

        // Signature of a different length, and no kid at all but right alg.
        let nokid = BASE64URL_NOPAD.encode(br#"{"alg":"ES256"}"#);
        assert_eq!(
            s.verify(&format!("{nokid}.{}.{}", parts[1], parts[2])),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            s.verify(&format!("{}.{}.AAAA", parts[0], parts[1])),
            Err(VerifyError::BadSignature)
        );

        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.e30.AAAA",
            &format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
            &"A".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(s.verify(junk), Err(VerifyError::Malformed), "{junk:.40}");
        }
        assert_eq!(s.verify(&t).unwrap(), br#"{"sub":"alice"}"#);
    }

    #[test]
    fn rs256_signs_and_verifies() {
        let s = signer(Alg::Rs256);
        let t = s.sign_payload(b"{}").unwrap();
        assert_eq!(s.verify(&t).unwrap(), b"{}");
        let sig = t.rsplit('.').next().unwrap();
        assert_eq!(BASE64URL_NOPAD.decode(sig.as_bytes()).unwrap().len(), 256);
        let mut bad = t.clone();
        bad.replace_range(t.len() - 4.., "AAAA");
        assert_eq!(s.verify(&bad), Err(VerifyError::BadSignature));
    }

    #[test]
    fn aws_lc_signs_every_algorithm_and_agrees_with_the_portable_signer() {
        for alg in [Alg::Rs256, Alg::Es256, Alg::Es384, Alg::EdDsa] {
            let s = signer(alg);
            assert!(s.uses_fast_path(), "{alg}");
            let signing_input = format!("{}e30", s.header_prefix);
            let fast = s.raw_sign(signing_input.as_bytes()).unwrap();
            let portable = s.raw_sign_portable(signing_input.as_bytes()).unwrap();
            assert_eq!(fast.len(), portable.len(), "{alg}");
            // Each verifies under the public key, through the portable verifier.
            for sig in [&fast, &portable] {
                let token = format!("{signing_input}.{}", BASE64URL_NOPAD.encode(sig));
                assert_eq!(s.verify(&token).unwrap(), b"{}", "{alg}");
            }
            if matches!(alg, Alg::Rs256 | Alg::EdDsa) {
                // PKCS#1 v1.5 and Ed25519 are deterministic: both implementations give the same
                // bytes.
                assert_eq!(fast, portable, "{alg}");
            }
        }
    }

    #[test]
    fn aws_lc_signs_keys_loaded_from_every_pem_form() {
        // SEC1 and PKCS#8 EC keys, PKCS#1 RSA keys: all end on the fast path.
        let ec = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let sec1 = {
            use p256::elliptic_curve::sec1::ToEncodedPoint as _;
            use sec1::der::Encode as _;
            let scalar = ec.to_bytes();
            let point = ec.public_key().to_encoded_point(false);
            // As `openssl ecparam -genkey` writes it: named curve and public key included.
            let der = sec1::EcPrivateKey {
                private_key: &scalar,
                parameters: Some(sec1::EcParameters::NamedCurve(
                    "1.2.840.10045.3.1.7".parse().unwrap(),
                )),
                public_key: Some(point.as_bytes()),
            }
            .to_der()
            .unwrap();
            pem::encode(&pem::Pem::new("EC PRIVATE KEY", der))
        };
        let s = JwsSigner::from_pem(&sec1, None, KeyIdMode::Libtrust).unwrap();
        assert!(s.uses_fast_path());
        let t = s.sign_payload(b"{}").unwrap();
        assert_eq!(s.verify(&t).unwrap(), b"{}");

        let rsa = crate::generate::generate_key(Alg::Rs256).unwrap();
        let PrivateKey::Rsa(k) = &rsa.inner else {
            unreachable!()
        };
        let private: &rsa::RsaPrivateKey = k.as_ref().as_ref();
        let pkcs1 = {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            private.to_pkcs1_pem(Default::default()).unwrap()
        };
        let s = JwsSigner::from_pem(&pkcs1, None, KeyIdMode::Libtrust).unwrap();
        assert!(s.uses_fast_path());
        let t = s.sign_payload(b"{}").unwrap();
        assert_eq!(s.verify(&t).unwrap(), b"{}");
    }

    #[test]
    fn jti_is_128_random_bits() {
        let a = new_jti();
        assert_eq!(BASE64URL_NOPAD.decode(a.as_bytes()).unwrap().len(), 16);
        assert_ne!(a, new_jti());
    }

    #[test]
    fn signer_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JwsSigner>();
        let s: std::sync::Arc<dyn Signer> = std::sync::Arc::new(signer(Alg::EdDsa));
        assert_eq!(s.alg(), "EdDSA");
    }
}
