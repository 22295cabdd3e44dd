//! Key ids: the libtrust id registry 2.x looks keys up by, and JWK thumbprints (RFC 7638 and the
//! variant registry 3.x computes).

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use sha2::{Digest, Sha256};

use crate::key::{KeyParams, PublicKey, SigningKey};

/// Which key id goes into the token's `kid` header and the JWKS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyIdMode {
    /// The libtrust id (registry 2.x).
    #[default]
    Libtrust,
    /// The JWK thumbprint as registry 3.x computes it ([`distribution_thumbprint`]).
    Thumbprint,
}

/// Both ids of a key, for `purser keygen` and `purser doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIds {
    /// For registry 2.x.
    pub libtrust: String,
    /// For registry 3.x (EC coordinates hashed without left padding).
    pub thumbprint: String,
}

impl KeyIds {
    pub fn of(key: &PublicKey) -> Self {
        KeyIds {
            libtrust: libtrust_key_id(key),
            thumbprint: distribution_thumbprint(key),
        }
    }

    pub fn of_signing_key(key: &SigningKey) -> Self {
        Self::of(&key.public_key())
    }

    /// The id of the given mode.
    pub fn get(&self, mode: KeyIdMode) -> &str {
        match mode {
            KeyIdMode::Libtrust => &self.libtrust,
            KeyIdMode::Thumbprint => &self.thumbprint,
        }
    }
}

/// The key id of the given mode.
pub fn key_id(key: &PublicKey, mode: KeyIdMode) -> String {
    match mode {
        KeyIdMode::Libtrust => libtrust_key_id(key),
        KeyIdMode::Thumbprint => distribution_thumbprint(key),
    }
}

/// The libtrust id of a DER `SubjectPublicKeyInfo`: the first 240 bits of its SHA-256 in base32
/// without padding, as 12 groups of 4 characters joined by `:`.
pub fn libtrust_key_id_of_spki(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = BASE32_NOPAD.encode(&digest[..30]);
    let groups: Vec<&str> = (0..b32.len()).step_by(4).map(|i| &b32[i..i + 4]).collect();
    groups.join(":")
}

/// The libtrust id of a public key (of its canonical DER encoding).
pub fn libtrust_key_id(key: &PublicKey) -> String {
    libtrust_key_id_of_spki(&key.to_spki_der())
}

/// The RFC 7638 JWK thumbprint (SHA-256, base64url without padding); EC coordinates are the
/// full curve length, as RFC 7518 requires.
pub fn rfc7638_thumbprint(key: &PublicKey) -> String {
    thumbprint(key, false)
}

/// The JWK thumbprint the distribution registry 3.x computes: RFC 7638's, except that EC
/// coordinates are hashed without their leading zero bytes. It differs from
/// [`rfc7638_thumbprint`] only for EC keys with a coordinate starting with a zero byte, and for
/// those a 3.x registry accepts only this one.
pub fn distribution_thumbprint(key: &PublicKey) -> String {
    thumbprint(key, true)
}

fn b64(bytes: &[u8]) -> String {
    BASE64URL_NOPAD.encode(bytes)
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

fn thumbprint(key: &PublicKey, unpadded_ec: bool) -> String {
    // The members are required ones only, in lexicographic order, no whitespace (RFC 7638 §3).
    // The base64url alphabet and curve names need no JSON escaping.
    let canonical = match key.params() {
        KeyParams::Rsa { n, e } => {
            format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(&e), b64(&n))
        }
        KeyParams::Ec { crv, x, y } => {
            let (x, y) = if unpadded_ec {
                (strip_leading_zeros(&x), strip_leading_zeros(&y))
            } else {
                (&x[..], &y[..])
            };
            format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            )
        }
        KeyParams::Okp { crv, x } => {
            format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#, b64(&x))
        }
    };
    b64(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtrust_id_has_twelve_groups_of_four() {
        let id = libtrust_key_id_of_spki(b"anything");
        let groups: Vec<&str> = id.split(':').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 4
            && g.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }

    #[test]
    fn strips_only_leading_zeros() {
        assert_eq!(strip_leading_zeros(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(strip_leading_zeros(&[5]), &[5]);
    }

    #[test]
    fn rfc7638_example_key() {
        // The RSA key of RFC 7638 §3.1 and its published thumbprint.
        let n = BASE64URL_NOPAD
            .decode(
                b"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6\
tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2\
QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f\
M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            )
            .unwrap();
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from(65537u32),
        )
        .unwrap();
        let key = PublicKey::Rsa(key);
        assert_eq!(
            rfc7638_thumbprint(&key),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(distribution_thumbprint(&key), rfc7638_thumbprint(&key));
    }
}
