//! JSON Web Tokens: decoding without checks, and verifying against a certificate.

use std::path::Path;

use data_encoding::BASE64URL_NOPAD;
use serde_json::Value;

use crate::openssl::openssl_stdout;

/// A JWT split and decoded, signature unchecked.
#[derive(Debug)]
pub struct Jwt {
    /// The JOSE header.
    pub header: Value,
    /// The claims.
    pub claims: Value,
    /// The token as given.
    pub raw: String,
}

impl Jwt {
    /// Splits and decodes `token`; panics unless it is three base64url parts, the first two
    /// JSON.
    pub fn decode(token: &str) -> Jwt {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has three parts");
        let part = |s: &str| -> Value {
            let bytes = BASE64URL_NOPAD
                .decode(s.as_bytes())
                .expect("base64url part");
            serde_json::from_slice(&bytes).expect("JSON part")
        };
        Jwt {
            header: part(parts[0]),
            claims: part(parts[1]),
            raw: token.to_string(),
        }
    }

    /// Verifies the signature with the key of `jwks` (a JWKS document) whose `kid` is the
    /// header's, as registry 3.x does with its `jwks` file; issuer and audience checked.
    /// Panics when no key has that `kid` or the signature does not verify.
    pub fn verify_with_jwks(&self, jwks: &Value, issuer: &str, audience: &str) {
        let kid = self.header["kid"].as_str().expect("kid");
        let jwk = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("no key with kid {kid} in the JWKS"));
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwk.clone()).expect("a JWK jsonwebtoken reads");
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("a verifying key");
        let alg: jsonwebtoken::Algorithm = self.header["alg"]
            .as_str()
            .expect("alg")
            .parse()
            .expect("known alg");
        let mut v = jsonwebtoken::Validation::new(alg);
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        jsonwebtoken::decode::<Value>(&self.raw, &key, &v)
            .unwrap_or_else(|e| panic!("token does not verify with the JWKS key {kid}: {e}"));
    }

    /// Verifies the signature against the public key of the PEM certificate `cert` (extracted
    /// with openssl), with the header's algorithm, issuer and audience checked.
    pub fn verify_with_cert(&self, cert: &Path, issuer: &str, audience: &str) {
        let pubkey = openssl_stdout(&[
            "x509",
            "-in",
            &cert.display().to_string(),
            "-pubkey",
            "-noout",
        ]);
        let alg_name = self.header["alg"].as_str().expect("alg");
        let alg: jsonwebtoken::Algorithm = alg_name.parse().expect("known alg");
        let key = match alg {
            jsonwebtoken::Algorithm::RS256
            | jsonwebtoken::Algorithm::RS384
            | jsonwebtoken::Algorithm::RS512 => {
                jsonwebtoken::DecodingKey::from_rsa_pem(&pubkey).expect("RSA public key")
            }
            jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => {
                jsonwebtoken::DecodingKey::from_ec_pem(&pubkey).expect("EC public key")
            }
            other => panic!("unexpected alg {other:?}"),
        };
        let mut v = jsonwebtoken::Validation::new(alg);
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "nbf"]);
        jsonwebtoken::decode::<Value>(&self.raw, &key, &v)
            .unwrap_or_else(|e| panic!("token does not verify against {}: {e}", cert.display()));
    }
}
