use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::ScopeCap;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The name of an authentication backend, as it appears in metrics labels and logs.
pub type BackendName = &'static str;

/// A password that never shows in `Debug` output and is wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }
    /// The secret itself. Callers must not log or echo it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// What a client presented: a user name and a password (from HTTP Basic or the OAuth2 form).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: Password::new(password),
        }
    }
}

/// Who the caller is once a backend accepted them. `account` is `""` for anonymous callers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub groups: Vec<String>,
    /// The most this credential may ever be granted, whatever the policy says: `None` for no
    /// cap (a person's password), `Some(caps)` for a machine token's `scopes` (an empty list
    /// grants nothing).
    pub cap: Option<Vec<ScopeCap>>,
    /// The machine token that logged in, when one did: its name (for the audit record and the
    /// refresh token) and when it ends.
    pub machine: Option<MachineLogin>,
    /// What the backend knows of the caller beyond the account and the groups, for the policy
    /// (`match: { labels: ... }`, `${labels.KEY}`) and the audit record: an OIDC token's chosen
    /// claims (`repository`, `ref`). Empty for most backends.
    pub labels: BTreeMap<String, String>,
}

/// Longest label name: the policy's bound, and every backend's that makes labels.
pub const MAX_LABEL_NAME: usize = 64;

/// Whether `name` is a label name as the policy accepts it (`match: { labels: { KEY: ... } }`,
/// `${labels.KEY}`): letters, digits, `_` and `-`, 1 to [`MAX_LABEL_NAME`] bytes. Backends
/// that let operators name labels (OIDC, LDAP) check their configuration with it.
pub fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The machine token behind an identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineLogin {
    /// The token's name (the user name it logs in with).
    pub name: String,
    /// Unix seconds when the token stops working; `None` for never.
    pub expires: Option<i64>,
}

impl Identity {
    pub fn new(account: impl Into<String>, groups: Vec<String>) -> Self {
        Identity {
            account: account.into(),
            groups,
            cap: None,
            machine: None,
            labels: BTreeMap::new(),
        }
    }
    pub fn anonymous() -> Self {
        Identity::default()
    }
    pub fn is_anonymous(&self) -> bool {
        self.account.is_empty()
    }
}

/// A backend's answer when it could decide. A wrong password is `Rejected`, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthnOutcome {
    /// The identity's `account` is the backend's own name for the user, which may differ from
    /// the name typed (a directory matches `ALICE` to its entry `alice`): the policy, the token
    /// and the lockout use it.
    Accepted(Identity),
    /// A wrong password (or a user the backend cannot log in). `account` is the backend's own
    /// name for the user when it knows it and it may differ from the name typed (the directory
    /// found the entry), so that failed logins count against that account too; `None` otherwise.
    Rejected { account: Option<String> },
    /// The backend does not know this user: the chain asks the next backend.
    UnknownUser,
    /// The credential is right but may not be used any more (a machine token past its expiry):
    /// refused like a wrong password, with `reason`, which names no secret, shown to the client.
    Refused {
        account: Option<String>,
        reason: String,
    },
}

impl AuthnOutcome {
    /// A rejection that names no account beyond the one typed.
    pub const REJECTED: AuthnOutcome = AuthnOutcome::Rejected { account: None };

    /// The label used in `purser_authn_attempts_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            AuthnOutcome::Accepted(_) => "accepted",
            AuthnOutcome::Rejected { .. } | AuthnOutcome::Refused { .. } => "rejected",
            AuthnOutcome::UnknownUser => "unknown_user",
        }
    }
}

/// The backend could not decide (directory down, file never loaded). Answered with 503, never 401.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable {
        backend: BackendName,
        reason: String,
    },
    #[error("{backend} backend cannot look up accounts: {reason}")]
    Unsupported {
        backend: BackendName,
        reason: String,
    },
    /// Too many password checks are waiting: this one was refused before it queued. Answered
    /// with 503 and a short `Retry-After`; no other backend is asked (they share the checks).
    #[error("{backend} backend is busy: too many password checks are waiting")]
    Busy { backend: BackendName },
}

/// One authentication backend. Implementations must take the same time for unknown users as
/// for known users with a wrong password, so that timing does not tell which accounts exist.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The backend's name: `static`, `htpasswd`, `ldap`.
    fn name(&self) -> BackendName;

    /// Checks a password.
    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError>;

    /// Finds an account without a password, for the refresh grant: `Ok(None)` when the backend
    /// no longer knows it. The identity carries the account's current groups.
    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError>;

    /// A number that changes whenever the backend's user data changes (a file reload), so that
    /// caches in front of it can drop what they remembered.
    fn generation(&self) -> u64 {
        0
    }

    /// A number that changes whenever what the backend holds for the user `name` changes (its
    /// stored password hash, its groups, its presence), checked by the credential cache at every
    /// hit: a cached login is served only while the version it was stored with is current.
    /// Cheap, because it is asked on every cached login. The default is the backend-wide
    /// [`Authenticator::generation`], so a backend that cannot tell users apart forgets every
    /// cached login at a reload; a backend that keeps no user data (a directory) answers a
    /// constant and its cached logins live for the cache's TTL.
    fn account_version(&self, _name: &str) -> u64 {
        self.generation()
    }

    /// A fingerprint of the account's stored credential, when the backend keeps one (a password
    /// hash): refresh tokens carry it, and a refresh grant is refused once it changes, so a
    /// password change ends the sessions opened with the old password. `None` when the backend
    /// cannot tell (a directory) or does not know the account.
    fn credential_stamp(&self, _account: &str) -> Option<String> {
        None
    }

    /// `Err(reason)` while the backend cannot serve (for `/readyz`).
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
