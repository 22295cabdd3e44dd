//! Authentication for purser: the `static`, `htpasswd` (with htgroup) and `ldap` backends,
//! the chain that asks them in order, and a credential cache in front of any of them.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use purser_authn::chain::{Chain, ChainDecision};
//! use purser_authn::static_users::{hash_password, StaticAuthenticator, StaticUserEntry};
//! use purser_core::{Authenticator, Credentials};
//!
//! let admin = StaticUserEntry {
//!     name: "admin".into(),
//!     password_hash: hash_password("s3cret", 4).unwrap(),
//!     groups: vec!["admins".into()],
//! };
//! let backends: Vec<Arc<dyn Authenticator>> = vec![Arc::new(StaticAuthenticator::new(vec![admin]).unwrap())];
//! let chain = Chain::new(backends);
//! let result = chain.authenticate(&Credentials::new("admin", "s3cret")).await;
//! assert!(matches!(result.decision, ChainDecision::Accepted { backend: "static", .. }));
//! # });
//! ```
//!
//! Password hashing (bcrypt above all) is CPU work: every backend runs it on
//! `tokio::task::spawn_blocking`, never on the async workers, and no more checks run at once
//! than the semaphore the backends share allows ([`hash_limiter`]: one per CPU). Unknown users cost the same
//! bcrypt work as known users with a wrong password, so timing does not reveal accounts.
#![forbid(unsafe_code)]

// The modules by layer, lowest first; a module imports only from layers above its own, so the
// graph has no cycle (docs/architecture.md draws it). rustfmt sorts the declarations below.
// - crypt64: the crypt(3) base-64 alphabet, shared by the two crypt formats
// - apr1, des_crypt: the `$apr1$` and DES crypt digests
// - hash_work: where and when password checks run (the limiter, the blocking pool, counts)
// - hash: stored hash formats: parsing, verifying, the dummy hash, writing bcrypt
// - issue: what a loaded file reports (LoadIssue, Severity)
// - apache_file: the bounds and line rules htpasswd and htgroup share, and reading them
// - htgroup, htpasswd, static_users, ldap, tokens, oidc: the backends
// - error: one error type over the backends, for callers that want one
// - cache, chain, conformance: what wraps and tests any backend
mod apache_file;
mod apr1;
pub mod cache;
pub mod chain;
#[doc(hidden)]
pub mod conformance;
mod crypt64;
mod des_crypt;
mod error;
mod hash;
mod hash_work;
pub mod htgroup;
pub mod htpasswd;
mod issue;
pub mod ldap;
pub mod oidc;
pub mod static_users;
pub mod tokens;

pub use apache_file::{FileError, MAX_FILE_BYTES, MAX_LINES};
pub use cache::{Answer, AnswerSource, CacheSettings, Cached, CredentialCache};
pub use chain::{Attempt, Chain, ChainDecision, ChainResult};
pub use error::AuthnError;
pub use hash::{
    credential_stamp, hash_password, HashPasswordError, BCRYPT_MAX_COST, BCRYPT_MIN_COST,
    DEFAULT_DUMMY_COST,
};
pub use hash_work::{hash_limiter, CheckRefused, HashLimiter, HashWorkSnapshot, MAX_QUEUE_WAIT};
pub use htgroup::{HtgroupDb, HtgroupError};
pub use htpasswd::{HtpasswdAuthenticator, HtpasswdDb, HtpasswdError};
pub use issue::{LoadIssue, Severity};
pub use static_users::{StaticAuthenticator, StaticUserEntry};
pub use tokens::{TokensAuthenticator, TokensDb};
