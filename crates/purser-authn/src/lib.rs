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

mod apr1;
pub mod cache;
pub mod chain;
#[doc(hidden)]
pub mod conformance;
mod des_crypt;
mod error;
mod hash;
pub mod htgroup;
pub mod htpasswd;
pub mod ldap;
pub mod static_users;

pub use cache::{Cached, CredentialCache};
pub use chain::{Attempt, Chain, ChainDecision, ChainResult};
pub use error::{AuthnError, HtpasswdError, LoadIssue, Severity};
pub use hash::{
    credential_stamp, hash_limiter, HashWorkSnapshot, BCRYPT_MAX_COST, BCRYPT_MIN_COST,
};
pub use htgroup::HtgroupDb;
pub use htpasswd::{HtpasswdAuthenticator, HtpasswdDb};
pub use static_users::{hash_password, StaticAuthenticator, StaticUserEntry};
