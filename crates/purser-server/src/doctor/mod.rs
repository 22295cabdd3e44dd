//! `purser doctor`: does a registry's configuration agree with purser's?
//!
//! A registry and its token server that disagree (issuer, service, realm, a `rootcertbundle` that
//! does not trust the signing key) only ever show the client "unauthorized". The doctor reads the
//! registry's own `config.yml` (with the `REGISTRY_AUTH_TOKEN_*` overrides of an env file), checks
//! it against purser's configuration offline, and with `--registry` also asks the running
//! registry: its clock, and once with `--user` the whole exchange (challenge, token, `/v2/`).
//!
//! Each result is one line, `ok|warn|problem <check>: <what> -> <how to fix>`.
//!
//! The rules it applies are those measured against the distribution registry: 2.x looks keys up
//! by their libtrust id in `rootcertbundle` and has no EdDSA; 3.x looks them up by the JWK
//! thumbprint it computes (or the `kid` written in its `jwks` file) and honours
//! `signingalgorithms`; both try a token's `x5c` chain first, against the bundle, and allow 60 s
//! of clock skew.
//!
//! ```no_run
//! use purser_server::config::{Config, LoadOptions};
//! use purser_server::doctor::{self, DoctorOptions};
//! let loaded = Config::load(&LoadOptions::default()).unwrap();
//! let report = doctor::run(&loaded.config, &DoctorOptions::offline("/etc/docker/registry/config.yml".into()));
//! print!("{report}");
//! std::process::exit(if report.healthy() { 0 } else { 1 });
//! ```
//!
//! One file per concern: `registry_config.rs` reads the registry's side, `yaml_keys.rs` finds the
//! duplicated keys a YAML parser would only refuse, then one file per family of checks
//! (`auth.rs`, `identity.rs`, `realm.rs`, `keys.rs` with `trust.rs`, `expiry.rs`, `version.rs`),
//! and the online part (`online.rs`, `clock.rs`) over hyper's client (`client.rs`).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::Config;

mod auth;
mod challenge;
mod client;
mod clock;
mod expiry;
mod identity;
mod keys;
pub mod ldap;
mod material;
mod online;
mod realm;
mod registry_config;
mod report;
mod trust;
mod url;
mod version;
mod yaml_keys;

#[cfg(test)]
mod tests;

pub use challenge::parse_bearer_challenge;
pub use client::{http_get, HttpClient, Response};
pub use clock::parse_http_date;
pub use keys::key_trust_problems;
pub use registry_config::{
    parse_env_file, parse_registry_config, read_registry_config, RegistryToken, RegistryVersion,
};
pub use report::{Finding, Report, Status};
pub use url::SimpleUrl;
pub use yaml_keys::{duplicate_keys, DuplicateKey};

/// The clock skew the registry tolerates on `exp` and `nbf`.
pub const REGISTRY_LEEWAY: Duration = Duration::from_secs(60);
/// Certificates closer than this to their end are reported.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);
/// Largest registry config, env file, bundle or jwks file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;
/// Largest HTTP response body read.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Connect timeout, and the longest wait for each step of an HTTP exchange after it.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The path a registry with `autoredirect` sends clients to unless told otherwise.
const AUTOREDIRECT_PATH: &str = "/auth/token";

/// What to check against.
#[derive(Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// The registry's `config.yml`.
    pub registry_config: PathBuf,
    /// An env file of `KEY=VALUE` lines; its `REGISTRY_AUTH_TOKEN_*` override the config.
    pub registry_env: Option<PathBuf>,
    /// The running registry's base URL (`http://host:port`).
    pub registry: Option<String>,
    /// Credentials for the round trip.
    pub user: Option<UserPassword>,
}

impl DoctorOptions {
    /// Only the registry's config file: the offline checks.
    pub fn offline(registry_config: PathBuf) -> Self {
        DoctorOptions {
            registry_config,
            registry_env: None,
            registry: None,
            user: None,
        }
    }
}

impl fmt::Debug for DoctorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoctorOptions")
            .field("registry_config", &self.registry_config)
            .field("registry_env", &self.registry_env)
            .field("registry", &self.registry)
            .field("user", &self.user)
            .finish()
    }
}

/// A user and password for the round trip; the password never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassword {
    pub user: String,
    pub password: String,
}

impl UserPassword {
    /// Splits `USER:PASSWORD` at the first `:`; `None` without one.
    pub fn parse(s: &str) -> Option<Self> {
        let (user, password) = s.split_once(':')?;
        Some(UserPassword {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

impl fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPassword")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Runs every check: offline ones always, online ones when `opts.registry` is set.
///
/// Synchronous: the online checks run on a small runtime of their own, so this must not be
/// called from inside a tokio runtime.
pub fn run(config: &Config, opts: &DoctorOptions) -> Report {
    let mut report = Report::default();
    let Some(mut registry) = read_registry(opts, &mut report) else {
        return report;
    };
    let client = match &opts.registry {
        Some(_) => match HttpClient::new() {
            Ok(c) => Some(c),
            Err(e) => {
                report.findings.push(Finding::problem(
                    "registry",
                    e,
                    "run doctor again; without --registry the offline checks still run",
                ));
                return report;
            }
        },
        None => None,
    };
    if let (Some(url), Some(client)) = (&opts.registry, &client) {
        if let Some(f) = version::probe_version(client, config, &mut registry, url) {
            report.findings.push(f);
        }
    }
    report.findings.extend(offline_checks(
        config,
        &registry,
        purser_core::Clock::wall(&purser_core::SystemClock),
    ));
    if let (Some(url), Some(client)) = (&opts.registry, &client) {
        report.findings.extend(online::online_checks(
            client,
            config,
            &registry,
            url,
            opts.user.as_ref(),
        ));
    } else if opts.user.is_some() {
        report.findings.push(Finding::warn(
            "round trip",
            "--user was given without --registry, so nothing was tried",
            "add --registry http://HOST:PORT",
        ));
    }
    report
}

/// Reads the registry's config, adding to `report` what is wrong with the file itself.
/// `None` when nothing more can be checked.
fn read_registry(opts: &DoctorOptions, report: &mut Report) -> Option<RegistryToken> {
    let fix_path = "give --registry-config the registry's config.yml";
    let text = match registry_config::read_bounded(&opts.registry_config) {
        Ok(t) => t,
        Err(e) => {
            report
                .findings
                .push(Finding::problem("registry config", e, fix_path));
            return None;
        }
    };
    // Before parsing: the YAML parser refuses a duplicated key with a message that names neither
    // the line nor what to do, while the registry silently keeps the last one.
    let duplicates = yaml_keys::duplicate_findings(&opts.registry_config, &text);
    let parsed = parse_registry_config(&opts.registry_config, &text, opts.registry_env.as_deref());
    let no_duplicates = duplicates.is_empty();
    report.findings.extend(duplicates);
    match parsed {
        Ok(r) => Some(r),
        Err(e) => {
            // The duplicate findings say it better, unless the parser stopped at something else.
            if no_duplicates || !e.contains("duplicate entry") {
                report
                    .findings
                    .push(Finding::problem("registry config", e, fix_path));
            }
            None
        }
    }
}

/// The checks that need no network.
pub fn offline_checks(config: &Config, reg: &RegistryToken, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(f) = auth::check_token_block(reg) {
        out.push(f);
        return out;
    }
    out.extend(auth::check_single_type(reg));
    if !reg.version_probed {
        out.push(version::version_finding(config, reg));
    }
    out.push(identity::check_issuer(config, reg));
    out.push(identity::check_service(config, reg));
    out.extend(realm::check_realm(config, reg));
    out.extend(keys::check_key(config, reg, now));
    out
}
