//! Token signing for purser: signing keys (RSA, ECDSA P-256/P-384, Ed25519) parsed once, key
//! ids (libtrust for registry 2.x, JWK thumbprints for 3.x), compact JWS, JWKS, certificates,
//! key generation and refresh tokens.
//!
//! ```
//! use purser_core::Signer;
//! use purser_token::{generate, Alg, JwsSigner, KeyIdMode};
//!
//! let fresh = generate(Alg::Es256).unwrap();
//! let signer =
//!     JwsSigner::from_pem(&fresh.key_pem, Some(&fresh.cert_pem), KeyIdMode::Libtrust).unwrap();
//! assert_eq!(signer.alg(), "ES256");
//! assert_eq!(signer.key_id(), fresh.key_ids.libtrust);
//!
//! let token = signer.sign_payload(br#"{"sub":"alice"}"#).unwrap();
//! assert_eq!(signer.verify(&token).unwrap(), br#"{"sub":"alice"}"#);
//!
//! let jwks = purser_token::jwks_document(&signer, &[]);
//! assert_eq!(jwks["keys"][0]["kid"], signer.key_id());
//! ```
//!
//! Everything here is synchronous and `Send + Sync`; a server holds an `Arc<dyn Signer>`.
#![forbid(unsafe_code)]

mod cert;
mod error;
mod generate;
mod jwk;
mod jws;
mod key;
mod kid;
pub mod refresh;
mod ring;

pub use cert::{
    cert_not_after, cert_public_key, check_cert_matches_key, load_cert_chain, load_cert_chain_file,
};
pub use error::TokenError;

/// Largest key, certificate or published-key file read (a long chain is a few KiB).
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;
pub use generate::{
    generate, generate_key, self_signed_cert, write_generated, write_generated_to, GeneratedFiles,
    GeneratedKey, CERT_FILE_NAME, CERT_SUBJECT, CERT_VALIDITY, KEY_FILE_NAME,
};
pub use jwk::{jwk_of, jwks_document, public_jwk_from_file, public_jwk_from_pem};
pub use jws::{new_jti, JwsSigner, MAX_TOKEN_LEN};
pub use key::{
    load_signing_key, load_signing_key_file, Alg, PublicKey, SigningKey, UnknownAlg, MIN_RSA_BITS,
};
pub use kid::{
    distribution_thumbprint, key_id, libtrust_key_id, libtrust_key_id_of_spki, rfc7638_thumbprint,
    KeyIdMode, KeyIds,
};
pub use refresh::{check_refresh, issue_refresh, RefreshClaims, RefreshError, RefreshSubject};
pub use ring::KeyRing;
