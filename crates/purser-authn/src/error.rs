//! The errors of building a backend, gathered for callers that want one type. Messages name
//! the file, line and user; never a password or a hash.

use crate::hash::HashPasswordError;
use crate::htgroup::HtgroupError;
use crate::htpasswd::HtpasswdError;

/// Errors raised while building an authenticator or hashing a password.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// A static user's `password_hash` is not a bcrypt hash.
    #[error("static user {user:?}: password_hash is not a bcrypt hash ($2y$/$2a$/$2b$, cost 4-31); create one with `purser hash-password`")]
    InvalidStaticHash { user: String },
    /// The same static user is listed twice.
    #[error("static user {user:?} is listed more than once")]
    DuplicateStaticUser { user: String },
    /// A static user with an empty name.
    #[error("a static user has an empty name")]
    EmptyStaticUser,
    /// `hash-password` was asked for something bcrypt cannot do.
    #[error(transparent)]
    Hash(#[from] HashPasswordError),
    /// An htpasswd file was refused as a whole.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    /// An htgroup file was refused as a whole.
    #[error(transparent)]
    Htgroup(#[from] HtgroupError),
}
