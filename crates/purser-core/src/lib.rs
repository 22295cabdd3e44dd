//! Domain types and the three traits every other purser crate builds on.
//!
//! ```
//! use purser_core::{Credentials, ResourceScope};
//! let creds = Credentials::new("alice", "s3cret");
//! assert_eq!(format!("{creds:?}"), r#"Credentials { username: "alice", password: "<redacted>" }"#);
//! let scope: ResourceScope = "repository:team/app:pull,push".parse().unwrap();
//! assert_eq!(scope.name, "team/app");
//! ```
//!
//! This crate does no I/O and no cryptography: it only names things, so that the
//! authenticators, the policy, the signers and the server agree on them.
#![forbid(unsafe_code)]

mod authn;
mod authz;
mod limit;
mod reload;
mod scope;
mod signer;

pub use authn::{
    is_label_name, Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity,
    MachineLogin, Password, MAX_LABEL_NAME,
};
pub use authz::{Authorizer, Grant, RequestContext, RuleRef};
pub use limit::{
    Clock, DigestKey, Gate, LimiterError, LockScope, LoginAttempt, LoginLimiter, ManualClock,
    PasswordDigest, SystemClock,
};
pub use reload::Reloadable;
pub use scope::{
    Access, ResourceScope, ScopeCap, ScopeError, MAX_ACTION_LEN, MAX_CAP_LEN, MAX_NAME_LEN,
};
pub use signer::{Claims, SignError, Signer, VerifyError};
