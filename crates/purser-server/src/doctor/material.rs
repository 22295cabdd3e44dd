//! The key material the key checks compare: purser's side (the signing key and the chain it
//! sends) and the registry's (what it trusts). Its own module so that the checks over it
//! (`keys`, `trust`, `expiry`) depend on it and not on each other.

use std::path::PathBuf;

use purser_token::{KeyIdMode, PublicKey};
use serde_json::Value as Json;

/// Purser's side of the key: the public key, the kid mode, and the certificate chain sent as x5c.
pub(crate) struct OurKey {
    pub(crate) public: PublicKey,
    pub(crate) mode: KeyIdMode,
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) cert_file: Option<PathBuf>,
}

/// What the registry trusts.
pub(crate) struct Trust {
    pub(crate) bundle: Vec<Vec<u8>>,
    pub(crate) bundle_keys: Vec<PublicKey>,
    pub(crate) jwks: Vec<Json>,
}
