//! Fresh signing keys with a self-signed certificate (`purser keygen`, `token.generate_key`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::signature::{Keypair, Signer};
use sha2::Sha256;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, SignatureBitStringEncoding,
    SubjectPublicKeyInfoOwned,
};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::BitString;
use x509_cert::der::EncodePem;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use zeroize::Zeroizing;

use crate::error::TokenError;
use crate::key::{Alg, PrivateKey, SigningKey};
use crate::kid::KeyIds;

/// The subject (and issuer) of generated certificates.
pub const CERT_SUBJECT: &str = "CN=purser token signer";
/// How long a generated certificate is valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);
/// File names [`write_generated`] uses.
pub const KEY_FILE_NAME: &str = "signing.pem";
pub const CERT_FILE_NAME: &str = "signing.crt";

/// A fresh key and its certificate. `Debug` leaves the private key out.
pub struct GeneratedKey {
    pub alg: Alg,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// The self-signed certificate, PEM: the registry's `rootcertbundle`.
    pub cert_pem: String,
    pub key_ids: KeyIds,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("alg", &self.alg)
            .field("key_ids", &self.key_ids)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Where [`write_generated`] put the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub alg: Alg,
    pub key_ids: KeyIds,
}

fn gen_err(e: impl std::fmt::Display) -> TokenError {
    TokenError::Generate(e.to_string())
}

/// A fresh private key of the algorithm (RSA keys have 2048 bits).
pub fn generate_key(alg: Alg) -> Result<SigningKey, TokenError> {
    let inner = match alg {
        Alg::Rs256 => {
            let mut k = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(gen_err)?;
            k.precompute().map_err(gen_err)?;
            PrivateKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(k)))
        }
        Alg::Es256 => PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
        Alg::Es384 => PrivateKey::P384(p384::ecdsa::SigningKey::random(&mut OsRng)),
        Alg::EdDsa => PrivateKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
    };
    Ok(SigningKey { inner })
}

impl SigningKey {
    /// The private key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, TokenError> {
        match &self.inner {
            PrivateKey::Rsa(k) => {
                let sk: &rsa::pkcs1v15::SigningKey<Sha256> = k;
                let private: &rsa::RsaPrivateKey = sk.as_ref();
                private.to_pkcs8_pem(LineEnding::LF)
            }
            PrivateKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
            // Version 1 (no public key inside): OpenSSL 3.0 cannot read Ed25519 keys of
            // version 2, which is what the key type writes by itself.
            PrivateKey::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(gen_err)
    }
}

/// A fresh key of the algorithm and a self-signed X.509 v3 certificate for it: subject and
/// issuer `CN=purser token signer`, valid ten years from now, a random 128-bit serial, basic
/// constraints CA:false, key usage digitalSignature (and nonRepudiation).
pub fn generate(alg: Alg) -> Result<GeneratedKey, TokenError> {
    let key = generate_key(alg)?;
    let cert_pem = self_signed_cert(&key)?;
    Ok(GeneratedKey {
        alg,
        key_pem: key.to_pkcs8_pem()?,
        cert_pem,
        key_ids: KeyIds::of_signing_key(&key),
    })
}

/// A self-signed certificate (PEM) for the key, as [`generate`] makes it.
pub fn self_signed_cert(key: &SigningKey) -> Result<String, TokenError> {
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    // Positive and of full length: the top bit clear, the top byte not zero.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let serial = SerialNumber::new(&serial).map_err(gen_err)?;
    let validity = Validity::from_now(CERT_VALIDITY).map_err(gen_err)?;
    let subject = Name::from_str(CERT_SUBJECT).map_err(gen_err)?;
    let spki = SubjectPublicKeyInfoOwned::try_from(key.public_key().to_spki_der().as_slice())
        .map_err(gen_err)?;
    let profile = Profile::Leaf {
        issuer: subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let cert = match &key.inner {
        PrivateKey::Rsa(k) => {
            let signer: &rsa::pkcs1v15::SigningKey<Sha256> = k;
            CertificateBuilder::new(profile, serial, validity, subject, spki, signer)
                .map_err(gen_err)?
                .build::<rsa::pkcs1v15::Signature>()
        }
        PrivateKey::P256(k) => CertificateBuilder::new(profile, serial, validity, subject, spki, k)
            .map_err(gen_err)?
            .build::<p256::ecdsa::DerSignature>(),
        PrivateKey::P384(k) => CertificateBuilder::new(profile, serial, validity, subject, spki, k)
            .map_err(gen_err)?
            .build::<p384::ecdsa::DerSignature>(),
        PrivateKey::Ed25519(k) => {
            let signer = Ed25519CertSigner(k);
            CertificateBuilder::new(profile, serial, validity, subject, spki, &signer)
                .map_err(gen_err)?
                .build::<Ed25519CertSignature>()
        }
    }
    .map_err(gen_err)?;
    cert.to_pem(LineEnding::LF).map_err(gen_err)
}

/// Ed25519 signatures lack the bit-string encoding the certificate builder asks for; this
/// adapter supplies it (the signature's 64 bytes, as RFC 8410 §6 says).
struct Ed25519CertSigner<'a>(&'a ed25519_dalek::SigningKey);

struct Ed25519CertSignature([u8; 64]);

impl SignatureBitStringEncoding for Ed25519CertSignature {
    fn to_bitstring(&self) -> x509_cert::der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl Keypair for Ed25519CertSigner<'_> {
    type VerifyingKey = ed25519_dalek::VerifyingKey;
    fn verifying_key(&self) -> Self::VerifyingKey {
        self.0.verifying_key()
    }
}

impl DynSignatureAlgorithmIdentifier for Ed25519CertSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        self.0.signature_algorithm_identifier()
    }
}

impl Signer<Ed25519CertSignature> for Ed25519CertSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<Ed25519CertSignature, rsa::signature::Error> {
        Ok(Ed25519CertSignature(self.0.try_sign(msg)?.to_bytes()))
    }
}

/// Generates a key and certificate and writes them to `dir/signing.pem` (mode 0600) and
/// `dir/signing.crt`, creating `dir` if needed. Existing files are never overwritten.
pub fn write_generated(dir: &Path, alg: Alg) -> Result<GeneratedFiles, TokenError> {
    std::fs::create_dir_all(dir).map_err(|source| TokenError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_generated_to(&dir.join(KEY_FILE_NAME), &dir.join(CERT_FILE_NAME), alg)
}

/// Like [`write_generated`], to the given paths (their folders must exist).
pub fn write_generated_to(
    key_path: &Path,
    cert_path: &Path,
    alg: Alg,
) -> Result<GeneratedFiles, TokenError> {
    for p in [key_path, cert_path] {
        if p.exists() {
            return Err(TokenError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    let generated = generate(alg)?;
    write_new(key_path, generated.key_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(cert_path, generated.cert_pem.as_bytes(), 0o644) {
        // A key without its certificate would make the next start generate nothing and fail.
        let _ = std::fs::remove_file(key_path);
        return Err(e);
    }
    Ok(GeneratedFiles {
        key: key_path.to_path_buf(),
        cert: cert_path.to_path_buf(),
        alg,
        key_ids: generated.key_ids,
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TokenError> {
    let err = |source| TokenError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the key is never readable by others, not even for an instant.
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TokenError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            err(e)
        }
    })?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::load_signing_key;

    #[test]
    fn generated_pem_loads_back_as_the_same_key() {
        for alg in [Alg::Es256, Alg::Es384, Alg::EdDsa] {
            let g = generate(alg).unwrap();
            assert!(g.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let back = load_signing_key(&g.key_pem).unwrap();
            assert_eq!(back.alg(), alg);
            assert_eq!(KeyIds::of_signing_key(&back), g.key_ids);
            let chain = crate::cert::load_cert_chain(&g.cert_pem).unwrap();
            crate::cert::check_cert_matches_key(&chain[0], &back.public_key()).unwrap();
            assert!(!format!("{g:?}").contains("PRIVATE KEY"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn write_generated_makes_a_private_key_file_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let files = write_generated(&out, Alg::Es256).unwrap();
        assert_eq!(files.key, out.join("signing.pem"));
        assert_eq!(files.cert, out.join("signing.crt"));
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = load_signing_key(&std::fs::read_to_string(&files.key).unwrap()).unwrap();
        assert_eq!(KeyIds::of_signing_key(&key), files.key_ids);

        let before = std::fs::read(&files.key).unwrap();
        let err = write_generated(&out, Alg::Es256).unwrap_err();
        assert!(matches!(err, TokenError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("signing.pem"));
        assert_eq!(std::fs::read(&files.key).unwrap(), before);
    }
}
