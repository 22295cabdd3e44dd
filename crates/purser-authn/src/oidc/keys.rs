//! An issuer's published keys: the JWKS document read into verification keys, keeping only
//! signature keys of the families the issuer's algorithms need (never a symmetric key).

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Most keys read from one JWKS document; the rest are ignored.
pub const MAX_KEYS: usize = 64;

/// The key families purser verifies with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Rsa,
    Ec,
    Ed,
}

/// The family an algorithm verifies with; `None` for HMAC, which an issuer's public keys can
/// never be used for (a token "signed" with the public key as an HMAC secret is a forgery).
pub(crate) fn family(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Ed),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
    }
}

/// One verification key.
pub(crate) struct Key {
    pub kid: Option<String>,
    pub family: Family,
    /// The JWK's `alg`, when it names one: the key is then used for that algorithm only.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        family(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Reads a JWKS document. Keys that are not signature keys, symmetric, malformed or of an
/// unknown type are skipped; a document with no usable key at all is an error.
pub(crate) fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JWKS is not a JSON object with a keys list: {e}"))?;
    let mut out = Vec::new();
    for raw in doc.keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let fam = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(_) => continue,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => match ka.to_string().parse::<Algorithm>() {
                Ok(a) if family(a) == Some(fam) => Some(a),
                // An encryption algorithm (RSA-OAEP) or a mismatch: not a signing key here.
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            family: fam,
            alg,
            key,
        });
    }
    if out.is_empty() {
        return Err("the JWKS holds no usable signature key".into());
    }
    Ok(out)
}
