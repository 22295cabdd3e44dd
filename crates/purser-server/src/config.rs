//! The configuration: its shape, its defaults and its layers.
//!
//! Layers, lowest first: built-in defaults < config file (YAML, or TOML by extension) <
//! `PURSER_` environment variables (`__` between levels) < command-line flags.
//! [`Config::figment`] is the only place that merges them; [`Config::load`] extracts the result,
//! resolves relative paths against the config file's folder, reads the `*_file` secret twins and
//! runs [`Config::validate`], reporting every problem at once with its key path and source.
//!
//! ```no_run
//! use purser_server::config::{Config, LoadOptions};
//!
//! let opts = LoadOptions { config_file: Some("config/purser.yaml".into()), ..LoadOptions::default() };
//! match Config::load(&opts) {
//!     Ok(loaded) => print!("{}", loaded.config.to_redacted_yaml()),
//!     Err(problems) => eprint!("{problems}"),
//! }
//! ```

mod load;
pub mod problem;
mod redact;
mod validate;
pub mod values;
mod yaml;

pub use load::{LoadOptions, Loaded};
pub use problem::{ConfigErrors, Problem, ProblemSource};
pub use redact::REDACTED;
pub use yaml::Yaml;

pub use crate::backends::{
    AuthnConfig, BackendKind, HtpasswdConfig, LdapConfig, OidcConfig, StaticConfig, StaticUser,
    TokensConfig,
};
pub use values::HumanDuration;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration. Every section has defaults, so an empty file is valid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The token service's listener and request limits. Default: see [`ServerConfig`].
    pub server: ServerConfig,
    /// The Prometheus listener. Default `127.0.0.1:9090`.
    pub metrics: MetricsConfig,
    /// Log level and format. Default `info`, `text`.
    pub log: LogConfig,
    /// What tokens say and how they are signed. Default: see [`TokenConfig`].
    pub token: TokenConfig,
    /// The authentication chain and its backends (crates/purser-server/src/backends/). Default:
    /// no backend configured.
    pub authn: AuthnConfig,
    /// The policy. Default `policy.yaml`.
    pub authz: AuthzConfig,
    /// Failed-login limits. Default 10 failures of an account (100 from an address) in 60s
    /// lock for 5m.
    pub limits: LimitsConfig,
    /// Where the failed-login counts live: this process, or Redis shared by replicas. Default
    /// `memory`.
    pub state: StateConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the token service. Default `127.0.0.1:5001`.
    pub listen: String,
    /// Token endpoint path, served for GET and POST; `/auth/token` is served too. Default `/token`.
    pub path: String,
    /// HTTPS when both files are set. Default: both empty (plain HTTP).
    pub tls: TlsConfig,
    /// CIDRs whose `X-Forwarded-For` is believed for the client IP. Default `[]`.
    pub trusted_proxies: Vec<String>,
    /// More scopes than this in one request is a 400. Default `16`.
    pub max_scopes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5001".into(),
            path: "/token".into(),
            tls: TlsConfig::default(),
            trusted_proxies: Vec::new(),
            max_scopes: 16,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. Default empty.
    pub cert_file: PathBuf,
    /// PEM private key. Default empty.
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus text format at `/metrics`; `""` disables. Default `127.0.0.1:9090`.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error | warn | info | debug | trace`. Default `info`.
    pub level: LogLevel,
    /// `text | json`. Default `text`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlg {
    #[default]
    Rs256,
    Es256,
    Es384,
    Eddsa,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyIdConfig {
    /// libtrust id, what registry 2.x looks keys up by.
    #[default]
    Libtrust,
    /// JWK thumbprint as registry 3.x computes it.
    Thumbprint,
}

/// One string or a list of strings (`service: "registry.local"` or `service: [a, b]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The registry's `auth.token.issuer`. Default `purser`.
    pub issuer: String,
    /// Accepted `service` values; the token's `aud`. Default `["registry.local"]`.
    pub service: OneOrMany,
    /// Access token lifetime, at least 60s. Default `5m`.
    pub lifetime: HumanDuration,
    /// PEM private key (PKCS#1, PKCS#8 or SEC1). Default `data/signing.pem`.
    pub signing_key_file: PathBuf,
    /// PEM chain for the key; when set, tokens carry `x5c`. Default empty.
    pub certificate_file: PathBuf,
    /// Create key and self-signed certificate at first start when the key is missing. Default `true`.
    pub generate_key: bool,
    /// Algorithm of a generated key. Default `rs256`.
    pub generate_alg: KeyAlg,
    /// `libtrust` (registry 2.x) or `thumbprint` (registry 3.x). Default `libtrust`.
    pub key_id: KeyIdConfig,
    /// More public keys or certificates (PEM files) to list in the JWKS. Default `[]`.
    pub publish_keys: Vec<PathBuf>,
    /// Refresh-token lifetime; `0s` disables refresh tokens. Default `30d`.
    pub refresh_lifetime: HumanDuration,
    /// Revocations written by `purser revoke`: refresh tokens of an account issued at or before
    /// a time are refused. Watched; a missing file revokes nothing. Default empty (off).
    pub revocations_file: PathBuf,
    /// A key folder (`purser keys`): the keys, their certificates and a manifest of their
    /// states (next, active, retiring), watched. When set, `signing_key_file`,
    /// `certificate_file` and `publish_keys` are not used. Default empty (off).
    pub keys_dir: PathBuf,
    /// The certificates of every published key of `keys_dir`, rewritten at each change: the
    /// registry 2.x `rootcertbundle`. Default empty (not written).
    pub bundle_file: PathBuf,
    /// The JWKS of every published key of `keys_dir`, rewritten at each change: the registry
    /// 3.x `jwks` file. Default empty (not written).
    pub jwks_file: PathBuf,
    /// A rotation schedule for `keys_dir`. Default: none (keys change only by `purser keys`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationConfig>,
}

/// `token.rotation`: make the next key `overlap` before the active one is `every` old, and
/// activate it then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationConfig {
    /// The active key's life, from its activation. Default `90d`.
    pub every: HumanDuration,
    /// How long the next key is published before it is activated. Default `7d`.
    pub overlap: HumanDuration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            every: HumanDuration::secs(90 * 86400),
            overlap: HumanDuration::secs(7 * 86400),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            issuer: "purser".into(),
            service: OneOrMany::Many(vec!["registry.local".into()]),
            lifetime: HumanDuration::secs(300),
            signing_key_file: PathBuf::from("data/signing.pem"),
            certificate_file: PathBuf::new(),
            generate_key: true,
            generate_alg: KeyAlg::Rs256,
            key_id: KeyIdConfig::Libtrust,
            publish_keys: Vec::new(),
            refresh_lifetime: HumanDuration::secs(30 * 86400),
            revocations_file: PathBuf::new(),
            keys_dir: PathBuf::new(),
            bundle_file: PathBuf::new(),
            jwks_file: PathBuf::new(),
            rotation: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthzConfig {
    /// The policy; watched, an edit applies without restart. Default `policy.yaml`.
    pub policy_file: PathBuf,
    /// A second policy that decides every request too, without effect on the answer: where it
    /// decides otherwise, the audit record and `purser_policy_shadow_decisions_total` say so.
    /// Watched like the policy; a broken file never touches the live decisions. Default empty
    /// (off).
    pub shadow_policy_file: PathBuf,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        AuthzConfig {
            policy_file: PathBuf::from("policy.yaml"),
            shadow_policy_file: PathBuf::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Failed-login limiting, per account and per client IP. Default `{ max: 10,
    /// per_address_max: 100, window: 60s, lockout: 5m, trusted_address_ttl: 24h }`.
    pub failed_logins: FailedLoginsConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailedLoginsConfig {
    /// Distinct wrong passwords of one account allowed in `window` (the same wrong password
    /// again counts once); `0` disables limiting. Default `10`.
    pub max: u32,
    /// Distinct (account, password) failures from one client address allowed in `window`; `0`:
    /// no address limit. Default `100`.
    pub per_address_max: u32,
    /// Sliding window; a wrong password is remembered this long. Default `60s`.
    pub window: HumanDuration,
    /// How long a key stays locked. Default `5m`.
    pub lockout: HumanDuration,
    /// An address an account logged in from within this time is not stopped by that account's
    /// lock; `0s`: never. Default `24h`.
    pub trusted_address_ttl: HumanDuration,
}

impl Default for FailedLoginsConfig {
    fn default() -> Self {
        FailedLoginsConfig {
            max: 10,
            per_address_max: 100,
            window: HumanDuration::secs(60),
            lockout: HumanDuration::secs(300),
            trusted_address_ttl: HumanDuration::secs(86400),
        }
    }
}

/// Which store holds the failed-login state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// This process's memory: one instance, forgotten at restart.
    #[default]
    Memory,
    /// A Redis server shared by every replica.
    Redis,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `memory | redis`. Default `memory`.
    pub backend: StateBackend,
    /// The Redis server, for `backend: redis`. Default: see [`RedisConfig`].
    pub redis: RedisConfig,
}

/// What a replica does while Redis cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStateError {
    /// Count in this replica's memory until Redis is back.
    #[default]
    Local,
    /// Refuse password logins with 503 and Retry-After.
    Closed,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS. Secret (it may hold a
    /// password). Default empty.
    pub url: String,
    /// Or a file holding it (read at load, a trailing newline dropped); setting both is an error.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// PEM CA bundle to verify a `rediss://` server. Default empty (system roots).
    pub ca_file: PathBuf,
    /// Put before every key purser writes. Default `purser:`.
    pub key_prefix: String,
    /// Bound on connecting and on each operation. Default `200ms`.
    pub timeout: HumanDuration,
    /// `local` (count in this replica until Redis is back) or `closed` (503). Default `local`.
    pub on_error: OnStateError,
    /// Whether `/readyz` fails while Redis is unreachable (it always says so). Default `false`.
    pub fail_readiness: bool,
}

// Written by hand so that a password in the URL never reaches a log line through `{:?}`.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &values::redacted_if_set(&self.url))
            .field("url_file", &self.url_file)
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("fail_readiness", &self.fail_readiness)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            url_file: None,
            ca_file: PathBuf::new(),
            key_prefix: "purser:".into(),
            timeout: HumanDuration::millis(200),
            on_error: OnStateError::Local,
            fail_readiness: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, secs) in [
            ("300s", 300),
            ("5m", 300),
            ("12h", 43200),
            ("30d", 2592000),
            ("0s", 0),
        ] {
            let d: HumanDuration = s.parse().unwrap();
            assert_eq!(d.as_secs(), secs, "{s}");
        }
        assert_eq!(HumanDuration::secs(300).to_string(), "5m");
        assert_eq!(HumanDuration::secs(61).to_string(), "61s");
        for bad in ["", "5", "5x", "m", "-5s", "99999999999999999999d"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
    }
}
