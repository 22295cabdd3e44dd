//! The authentication backends, server side: the `authn` section of the configuration and one
//! module per backend. A backend's module owns everything the server knows about it: its config
//! block (`authn.<name>`), the validation of that block, its paths and `*_file` secret twins, its
//! redaction in printed configuration, and how it is built (the authenticator, the watched files
//! it reloads, its metrics). This file is the one place that dispatches by backend name.
//!
//! ```
//! use purser_server::backends::{AuthnConfig, BackendKind};
//!
//! let authn = AuthnConfig::default();
//! assert_eq!(authn.order, BackendKind::ALL);
//! assert!(authn.block(BackendKind::Ldap).is_none()); // not configured: skipped in the chain
//! ```
//!
//! Adding a backend: a module here implementing [`Backend`], a variant of [`BackendKind`], a
//! field of [`AuthnConfig`] and one line in `BackendKind::slot`, the exhaustive match that is the
//! only dispatch by name; the compiler points at what is missing. The walk-through is in
//! docs/architecture.md.

pub mod htpasswd;
pub mod ldap;
pub mod oidc;
pub mod static_users;
pub mod tokens;

pub use htpasswd::HtpasswdConfig;
pub use ldap::LdapConfig;
pub use oidc::OidcConfig;
pub use static_users::{StaticConfig, StaticUser};
pub use tokens::TokensConfig;

use std::path::Path;
use std::sync::Arc;

use purser_core::Authenticator;
use serde::{Deserialize, Serialize};

use crate::build::ctx::{BuildError, Ctx};
use crate::config::problem::Problem;
use crate::config::values::HumanDuration;

/// The backends the chain can hold: a closed set, so that every `match` on it names them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Tokens,
    Static,
    Htpasswd,
    Ldap,
    Oidc,
}

/// How the dispatch reaches a backend's block without naming it anywhere else.
struct Slot {
    name: &'static str,
    get: fn(&AuthnConfig) -> Option<&dyn Backend>,
    get_mut: fn(&mut AuthnConfig) -> Option<&mut dyn Backend>,
    secret_keys: &'static [&'static str],
}

/// `slot!("ldap", ldap, ldap)`: the name, the field of [`AuthnConfig`], the module (which
/// defines `SECRET_KEYS`).
macro_rules! slot {
    ($name:literal, $field:ident, $module:ident) => {
        Slot {
            name: $name,
            get: |a| a.$field.as_ref().map(|b| b as &dyn Backend),
            get_mut: |a| a.$field.as_mut().map(|b| b as &mut dyn Backend),
            secret_keys: $module::SECRET_KEYS,
        }
    };
}

impl BackendKind {
    /// Every backend, in the default chain order. Machine tokens come first: a login with one
    /// costs a SHA-256, and asking a hashing backend first would cost a bcrypt for nothing.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Tokens,
        BackendKind::Static,
        BackendKind::Htpasswd,
        BackendKind::Ldap,
        BackendKind::Oidc,
    ];

    /// The one place a backend's name meets its module: its name in `authn.order` and under
    /// `authn`, its field of [`AuthnConfig`], and its module.
    fn slot(self) -> Slot {
        match self {
            BackendKind::Tokens => slot!("tokens", tokens, tokens),
            BackendKind::Static => slot!("static", r#static, static_users),
            BackendKind::Htpasswd => slot!("htpasswd", htpasswd, htpasswd),
            BackendKind::Ldap => slot!("ldap", ldap, ldap),
            BackendKind::Oidc => slot!("oidc", oidc, oidc),
        }
    }

    /// The name in `authn.order` and the key of the backend's block under `authn`.
    pub fn as_str(&self) -> &'static str {
        self.slot().name
    }

    /// The key path of the backend's block: `authn.ldap`.
    pub fn key(&self) -> String {
        format!("authn.{}", self.as_str())
    }

    /// The keys of the backend's block that hold secrets: their values are never echoed, even
    /// in a type error.
    pub fn secret_keys(&self) -> &'static [&'static str] {
        self.slot().secret_keys
    }
}

/// What every backend's config block provides. The server calls these through
/// [`AuthnConfig::block`] and [`AuthnConfig::block_mut`], never by the backend's name.
pub trait Backend: Send + Sync {
    /// Pushes every problem of the block, each with its key path under `at` (`authn.ldap`).
    /// Needs no file and no network; `*_file` twins are read by [`Backend::read_secrets`].
    fn validate(&self, at: &str, problems: &mut Vec<Problem>);

    /// Makes every relative path of the block a path under `base` (the config file's folder).
    fn resolve_paths(&mut self, base: &Path);

    /// Reads the `*_file` secret twins into their plain fields, pushing a problem for each that
    /// cannot be read.
    fn read_secrets(&mut self, at: &str, problems: &mut Vec<Problem>);

    /// Replaces every secret by [`crate::config::REDACTED`] (or `""` when unset), for printing.
    fn redact(&mut self);

    /// Whether the credential cache (`authn.cache_ttl`, `authn.cache_stale_if_unavailable`)
    /// may remember this backend's logins. No for a credential that expires by itself and is
    /// cheap to check (an OIDC token): a remembered one would outlive its `exp`.
    fn credential_cache(&self) -> bool {
        true
    }

    /// Builds the authenticator, registering its watched files, readiness flags and metrics on
    /// `ctx`. `Ok(None)`: a dry run found problems (already noted on `ctx`); serve never sees it.
    fn build(
        &self,
        at: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<dyn Authenticator>>, BuildError>;
}

/// The `authn` section: the chain's order, anonymous access, the credential cache, and one block
/// per backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthnConfig {
    /// The chain, of the backends configured below; unconfigured ones are skipped.
    /// Default `[tokens, static, htpasswd, ldap, oidc]`.
    pub order: Vec<BackendKind>,
    /// A request without credentials gets account `""` (the policy decides). Default `false`.
    pub anonymous: bool,
    /// Remember a verified password this long; `0s` never. Default `60s`.
    pub cache_ttl: HumanDuration,
    /// The most accepted logins remembered per backend, least recently used forgotten first.
    /// Default `100000`.
    pub cache_max_entries: usize,
    /// While a backend cannot decide (a directory down or timing out), accept a login that it
    /// accepted, with the same password, less than this long ago, with the groups it had then;
    /// `0s` never. Default `0s`.
    pub cache_stale_if_unavailable: HumanDuration,
    /// Machine tokens: a watched file of token digests. Default: none (backend off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokensConfig>,
    /// Users written in the config. Default: none (backend off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#static: Option<StaticConfig>,
    /// An Apache htpasswd file. Default: none (backend off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<HtpasswdConfig>,
    /// A directory. Default: none (backend off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// OIDC workload identity: CI ID tokens. Default: none (backend off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthnConfig {
    fn default() -> Self {
        AuthnConfig {
            order: BackendKind::ALL.to_vec(),
            anonymous: false,
            cache_ttl: HumanDuration::secs(60),
            cache_max_entries: purser_authn::cache::DEFAULT_MAX_ENTRIES,
            cache_stale_if_unavailable: HumanDuration::secs(0),
            tokens: None,
            r#static: None,
            htpasswd: None,
            ldap: None,
            oidc: None,
        }
    }
}

impl AuthnConfig {
    /// The block of backend `kind`, when configured.
    pub fn block(&self, kind: BackendKind) -> Option<&dyn Backend> {
        (kind.slot().get)(self)
    }

    /// [`AuthnConfig::block`], to change.
    pub fn block_mut(&mut self, kind: BackendKind) -> Option<&mut dyn Backend> {
        (kind.slot().get_mut)(self)
    }

    /// The configured blocks with their kinds, in [`BackendKind::ALL`] order.
    pub fn blocks(&self) -> impl Iterator<Item = (BackendKind, &dyn Backend)> {
        BackendKind::ALL
            .into_iter()
            .filter_map(|k| self.block(k).map(|b| (k, b)))
    }

    /// Every problem of the section: the order, then each configured block.
    pub(crate) fn validate(&self, p: &mut Vec<Problem>) {
        if self.order.is_empty() {
            let names: Vec<&str> = BackendKind::ALL.iter().map(BackendKind::as_str).collect();
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            p.push(Problem::new(
                "authn.order",
                format!("list at least one backend: {} or {last}", rest.join(", ")),
            ));
        }
        if !(1..=MAX_CACHE_ENTRIES).contains(&self.cache_max_entries) {
            p.push(Problem::new(
                "authn.cache_max_entries",
                format!("must be between 1 and {MAX_CACHE_ENTRIES}; the default is 100000 (set cache_ttl: 0s to remember nothing)"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for kind in &self.order {
            if !seen.insert(kind) {
                p.push(Problem::new(
                    "authn.order",
                    format!("{} is listed twice", kind.as_str()),
                ));
            }
        }
        for (kind, block) in self.blocks() {
            block.validate(&kind.key(), p);
        }
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        for kind in BackendKind::ALL {
            if let Some(block) = self.block_mut(kind) {
                block.resolve_paths(base);
            }
        }
    }

    pub(crate) fn read_secrets(&mut self, problems: &mut Vec<Problem>) {
        for kind in BackendKind::ALL {
            if let Some(block) = self.block_mut(kind) {
                block.read_secrets(&kind.key(), problems);
            }
        }
    }

    pub(crate) fn redact(&mut self) {
        for kind in BackendKind::ALL {
            if let Some(block) = self.block_mut(kind) {
                block.redact();
            }
        }
    }
}

/// The largest `authn.cache_max_entries` accepted (a few hundred bytes each: about 5 GB).
const MAX_CACHE_ENTRIES: usize = 16_000_000;

/// Whether the leaf of a key path is a secret of any backend (`bind_password`).
pub(crate) fn is_secret_key(leaf: &str) -> bool {
    BackendKind::ALL
        .iter()
        .any(|k| k.secret_keys().contains(&leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_serde() {
        for kind in BackendKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!(is_secret_key("bind_password") && is_secret_key("password_hash"));
        assert!(!is_secret_key("bind_dn"));
    }

    #[test]
    fn the_cache_bound_is_checked_and_stale_answers_are_off_by_default() {
        let mut c = AuthnConfig::default();
        assert_eq!(c.cache_max_entries, 100_000);
        assert!(c.cache_stale_if_unavailable.0.is_zero());
        let mut p = Vec::new();
        c.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        for bad in [0, MAX_CACHE_ENTRIES + 1] {
            c.cache_max_entries = bad;
            let mut p = Vec::new();
            c.validate(&mut p);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(
                p[0].to_string().contains("authn.cache_max_entries"),
                "{}",
                p[0]
            );
        }
    }
}
