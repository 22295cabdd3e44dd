use serde::{Deserialize, Serialize};

use crate::Access;

/// The claims of an access token, as registry 2.x and 3.x read them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account; `""` when anonymous.
    pub sub: String,
    /// The requested service, always a JSON string (registry 2.8 refuses an array).
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<Access>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing failed: {0}")]
    Crypto(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token was signed with another key or algorithm")]
    WrongKey,
    #[error("token signature does not verify")]
    BadSignature,
}

/// Signs tokens with one key, parsed once when the signer is built (never per token).
pub trait Signer: Send + Sync {
    /// The JWS `alg`: `RS256`, `ES256`, `ES384` or `EdDSA`.
    fn alg(&self) -> &'static str;
    /// The `kid` header value, in the configured key-id mode.
    fn key_id(&self) -> &str;
    /// Signs a JSON payload into a compact JWS (header carries `typ`, `alg`, `kid`, and `x5c`
    /// when a certificate chain is known).
    fn sign_payload(&self, payload_json: &[u8]) -> Result<String, SignError>;
    /// Checks a compact JWS made by this signer's key and returns its payload bytes.
    fn verify(&self, token: &str) -> Result<Vec<u8>, VerifyError>;
    /// The public key as a JWK (`kty`, `kid`, `alg`, `use`, coordinates, `x5c` when known).
    fn public_jwk(&self) -> serde_json::Value;

    /// Signs access-token claims.
    fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        // Claims of a few scopes fit: one allocation, no regrowth.
        let mut payload = Vec::with_capacity(512);
        serde_json::to_writer(&mut payload, claims)
            .map_err(|e| SignError::Crypto(e.to_string()))?;
        self.sign_payload(&payload)
    }
}
