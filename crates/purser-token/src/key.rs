//! Parsing signing keys and public keys, once, into the types that sign and verify.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use sec1::der::Decode;
use sha2::Sha256;
use spki::ObjectIdentifier;

use crate::error::{invalid, TokenError};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A JWS algorithm purser signs with. The key decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    /// Every algorithm, in the order documentation lists them.
    pub const ALL: [Alg; 4] = [Alg::Rs256, Alg::Es256, Alg::Es384, Alg::EdDsa];

    /// The JWS `alg` value: `RS256`, `ES256`, `ES384`, `EdDSA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an algorithm name.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown algorithm {0:?}: expected rs256, es256, es384 or eddsa")]
pub struct UnknownAlg(String);

impl FromStr for Alg {
    type Err = UnknownAlg;

    /// Accepts the JWS names in any case (`RS256`, `rs256`, `EdDSA`, `eddsa`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAlg(s.chars().take(32).collect()))
    }
}

/// A parsed private key, ready to sign. Its `Debug` output shows the algorithm only.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) inner: PrivateKey,
}

#[derive(Clone)]
pub(crate) enum PrivateKey {
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        match &self.inner {
            PrivateKey::Rsa(_) => Alg::Rs256,
            PrivateKey::P256(_) => Alg::Es256,
            PrivateKey::P384(_) => Alg::Es384,
            PrivateKey::Ed25519(_) => Alg::EdDsa,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            PrivateKey::Rsa(k) => {
                let sk: &rsa::pkcs1v15::SigningKey<Sha256> = k;
                let private: &rsa::RsaPrivateKey = sk.as_ref();
                PublicKey::Rsa(private.to_public_key())
            }
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::P384(k) => PublicKey::P384(*k.verifying_key()),
            PrivateKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    fn from_rsa(key: rsa::RsaPrivateKey) -> Result<Self, TokenError> {
        let mut key = key;
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(TokenError::UnsupportedKey {
                what: format!("RSA key of {bits} bits (at least {MIN_RSA_BITS} are needed)"),
            });
        }
        key.validate().map_err(|e| invalid("RSA private key", e))?;
        // The CRT values make each signature several times faster; compute them once here.
        key.precompute()
            .map_err(|e| invalid("RSA private key", e))?;
        Ok(SigningKey {
            inner: PrivateKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(key))),
        })
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, TokenError> {
        let info = p256::pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| invalid("PKCS#8 private key", e))?;
        let oid = info.algorithm.oid;
        if oid == OID_RSA {
            let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|e| invalid("RSA private key", e))?;
            Self::from_rsa(key)
        } else if oid == OID_EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| invalid("EC private key", e))?;
            match curve {
                c if c == OID_P256 => {
                    let k = p256::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| invalid("P-256 private key", e))?;
                    Ok(SigningKey {
                        inner: PrivateKey::P256(k.into()),
                    })
                }
                c if c == OID_P384 => {
                    let k = p384::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| invalid("P-384 private key", e))?;
                    Ok(SigningKey {
                        inner: PrivateKey::P384(k.into()),
                    })
                }
                other => Err(unsupported_curve(other)),
            }
        } else if oid == OID_ED25519 {
            let k = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map_err(|e| invalid("Ed25519 private key", e))?;
            Ok(SigningKey {
                inner: PrivateKey::Ed25519(k),
            })
        } else {
            Err(unsupported_oid(oid))
        }
    }

    fn from_sec1(der: &[u8]) -> Result<Self, TokenError> {
        let parsed =
            sec1::EcPrivateKey::from_der(der).map_err(|e| invalid("SEC1 EC private key", e))?;
        let curve = parsed
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or_else(|| TokenError::UnsupportedKey {
                what: "EC private key without a named curve".into(),
            })?;
        match curve {
            c if c == OID_P256 => {
                let k = p256::SecretKey::from_sec1_der(der)
                    .map_err(|e| invalid("P-256 private key", e))?;
                Ok(SigningKey {
                    inner: PrivateKey::P256(k.into()),
                })
            }
            c if c == OID_P384 => {
                let k = p384::SecretKey::from_sec1_der(der)
                    .map_err(|e| invalid("P-384 private key", e))?;
                Ok(SigningKey {
                    inner: PrivateKey::P384(k.into()),
                })
            }
            other => Err(unsupported_curve(other)),
        }
    }
}

fn unsupported_curve(oid: ObjectIdentifier) -> TokenError {
    let name = match oid {
        o if o == OID_P521 => "P-521 (ES512)".to_string(),
        o if o == OID_SECP256K1 => "secp256k1".to_string(),
        o => format!("OID {o}"),
    };
    TokenError::UnsupportedKey {
        what: format!("EC key on curve {name}"),
    }
}

fn unsupported_oid(oid: ObjectIdentifier) -> TokenError {
    let what = match oid {
        o if o == OID_DSA => "DSA key".to_string(),
        o if o == OID_RSA_PSS => "RSA-PSS key (use a plain rsaEncryption key)".to_string(),
        o if o == OID_ED448 => "Ed448 key".to_string(),
        o => format!("key of algorithm OID {o}"),
    };
    TokenError::UnsupportedKey { what }
}

/// Whether a PEM block (of the old OpenSSL form) says it is encrypted.
fn is_encrypted(block: &pem::Pem) -> bool {
    block
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.contains("ENCRYPTED"))
}

fn parse_pem(pem_text: &str) -> Result<Vec<pem::Pem>, TokenError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| TokenError::Pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(TokenError::Pem(
            "no \"-----BEGIN ...-----\" block found".into(),
        ));
    }
    Ok(blocks)
}

pub(crate) fn pem_blocks(pem_text: &str) -> Result<Vec<pem::Pem>, TokenError> {
    parse_pem(pem_text)
}

fn tags(blocks: &[pem::Pem]) -> String {
    blocks
        .iter()
        .map(|b| format!("{:?}", b.tag()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a private signing key from PEM text. The first private-key block is used; `EC
/// PARAMETERS` blocks before it (as `openssl ecparam -genkey` writes them) are skipped.
///
/// Accepts RSA (`RSA PRIVATE KEY` or `PRIVATE KEY`), P-256 and P-384 (`EC PRIVATE KEY` or
/// `PRIVATE KEY`) and Ed25519 (`PRIVATE KEY`). The algorithm follows the key.
pub fn load_signing_key(pem_text: &str) -> Result<SigningKey, TokenError> {
    let blocks = parse_pem(pem_text)?;
    for block in &blocks {
        match block.tag() {
            "RSA PRIVATE KEY" => {
                if is_encrypted(block) {
                    return Err(TokenError::EncryptedKey);
                }
                let key = rsa::RsaPrivateKey::from_pkcs1_der(block.contents())
                    .map_err(|e| invalid("RSA private key", e))?;
                return SigningKey::from_rsa(key);
            }
            "EC PRIVATE KEY" => {
                if is_encrypted(block) {
                    return Err(TokenError::EncryptedKey);
                }
                return SigningKey::from_sec1(block.contents());
            }
            "PRIVATE KEY" => return SigningKey::from_pkcs8(block.contents()),
            "ENCRYPTED PRIVATE KEY" => return Err(TokenError::EncryptedKey),
            "DSA PRIVATE KEY" => {
                return Err(TokenError::UnsupportedKey {
                    what: "DSA key".into(),
                })
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(TokenError::UnsupportedKey {
                    what: "OpenSSH key format (convert it with `ssh-keygen -p -m PKCS8 -f KEY`)"
                        .into(),
                })
            }
            _ => {}
        }
    }
    Err(TokenError::NoPrivateKey {
        found: tags(&blocks),
    })
}

/// Reads and parses a signing key file; errors name the file.
pub fn load_signing_key_file(path: &Path) -> Result<SigningKey, TokenError> {
    let text = purser_fs::read_text(path, crate::MAX_PEM_FILE_BYTES)?;
    load_signing_key(&text).map_err(|e| e.in_file(path))
}

/// A public key of one of the supported algorithms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// The algorithm a signature by this key uses.
    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::Rsa(_) => Alg::Rs256,
            PublicKey::P256(_) => Alg::Es256,
            PublicKey::P384(_) => Alg::Es384,
            PublicKey::Ed25519(_) => Alg::EdDsa,
        }
    }

    /// Parses a DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, TokenError> {
        let info =
            spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| invalid("public key", e))?;
        let oid = info.algorithm.oid;
        if oid == OID_RSA {
            let k = rsa::RsaPublicKey::from_public_key_der(der)
                .map_err(|e| invalid("RSA public key", e))?;
            Ok(PublicKey::Rsa(k))
        } else if oid == OID_EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| invalid("EC public key", e))?;
            match curve {
                c if c == OID_P256 => Ok(PublicKey::P256(
                    p256::ecdsa::VerifyingKey::from_public_key_der(der)
                        .map_err(|e| invalid("P-256 public key", e))?,
                )),
                c if c == OID_P384 => Ok(PublicKey::P384(
                    p384::ecdsa::VerifyingKey::from_public_key_der(der)
                        .map_err(|e| invalid("P-384 public key", e))?,
                )),
                other => Err(unsupported_curve(other)),
            }
        } else if oid == OID_ED25519 {
            Ok(PublicKey::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der)
                    .map_err(|e| invalid("Ed25519 public key", e))?,
            ))
        } else {
            Err(unsupported_oid(oid))
        }
    }

    /// Parses a `PUBLIC KEY` (or PKCS#1 `RSA PUBLIC KEY`) PEM block's contents.
    pub(crate) fn from_pem_block(block: &pem::Pem) -> Result<Option<Self>, TokenError> {
        match block.tag() {
            "PUBLIC KEY" => Self::from_spki_der(block.contents()).map(Some),
            "RSA PUBLIC KEY" => rsa::RsaPublicKey::from_pkcs1_der(block.contents())
                .map(|k| Some(PublicKey::Rsa(k)))
                .map_err(|e| invalid("RSA public key", e)),
            _ => Ok(None),
        }
    }

    /// The DER `SubjectPublicKeyInfo`, in the canonical encoding (uncompressed EC points).
    pub fn to_spki_der(&self) -> Vec<u8> {
        let doc = match self {
            PublicKey::Rsa(k) => k.to_public_key_der(),
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
            PublicKey::Ed25519(k) => k.to_public_key_der(),
        };
        // Encoding a key that was already parsed and validated cannot fail.
        doc.expect("a parsed public key encodes as DER").into_vec()
    }

    /// The key's parameters as big-endian bytes, minimal (RSA) or full curve length (EC).
    pub(crate) fn params(&self) -> KeyParams {
        match self {
            PublicKey::Rsa(k) => KeyParams::Rsa {
                n: k.n().to_bytes_be(),
                e: k.e().to_bytes_be(),
            },
            PublicKey::P256(k) => {
                let p = k.to_encoded_point(false);
                KeyParams::Ec {
                    crv: "P-256",
                    x: p.x().expect("uncompressed point").to_vec(),
                    y: p.y().expect("uncompressed point").to_vec(),
                }
            }
            PublicKey::P384(k) => {
                let p = k.to_encoded_point(false);
                KeyParams::Ec {
                    crv: "P-384",
                    x: p.x().expect("uncompressed point").to_vec(),
                    y: p.y().expect("uncompressed point").to_vec(),
                }
            }
            PublicKey::Ed25519(k) => KeyParams::Okp {
                crv: "Ed25519",
                x: k.to_bytes().to_vec(),
            },
        }
    }
}

pub(crate) enum KeyParams {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        crv: &'static str,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Okp {
        crv: &'static str,
        x: Vec<u8>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names_round_trip_in_any_case() {
        for a in Alg::ALL {
            assert_eq!(a.as_str().parse::<Alg>().unwrap(), a);
            assert_eq!(a.as_str().to_lowercase().parse::<Alg>().unwrap(), a);
        }
        let err = "ps256".parse::<Alg>().unwrap_err().to_string();
        assert!(err.contains("rs256, es256, es384 or eddsa"), "{err}");
    }

    #[test]
    fn not_pem_is_refused() {
        let err = load_signing_key("hello").unwrap_err();
        assert!(matches!(err, TokenError::Pem(_)), "{err}");
    }

    #[test]
    fn a_public_key_alone_is_no_signing_key() {
        let key = crate::generate::generate_key(Alg::EdDsa).unwrap();
        let pubpem = pem::encode(&pem::Pem::new("PUBLIC KEY", key.public_key().to_spki_der()));
        let err = load_signing_key(&pubpem).unwrap_err().to_string();
        assert!(err.contains("no private key"), "{err}");
        assert!(err.contains("\"PUBLIC KEY\""), "{err}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = crate::generate::generate_key(Alg::Es256).unwrap();
        assert_eq!(
            format!("{key:?}"),
            "SigningKey { alg: Es256, .. }".to_string()
        );
    }
}
