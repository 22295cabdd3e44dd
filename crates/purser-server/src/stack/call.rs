//! What travels through the token stack: one parsed token request ([`TokenCall`]) down, and
//! its answer with everything the audit record and the limiter need ([`TokenReply`]) up.

use std::net::IpAddr;

use purser_core::{BackendName, Credentials, Grant, Identity, ResourceScope};

use crate::error::{ApiError, Dialect};
use crate::forwarded::ClientAddr;

/// How a caller proves who they are.
pub enum Proof {
    Password(Credentials),
    Anonymous,
    Refresh(String),
    /// An RFC 8693 token exchange: an OIDC ID token, checked by the oidc backend alone.
    SubjectToken(purser_core::Password),
}

/// One token request, parsed and checked for shape before anything costly happens.
pub struct TokenCall {
    pub dialect: Dialect,
    pub proof: Proof,
    /// The requested `service`, one of `token.service`.
    pub service: String,
    pub scopes: Vec<ResourceScope>,
    /// `offline_token=true` (GET) or `access_type=offline` (POST).
    pub want_refresh: bool,
    pub client: ClientAddr,
    /// Unix seconds when the request arrived, from the server's clock.
    pub now: i64,
    /// Filled by the authentication layer for the service that authorizes and signs.
    pub caller: Option<Caller>,
}

impl TokenCall {
    /// The client's address when it is one (`None` for an unknown forwarded entry: it matches
    /// no `ip` rule and has no per-address lockout).
    pub fn ip(&self) -> Option<IpAddr> {
        self.client.ip()
    }

    /// The user name the caller typed, for a password login.
    pub fn typed_name(&self) -> Option<&str> {
        match &self.proof {
            Proof::Password(c) => Some(&c.username),
            _ => None,
        }
    }
}

/// Who the caller turned out to be.
pub struct Caller {
    pub identity: Identity,
    /// The backend that vouched for them; `None` for anonymous callers.
    pub backend: Option<BackendName>,
    /// The refresh token a refresh grant presented: handed back as it is.
    pub presented_refresh: Option<String>,
}

/// What authentication concluded, for the failed-login limiter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LoginVerdict {
    /// Nothing to count: anonymous, or refused before any check.
    #[default]
    NotChecked,
    /// The caller is `account` (the backend's own name, possibly spelled otherwise than typed).
    Accepted { account: String },
    /// A failed login, to count against these account names (none: the address only).
    /// `known`: a backend knew the account and refused this password, so the same password may
    /// be answered 401 again without a check while the limiter remembers it. An unknown name is
    /// not `known`: it may be created any moment (a machine token, an htpasswd line), and must
    /// then be checked at once.
    Failed { accounts: Vec<String>, known: bool },
}

/// The facts of one request that end in its audit record.
#[derive(Debug, Default)]
pub struct Audit {
    pub account: Option<String>,
    /// The machine token that logged in, when one did (its name, never its secret).
    pub machine_token: Option<String>,
    pub backend: Option<&'static str>,
    /// The groups the account was given (by its backend), as the policy saw them.
    pub groups: Vec<String>,
    /// The requested `service`, as the policy saw it.
    pub service: String,
    /// A capped credential's cap (a machine token's scopes), as written.
    pub cap: Option<Vec<String>>,
    /// The labels the backend attached (an OIDC token's claims), as the policy saw them.
    pub labels: std::collections::BTreeMap<String, String>,
    pub decisions: Vec<(ResourceScope, Grant)>,
    /// The scopes the shadow policy decided otherwise (`authz.shadow_policy_file`).
    pub shadow: Vec<crate::shadow::ShadowDiff>,
    /// The login was accepted from the credential cache while its backend was unavailable
    /// (`authn.cache_stale_if_unavailable`).
    pub stale: bool,
}

/// A token, its optional refresh token, and what the POST answer lists as granted.
pub struct Issued {
    pub token: String,
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    pub iat: i64,
    pub granted_scopes: Vec<String>,
}

/// The answer of the token stack.
pub struct TokenReply {
    pub result: Result<Issued, ApiError>,
    pub audit: Audit,
    pub verdict: LoginVerdict,
}

impl TokenReply {
    /// A refusal made before any check that the limiter counts.
    pub fn refused(error: ApiError, audit: Audit) -> Self {
        TokenReply {
            result: Err(error),
            audit,
            verdict: LoginVerdict::NotChecked,
        }
    }
}
