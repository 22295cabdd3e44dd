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

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use purser_token::{
    cert_not_after, cert_public_key, distribution_thumbprint, jwk_of, libtrust_key_id,
    load_cert_chain, Alg, KeyIdMode, PublicKey,
};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::config::{Config, KeyIdConfig};

/// The clock skew the registry tolerates on `exp` and `nbf`.
pub const REGISTRY_LEEWAY: Duration = Duration::from_secs(60);
/// Certificates closer than this to their end are reported.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);
/// Largest registry config, env file, bundle or jwks file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;
/// Largest HTTP response read.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Connect, read and write timeout of each HTTP request.
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

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Problem,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Problem => "problem",
        })
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    /// The check's name: `issuer`, `service`, `realm`, `trust`, `algorithm`, ...
    pub check: String,
    /// What was found.
    pub what: String,
    /// How to fix it; empty when there is nothing to do.
    pub fix: String,
}

impl Finding {
    fn new(status: Status, check: &str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            status,
            check: check.to_string(),
            what: what.into(),
            fix: fix.into(),
        }
    }
    fn ok(check: &str, what: impl Into<String>) -> Self {
        Self::new(Status::Ok, check, what, "")
    }
    fn warn(check: &str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Status::Warn, check, what, fix)
    }
    fn problem(check: &str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Status::Problem, check, what, fix)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.check, self.what)?;
        if !self.fix.is_empty() {
            write!(f, " -> {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every finding, in the order checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when no check found a problem (warnings allowed).
    pub fn healthy(&self) -> bool {
        !self.findings.iter().any(|f| f.status == Status::Problem)
    }
    /// The findings of one check.
    pub fn of(&self, check: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == check).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// The registry versions whose rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegistryVersion {
    V2,
    V3,
}

impl fmt::Display for RegistryVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryVersion::V2 => "registry 2.x",
            RegistryVersion::V3 => "registry 3.x",
        })
    }
}

/// The registry's `auth.token` block after environment overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryToken {
    pub realm: Option<String>,
    pub service: Option<String>,
    pub issuer: Option<String>,
    pub rootcertbundle: Option<PathBuf>,
    pub jwks: Option<PathBuf>,
    pub autoredirect: bool,
    pub autoredirectpath: Option<String>,
    pub signingalgorithms: Option<Vec<String>>,
    /// `http.addr`, for `autoredirect`.
    pub http_addr: Option<String>,
    /// The version the keys tell (`jwks`, `signingalgorithms`, `autoredirectpath` are 3.x only).
    pub version: Option<RegistryVersion>,
    /// True when `version` was found by asking the running registry.
    pub version_probed: bool,
    /// True when the config has an `auth.token` block at all (or env overrides create one).
    pub present: bool,
    /// Other `auth` methods configured (`htpasswd`, `silly`).
    pub other_auth: Vec<String>,
}

/// Reads the registry's `config.yml` and applies `REGISTRY_AUTH_TOKEN_*` (and `REGISTRY_HTTP_ADDR`)
/// from `env_file`. Relative paths are taken relative to the config file's folder.
pub fn read_registry_config(path: &Path, env_file: Option<&Path>) -> Result<RegistryToken, String> {
    let text = read_bounded(path)?;
    let doc: Yaml = if text.trim().is_empty() {
        Yaml::Null
    } else {
        serde_norway::from_str(&text).map_err(|e| {
            format!(
                "{}: not a registry config (YAML): {e}; give the registry's config.yml",
                path.display()
            )
        })?
    };
    let mut values: BTreeMap<String, Yaml> = BTreeMap::new();
    let mut other_auth = Vec::new();
    let mut present = false;
    if let Some(auth) = doc.get("auth").and_then(Yaml::as_mapping) {
        for (k, v) in auth {
            let Some(k) = k.as_str() else { continue };
            if k == "token" {
                present = true;
                if let Some(m) = v.as_mapping() {
                    for (tk, tv) in m {
                        if let Some(tk) = tk.as_str() {
                            values.insert(tk.to_ascii_lowercase(), tv.clone());
                        }
                    }
                }
            } else {
                other_auth.push(k.to_string());
            }
        }
    }
    let mut http_addr = doc
        .get("http")
        .and_then(|h| h.get("addr"))
        .and_then(yaml_string);
    if let Some(env) = env_file {
        let env_text = read_bounded(env)?;
        for (k, v) in parse_env_file(&env_text) {
            if let Some(key) = k.strip_prefix("REGISTRY_AUTH_TOKEN_") {
                present = true;
                // The registry parses override values as YAML too (lists for signingalgorithms).
                let parsed = serde_norway::from_str::<Yaml>(&v).unwrap_or(Yaml::String(v.clone()));
                values.insert(key.to_ascii_lowercase(), parsed);
            } else if k == "REGISTRY_HTTP_ADDR" {
                http_addr = Some(v);
            }
        }
    }
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let get_str = |k: &str| values.get(k).and_then(yaml_string);
    let get_path = |k: &str| {
        get_str(k).filter(|s| !s.is_empty()).map(|s| {
            let p = PathBuf::from(s);
            if p.is_relative() {
                base.join(p)
            } else {
                p
            }
        })
    };
    let signingalgorithms = values.get("signingalgorithms").map(|v| match v {
        Yaml::Sequence(items) => items.iter().filter_map(yaml_string).collect(),
        other => yaml_string(other)
            .map(|s| {
                s.split([',', ' '])
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    });
    let autoredirect = values
        .get("autoredirect")
        .map(|v| match v {
            Yaml::Bool(b) => *b,
            other => yaml_string(other).is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
        .unwrap_or(false);
    let v3_keys = ["jwks", "signingalgorithms", "autoredirectpath"];
    let version = v3_keys
        .iter()
        .any(|k| values.contains_key(*k))
        .then_some(RegistryVersion::V3);
    Ok(RegistryToken {
        realm: get_str("realm"),
        service: get_str("service"),
        issuer: get_str("issuer"),
        rootcertbundle: get_path("rootcertbundle"),
        jwks: get_path("jwks"),
        autoredirect,
        autoredirectpath: get_str("autoredirectpath"),
        signingalgorithms,
        http_addr,
        version,
        version_probed: false,
        present,
        other_auth,
    })
}

fn yaml_string(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{} is larger than {} bytes: is it the right file?",
            path.display(),
            MAX_FILE
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `KEY=VALUE` lines as docker's `--env-file`, systemd's `EnvironmentFile` and shells write
/// them: blank lines and `#` comments skipped, an `export ` prefix and matching quotes removed.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    out
}

/// Runs every check: offline ones always, online ones when `opts.registry` is set.
pub fn run(config: &Config, opts: &DoctorOptions) -> Report {
    let mut report = Report::default();
    let registry = match read_registry_config(&opts.registry_config, opts.registry_env.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            report.findings.push(Finding::problem(
                "registry config",
                e,
                "give --registry-config the registry's config.yml",
            ));
            return report;
        }
    };
    let mut registry = registry;
    if let Some(url) = &opts.registry {
        if let Some(f) = probe_version(config, &mut registry, url) {
            report.findings.push(f);
        }
    }
    report
        .findings
        .extend(offline_checks(config, &registry, SystemTime::now()));
    if let Some(url) = &opts.registry {
        report
            .findings
            .extend(online_checks(config, &registry, url, opts.user.as_ref()));
    } else if opts.user.is_some() {
        report.findings.push(Finding::warn(
            "round trip",
            "--user was given without --registry, so nothing was tried",
            "add --registry http://HOST:PORT",
        ));
    }
    report
}

/// The checks that need no network.
pub fn offline_checks(config: &Config, reg: &RegistryToken, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    if !reg.present {
        let also = if reg.other_auth.is_empty() {
            String::new()
        } else {
            format!(" (it uses auth.{})", reg.other_auth.join(", auth."))
        };
        out.push(Finding::problem(
            "auth",
            format!("the registry config has no auth.token block{also}"),
            "paste the auth.token block of docs/quickstart.md into the registry's config.yml",
        ));
        return out;
    }
    if !reg.version_probed {
        out.push(version_finding(config, reg));
    }
    out.push(check_issuer(config, reg));
    out.push(check_service(config, reg));
    out.extend(check_realm(config, reg));
    out.extend(check_key(config, reg, now));
    out
}

/// Tells 2.x from 3.x by behaviour: signs two tokens for the registry's own issuer and service
/// with purser's key, one with a libtrust kid (only 2.x accepts it) and one with a thumbprint
/// kid (only 3.x does), and sees which `GET /v2/` accepts. Sets `reg.version` when that tells.
/// Nothing is found out when the registry trusts neither (the trust check then says why).
fn probe_version(config: &Config, reg: &mut RegistryToken, url: &str) -> Option<Finding> {
    let key = purser_token::load_signing_key_file(&config.token.signing_key_file).ok()?;
    let v2 = format!("{}/v2/", url.trim_end_matches('/'));
    let first = http_get(&v2, None).ok()?;
    let challenge = first
        .header("www-authenticate")
        .and_then(parse_bearer_challenge)?;
    let service = challenge.get("service").cloned().or(reg.service.clone())?;
    let issuer = reg.issuer.clone()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": "",
        "aud": service,
        "exp": now + 60,
        "nbf": now,
        "iat": now,
        "jti": purser_token::new_jti(),
        "access": [],
    });
    let payload = serde_json::to_vec(&claims).ok()?;
    let accepted = |mode: KeyIdMode| -> bool {
        use purser_core::Signer;
        purser_token::JwsSigner::new(key.clone(), mode, Vec::new())
            .ok()
            .and_then(|s| s.sign_payload(&payload).ok())
            .and_then(|t| http_get(&v2, Some(&format!("Bearer {t}"))).ok())
            .is_some_and(|r| r.status == 200)
    };
    let found = match (
        accepted(KeyIdMode::Libtrust),
        accepted(KeyIdMode::Thumbprint),
    ) {
        (true, false) => RegistryVersion::V2,
        (false, true) => RegistryVersion::V3,
        _ => return None,
    };
    let finding = match reg.version {
        Some(v) if v != found => Finding::warn(
            "version",
            format!("the registry behaves as {found} (it accepts only a {} kid), though its config uses keys of {v}", kid_name(found)),
            "check that --registry and --registry-config describe the same registry",
        ),
        _ => Finding::ok(
            "version",
            format!("the running registry behaves as {found}: it accepts a token of purser's key with a {} kid only", kid_name(found)),
        ),
    };
    reg.version = Some(found);
    reg.version_probed = true;
    Some(finding)
}

fn kid_name(v: RegistryVersion) -> &'static str {
    match v {
        RegistryVersion::V2 => "libtrust",
        RegistryVersion::V3 => "thumbprint",
    }
}

fn version_finding(config: &Config, reg: &RegistryToken) -> Finding {
    match reg.version {
        Some(v) => Finding::ok(
            "version",
            format!("{v} (the config uses keys only 3.x knows)"),
        ),
        None => {
            let assumed = match config.token.key_id {
                KeyIdConfig::Libtrust => "2.x",
                KeyIdConfig::Thumbprint => "3.x",
            };
            Finding::ok(
                "version",
                format!(
                    "the config reads the same for registry 2.x and 3.x; version-dependent checks name the version they apply to (purser's token.key_id suits {assumed})"
                ),
            )
        }
    }
}

fn check_issuer(config: &Config, reg: &RegistryToken) -> Finding {
    let ours = &config.token.issuer;
    match &reg.issuer {
        None => Finding::problem(
            "issuer",
            "the registry's auth.token.issuer is not set",
            format!("set auth.token.issuer: {ours:?} in the registry config"),
        ),
        Some(theirs) if theirs == ours => {
            Finding::ok("issuer", format!("{ours:?} on both sides"))
        }
        Some(theirs) => Finding::problem(
            "issuer",
            format!("the registry expects issuer {theirs:?} but purser signs tokens as {ours:?}"),
            format!(
                "set auth.token.issuer: {ours:?} in the registry config, or token.issuer: {theirs:?} in purser's"
            ),
        ),
    }
}

fn check_service(config: &Config, reg: &RegistryToken) -> Finding {
    let ours = config.token.service.to_vec();
    match &reg.service {
        None => Finding::problem(
            "service",
            "the registry's auth.token.service is not set",
            format!(
                "set auth.token.service: {:?} in the registry config",
                ours.first().cloned().unwrap_or_default()
            ),
        ),
        Some(theirs) if ours.contains(theirs) => Finding::ok(
            "service",
            format!("{theirs:?} is among purser's token.service"),
        ),
        Some(theirs) => Finding::problem(
            "service",
            format!(
                "the registry's service {theirs:?} is not among purser's token.service {ours:?}: purser answers its clients 400"
            ),
            format!("add {theirs:?} to token.service in purser's config, or set auth.token.service to one of {ours:?}"),
        ),
    }
}

/// The parts of an `http(s)://host[:port]/path?query` URL the checks need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The path, `/` when empty; without the query.
    pub path: String,
    /// The query, without `?`.
    pub query: String,
}

impl SimpleUrl {
    /// Parses an absolute http or https URL; `None` for anything else.
    pub fn parse(s: &str) -> Option<SimpleUrl> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        Some(SimpleUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
            query: query.to_string(),
        })
    }

    /// `host:port` as a connection target (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_unspecified(host: &str) -> bool {
    host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
}

/// `server.listen` as (host, port).
fn listen_parts(listen: &str) -> Option<(String, u16)> {
    let (h, p) = listen.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    Some((h.to_ascii_lowercase(), p.parse().ok()?))
}

fn served_paths(config: &Config) -> Vec<String> {
    let mut v = vec![config.server.path.clone()];
    if config.server.path != AUTOREDIRECT_PATH {
        v.push(AUTOREDIRECT_PATH.to_string());
    }
    v
}

fn check_realm(config: &Config, reg: &RegistryToken) -> Vec<Finding> {
    let mut out = Vec::new();
    let tls = !config.server.tls.cert_file.as_os_str().is_empty();
    let our_scheme = if tls { "https" } else { "http" };
    let paths = served_paths(config);
    let listen = listen_parts(&config.server.listen);
    let example = match &listen {
        Some((h, p)) => {
            let host = if is_unspecified(h) {
                "HOST"
            } else {
                h.as_str()
            };
            format!("{our_scheme}://{host}:{p}{}", config.server.path)
        }
        None => format!("{our_scheme}://HOST:PORT{}", config.server.path),
    };
    if reg.autoredirect {
        let path = reg
            .autoredirectpath
            .clone()
            .unwrap_or_else(|| AUTOREDIRECT_PATH.to_string());
        if paths.contains(&path) {
            out.push(Finding::warn(
                "realm",
                format!(
                    "autoredirect is on: clients are sent to the host they used for the registry, path {path}, whatever realm says"
                ),
                format!(
                    "make that host route {path} to purser ({example}), e.g. with the reverse proxy in front of the registry; or set autoredirect: false and realm: {example}"
                ),
            ));
        } else {
            out.push(Finding::problem(
                "realm",
                format!(
                    "autoredirect is on and sends clients to path {path}, which purser does not serve (it serves {})",
                    paths.join(" and ")
                ),
                format!("set autoredirectpath: {AUTOREDIRECT_PATH}, or server.path: {path:?} in purser's config"),
            ));
        }
        return out;
    }
    let Some(realm) = &reg.realm else {
        out.push(Finding::problem(
            "realm",
            "the registry's auth.token.realm is not set",
            format!("set auth.token.realm: {example}"),
        ));
        return out;
    };
    let Some(url) = SimpleUrl::parse(realm) else {
        out.push(Finding::problem(
            "realm",
            format!("the registry's realm {realm:?} is not an http(s) URL"),
            format!("set auth.token.realm: {example}"),
        ));
        return out;
    };
    let mut wrong = Vec::new();
    if !paths.contains(&url.path) {
        wrong.push(format!(
            "its path {} is not purser's token path ({})",
            url.path,
            paths.join(" or ")
        ));
    }
    if url.scheme != our_scheme {
        wrong.push(format!(
            "it uses {} but purser serves {our_scheme}",
            url.scheme
        ));
    }
    let mut proxied = None;
    if let Some((lhost, lport)) = &listen {
        let direct = is_loopback_name(&url.host)
            || url.host == *lhost
            || (is_unspecified(lhost) && url.host.parse::<std::net::IpAddr>().is_ok());
        if url.port != *lport {
            if direct {
                wrong.push(format!(
                    "it points at port {} but purser listens on {}",
                    url.port, config.server.listen
                ));
            } else {
                proxied = Some(format!(
                    "the realm's host {} port {} is not purser's listen address {}",
                    url.host, url.port, config.server.listen
                ));
            }
        } else if is_loopback_name(lhost) && !is_loopback_name(&url.host) {
            proxied = Some(format!(
                "purser listens on loopback ({}) but the realm names host {}",
                config.server.listen, url.host
            ));
        }
        if wrong.is_empty() && is_loopback_name(&url.host) {
            out.push(Finding::warn(
                "realm",
                format!(
                    "the realm {realm} is a loopback address: only clients on the registry's machine can reach it"
                ),
                "use a name or address clients can reach, unless this is a local setup",
            ));
        }
    }
    if !wrong.is_empty() {
        out.push(Finding::problem(
            "realm",
            format!(
                "the realm {realm} does not reach purser: {}",
                wrong.join("; ")
            ),
            format!("set auth.token.realm: {example}"),
        ));
    } else if let Some(p) = proxied {
        out.push(Finding::warn(
            "realm",
            format!("{p}: fine only when a proxy forwards it to purser"),
            format!("make sure {realm} is forwarded to purser, or set auth.token.realm: {example}"),
        ));
    } else {
        out.push(Finding::ok(
            "realm",
            format!("{realm} reaches purser's token path"),
        ));
    }
    out
}

/// Purser's side of the key: the public key, the kid mode, and the certificate chain sent as x5c.
struct OurKey {
    public: PublicKey,
    mode: KeyIdMode,
    chain: Vec<Vec<u8>>,
    cert_file: Option<PathBuf>,
}

/// What the registry trusts.
struct Trust {
    bundle: Vec<Vec<u8>>,
    bundle_keys: Vec<PublicKey>,
    jwks: Vec<Json>,
}

fn check_key(config: &Config, reg: &RegistryToken, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    let t = &config.token;
    let mode = crate::build::key_id_mode(t.key_id);
    // The certificate to name in fixes: the chain file, else the one generated beside the key.
    let cert_hint = crate::build::generated_cert_path(config);
    if !t.signing_key_file.exists() {
        let what = if t.generate_key {
            "does not exist yet (purser creates it at its first start)"
        } else {
            "does not exist"
        };
        out.push(Finding::problem(
            "signing key",
            format!("{} {what}, so trust cannot be checked", t.signing_key_file.display()),
            format!(
                "start purser once or run `purser keygen --out {}`, put {} in the registry's rootcertbundle, and run doctor again",
                t.signing_key_file.parent().map(|p| p.display().to_string()).unwrap_or_else(|| ".".into()),
                cert_hint.display()
            ),
        ));
        return out;
    }
    let key = match purser_token::load_signing_key_file(&t.signing_key_file) {
        Ok(k) => k,
        Err(e) => {
            out.push(Finding::problem(
                "signing key",
                e.to_string(),
                "fix token.signing_key_file (purser check-config says more)",
            ));
            return out;
        }
    };
    let public = key.public_key();
    let (chain, cert_file) = if t.certificate_file.as_os_str().is_empty() {
        (Vec::new(), None)
    } else {
        let chain = match std::fs::read_to_string(&t.certificate_file)
            .map_err(|e| e.to_string())
            .and_then(|text| load_cert_chain(&text).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                out.push(Finding::problem(
                    "certificate",
                    format!("token.certificate_file {}: {e}", t.certificate_file.display()),
                    "point token.certificate_file at the PEM certificate of the signing key, or leave it empty",
                ));
                return out;
            }
        };
        (chain, Some(t.certificate_file.clone()))
    };
    let ours = OurKey {
        public,
        mode,
        chain,
        cert_file,
    };
    out.push(Finding::ok(
        "signing key",
        format!(
            "{} key, kid {} ({} mode){}",
            ours.public.alg(),
            purser_token::key_id(&ours.public, mode),
            match mode {
                KeyIdMode::Libtrust => "libtrust",
                KeyIdMode::Thumbprint => "thumbprint",
            },
            if ours.chain.is_empty() {
                String::new()
            } else {
                format!("; tokens carry x5c from {}", t.certificate_file.display())
            }
        ),
    ));

    let trust = match load_trust(reg) {
        Ok(tr) => tr,
        Err(f) => {
            out.push(f);
            return out;
        }
    };

    // Version-dependent checks: for a known version, as they are; for an unknown one, both,
    // and when purser suits one of them, the other's problems are only warnings.
    let versions = match reg.version {
        Some(v) => vec![v],
        None => vec![RegistryVersion::V2, RegistryVersion::V3],
    };
    let per_version: Vec<(RegistryVersion, Vec<Finding>)> = versions
        .iter()
        .map(|v| (*v, version_checks(*v, &ours, &trust, reg, &cert_hint)))
        .collect();
    let unknown = per_version.len() > 1;
    let any_clean = per_version
        .iter()
        .any(|(_, fs)| fs.iter().all(|f| f.status != Status::Problem));
    for (v, findings) in per_version {
        for mut f in findings {
            if unknown {
                f.what = format!("({v}) {}", f.what);
                if any_clean && f.status == Status::Problem {
                    f.status = Status::Warn;
                    f.what = format!("{} — only if the registry is this version", f.what);
                }
            }
            out.push(f);
        }
    }
    out.extend(check_expiry(&ours, &trust, reg, now));
    out
}

fn load_trust(reg: &RegistryToken) -> Result<Trust, Finding> {
    let mut bundle = Vec::new();
    if let Some(path) = &reg.rootcertbundle {
        let text = read_bounded(path).map_err(|e| {
            Finding::problem(
                "rootcertbundle",
                e,
                "point auth.token.rootcertbundle at a PEM file holding purser's certificate",
            )
        })?;
        bundle = load_cert_chain(&text).map_err(|e| {
            Finding::problem(
                "rootcertbundle",
                format!("{}: {e}", path.display()),
                "the bundle must hold PEM CERTIFICATE blocks, e.g. the certificate purser keygen wrote",
            )
        })?;
    }
    let mut bundle_keys = Vec::new();
    for der in &bundle {
        if let Ok(k) = cert_public_key(der) {
            bundle_keys.push(k);
        }
    }
    let mut jwks = Vec::new();
    if let Some(path) = &reg.jwks {
        let text = read_bounded(path).map_err(|e| {
            Finding::problem(
                "jwks",
                e,
                "point auth.token.jwks at a copy of purser's /.well-known/jwks.json",
            )
        })?;
        let doc: Json = serde_json::from_str(&text).map_err(|e| {
            Finding::problem(
                "jwks",
                format!("{} is not JSON: {e}", path.display()),
                "save purser's /.well-known/jwks.json there",
            )
        })?;
        jwks = doc
            .get("keys")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
    }
    if bundle.is_empty() && jwks.is_empty() {
        return Err(Finding::problem(
            "rootcertbundle",
            "the registry trusts no key: neither rootcertbundle nor jwks holds one (the registry refuses to start)",
            "set auth.token.rootcertbundle to purser's certificate",
        ));
    }
    Ok(Trust {
        bundle,
        bundle_keys,
        jwks,
    })
}

/// True when the JWK describes `key` (same type and parameters).
fn jwk_matches(jwk: &Json, key: &PublicKey) -> bool {
    let ours = jwk_of(key, KeyIdMode::Libtrust, &[]);
    ["kty", "crv", "n", "e", "x", "y"]
        .iter()
        .all(|m| jwk.get(*m) == ours.get(*m))
}

fn version_checks(
    v: RegistryVersion,
    ours: &OurKey,
    trust: &Trust,
    reg: &RegistryToken,
    cert_hint: &Path,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let alg = ours.public.alg();
    // Algorithm.
    match v {
        RegistryVersion::V2 => {
            if alg == Alg::EdDsa {
                out.push(Finding::problem(
                    "algorithm",
                    "the signing key is Ed25519 (EdDSA), which registry 2.x cannot verify",
                    "use an RS256, ES256 or ES384 key (`purser keygen --alg es256`), or run registry 3.x",
                ));
            } else {
                out.push(Finding::ok(
                    "algorithm",
                    format!("{alg} is accepted by {v}"),
                ));
            }
            if trust
                .bundle_keys
                .iter()
                .any(|k| matches!(k, PublicKey::Ed25519(_)))
            {
                out.push(Finding::problem(
                    "rootcertbundle",
                    "the bundle holds an Ed25519 certificate, which makes registry 2.x stop at start",
                    "remove the Ed25519 certificate from the bundle, or run registry 3.x",
                ));
            }
        }
        RegistryVersion::V3 => match &reg.signingalgorithms {
            Some(list) if !list.iter().any(|a| a.eq_ignore_ascii_case(alg.as_str())) => {
                out.push(Finding::problem(
                    "algorithm",
                    format!(
                        "the signing key signs {alg}, which is not in the registry's signingalgorithms {list:?}"
                    ),
                    format!("add {alg} to auth.token.signingalgorithms, or use a key of one of those"),
                ));
            }
            _ => out.push(Finding::ok(
                "algorithm",
                format!("{alg} is accepted by {v}"),
            )),
        },
    }

    // Trust: the x5c chain first, which both versions verify against the bundle.
    if !ours.chain.is_empty() {
        let cert_file = ours
            .cert_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let in_bundle = ours.chain.iter().any(|c| trust.bundle.contains(c));
        if in_bundle {
            out.push(Finding::ok(
                "trust",
                format!("tokens carry x5c from {cert_file}, and the rootcertbundle holds a certificate of that chain"),
            ));
        } else {
            out.push(Finding::problem(
                "trust",
                format!(
                    "tokens carry x5c from {cert_file}, but no certificate of that chain is in the registry's rootcertbundle: the registry refuses them (signed by unknown authority)"
                ),
                format!("append {cert_file} (or its CA) to the registry's rootcertbundle, then restart the registry"),
            ));
        }
        return out;
    }

    let kid = purser_token::key_id(&ours.public, ours.mode);
    let bundle_name = reg
        .rootcertbundle
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the rootcertbundle".into());
    let fix_bundle = format!(
        "append {} (purser's certificate) to {bundle_name}, then restart the registry",
        cert_hint.display()
    );
    match v {
        RegistryVersion::V2 => {
            if ours.mode != KeyIdMode::Libtrust {
                out.push(Finding::problem(
                    "key id",
                    format!(
                        "tokens carry a thumbprint kid ({kid}), which registry 2.x never accepts: it looks keys up by libtrust id"
                    ),
                    "set token.key_id: libtrust in purser's config",
                ));
            } else {
                out.push(Finding::ok(
                    "key id",
                    format!("libtrust kid {kid}, as {v} needs"),
                ));
            }
            let want = libtrust_key_id(&ours.public);
            if trust.bundle_keys.iter().any(|k| libtrust_key_id(k) == want) {
                out.push(Finding::ok(
                    "trust",
                    format!("{bundle_name} holds a certificate of purser's signing key (libtrust id {want})"),
                ));
            } else {
                let have: Vec<String> = trust.bundle_keys.iter().map(libtrust_key_id).collect();
                out.push(Finding::problem(
                    "trust",
                    format!(
                        "{bundle_name} holds no certificate of purser's signing key (libtrust id {want}; the bundle has {}): the registry answers \"token signed by untrusted key\"",
                        list_or_none(&have)
                    ),
                    fix_bundle,
                ));
            }
        }
        RegistryVersion::V3 => {
            if ours.mode != KeyIdMode::Thumbprint {
                out.push(Finding::problem(
                    "key id",
                    format!(
                        "tokens carry a libtrust kid ({kid}), which registry 3.x never accepts: it looks keys up by JWK thumbprint"
                    ),
                    "set token.key_id: thumbprint in purser's config",
                ));
            } else {
                out.push(Finding::ok(
                    "key id",
                    format!("thumbprint kid {kid}, as {v} needs"),
                ));
            }
            let thumb = distribution_thumbprint(&ours.public);
            let in_bundle = trust
                .bundle_keys
                .iter()
                .any(|k| distribution_thumbprint(k) == thumb);
            let jwks_exact = trust.jwks.iter().any(|j| {
                j.get("kid").and_then(Json::as_str) == Some(kid.as_str())
                    && jwk_matches(j, &ours.public)
            });
            let jwks_other_kid = trust
                .jwks
                .iter()
                .find(|j| jwk_matches(j, &ours.public))
                .and_then(|j| j.get("kid").and_then(Json::as_str).map(str::to_string));
            if (in_bundle && kid == thumb) || jwks_exact {
                let via = if jwks_exact {
                    "jwks"
                } else {
                    bundle_name.as_str()
                };
                out.push(Finding::ok(
                    "trust",
                    format!("{via} trusts purser's signing key under kid {kid}"),
                ));
            } else if let Some(other) =
                jwks_other_kid.filter(|_| ours.mode == KeyIdMode::Thumbprint)
            {
                out.push(Finding::problem(
                    "trust",
                    format!("the registry's jwks lists purser's key under kid {other}, but tokens carry kid {kid}"),
                    "save purser's /.well-known/jwks.json as the registry's jwks file, then restart the registry",
                ));
            } else if in_bundle {
                // The key is trusted, the kid is wrong: the "key id" finding says what to do.
                out.push(Finding::ok(
                    "trust",
                    format!("{bundle_name} holds purser's certificate (thumbprint {thumb})"),
                ));
            } else {
                let have: Vec<String> =
                    trust
                        .bundle_keys
                        .iter()
                        .map(distribution_thumbprint)
                        .chain(trust.jwks.iter().filter_map(|j| {
                            j.get("kid").and_then(Json::as_str).map(str::to_string)
                        }))
                        .collect();
                out.push(Finding::problem(
                    "trust",
                    format!(
                        "neither the rootcertbundle nor the jwks holds purser's signing key (thumbprint {thumb}; trusted: {}): the registry answers \"token signed by untrusted key\"",
                        list_or_none(&have)
                    ),
                    format!("{fix_bundle}; or save purser's /.well-known/jwks.json as the registry's jwks file"),
                ));
            }
        }
    }
    out
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn check_expiry(
    ours: &OurKey,
    trust: &Trust,
    reg: &RegistryToken,
    now: SystemTime,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let describe = |t: SystemTime| -> String {
        let dt = time::OffsetDateTime::from(t);
        dt.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| format!("{dt}"))
    };
    let file = ours
        .cert_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for (i, der) in ours.chain.iter().enumerate() {
        let Ok(end) = cert_not_after(der) else {
            continue;
        };
        let which = format!("certificate {} of {file}", i + 1);
        if end <= now {
            out.push(Finding::problem(
                "certificate expiry",
                format!("{which} expired on {}: the registry refuses tokens whose x5c holds it", describe(end)),
                "issue a new certificate for the signing key (or `purser keygen` a new key and certificate), update token.certificate_file and the registry's rootcertbundle",
            ));
        } else if end.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
            out.push(Finding::warn(
                "certificate expiry",
                format!("{which} expires on {}", describe(end)),
                "renew it before then and update token.certificate_file and the rootcertbundle",
            ));
        }
    }
    let bundle_name = reg
        .rootcertbundle
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let ours_in_bundle = |der: &Vec<u8>| {
        cert_public_key(der).is_ok_and(|k| k == ours.public) || ours.chain.contains(der)
    };
    for (i, der) in trust.bundle.iter().enumerate() {
        let Ok(end) = cert_not_after(der) else {
            continue;
        };
        let which = format!("certificate {} of {bundle_name}", i + 1);
        let relevant = ours_in_bundle(der);
        if end <= now {
            if relevant && !ours.chain.is_empty() {
                out.push(Finding::problem(
                    "certificate expiry",
                    format!(
                        "{which} (purser's) expired on {}: x5c chains ending in it are refused",
                        describe(end)
                    ),
                    "replace it in the bundle with a current certificate of the signing key",
                ));
            } else {
                out.push(Finding::warn(
                    "certificate expiry",
                    format!(
                        "{which}{} expired on {}; the registry still trusts its key by key id, but tools and future versions may not",
                        if relevant { " (purser's)" } else { "" },
                        describe(end)
                    ),
                    "replace it with a current certificate",
                ));
            }
        } else if relevant && end.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
            out.push(Finding::warn(
                "certificate expiry",
                format!("{which} (purser's) expires on {}", describe(end)),
                "renew it before then",
            ));
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "certificate expiry",
            "no certificate in use expires within 30 days",
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Online checks

/// An HTTP response, as much as the doctor needs.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One plain-HTTP/1.1 GET with optional `Authorization`, bounded in time and size.
pub fn http_get(url: &str, authorization: Option<&str>) -> Result<Response, String> {
    let u = SimpleUrl::parse(url).ok_or_else(|| format!("{url:?} is not an http URL"))?;
    if u.scheme != "http" {
        return Err(format!(
            "{url} uses https, which doctor does not speak; check it with curl"
        ));
    }
    let addr = u
        .authority()
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", u.authority()))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", u.authority()))?;
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .map_err(|e| format!("cannot connect to {}: {e}", u.authority()))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let target = if u.query.is_empty() {
        u.path.clone()
    } else {
        format!("{}?{}", u.path, u.query)
    };
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: purser-doctor\r\nAccept: application/json\r\nConnection: close\r\n",
        u.authority()
    );
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("cannot send to {}: {e}", u.authority()))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("no answer from {}: {e}", u.authority()))?;
    parse_response(&raw)
        .ok_or_else(|| format!("{} answered something that is not HTTP", u.authority()))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Some(Response { body, ..resp })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..)?;
    }
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` challenge, keys lower-cased.
pub fn parse_bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(' ').unwrap_or((rest, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = BTreeMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end?..])
        } else {
            let i = after.find(',').unwrap_or(after.len());
            (after[..i].trim().to_string(), &after[i..])
        };
        out.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// Parses an HTTP `Date` header (IMF-fixdate).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let fmt = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()
        .map(|dt| dt.assume_utc().into())
}

fn signed_secs(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn online_checks(
    config: &Config,
    reg: &RegistryToken,
    registry_url: &str,
    user: Option<&UserPassword>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let base = registry_url.trim_end_matches('/');
    let v2 = format!("{base}/v2/");
    let first = match http_get(&v2, None) {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::problem(
                "registry",
                format!("GET {v2}: {e}"),
                "check --registry and that the registry is running",
            ));
            return out;
        }
    };
    let local_now = SystemTime::now();

    // The challenge.
    let challenge = first
        .header("www-authenticate")
        .and_then(parse_bearer_challenge);
    let challenge = match (first.status, challenge) {
        (401, Some(c)) => {
            out.push(Finding::ok(
                "challenge",
                format!(
                    "GET /v2/ answers 401 with a Bearer challenge (realm {:?}, service {:?})",
                    c.get("realm").cloned().unwrap_or_default(),
                    c.get("service").cloned().unwrap_or_default()
                ),
            ));
            c
        }
        (status, _) => {
            let (what, fix) = if status == 200 {
                (
                    "GET /v2/ answers 200 without credentials: the running registry does not use token auth".to_string(),
                    "start the registry with the config given to --registry-config (auth.token)".to_string(),
                )
            } else {
                (
                    format!(
                        "GET /v2/ answers {status} {}",
                        first
                            .header("www-authenticate")
                            .unwrap_or("without a Bearer challenge")
                    ),
                    "start the registry with token auth (auth.token in its config)".to_string(),
                )
            };
            out.push(Finding::problem("challenge", what, fix));
            return out;
        }
    };
    let realm = challenge.get("realm").cloned().unwrap_or_default();
    let service = challenge.get("service").cloned().unwrap_or_default();
    if !reg.autoredirect {
        if let Some(cfg_realm) = &reg.realm {
            if *cfg_realm != realm {
                out.push(Finding::warn(
                    "challenge",
                    format!("the running registry announces realm {realm:?}, its config file says {cfg_realm:?}"),
                    "check that the registry runs with the config (and environment) given to doctor",
                ));
            }
        }
    }
    if let Some(cfg_service) = &reg.service {
        if *cfg_service != service {
            out.push(Finding::warn(
                "challenge",
                format!("the running registry announces service {service:?}, its config file says {cfg_service:?}"),
                "check that the registry runs with the config (and environment) given to doctor",
            ));
        }
    }
    if !config.token.service.to_vec().contains(&service) {
        out.push(Finding::problem(
            "challenge",
            format!(
                "the running registry announces service {service:?}, not among purser's token.service"
            ),
            format!("add {service:?} to token.service"),
        ));
    }

    // The token endpoint, anonymously: reachable, and its clock.
    let realm_sep = if realm.contains('?') { '&' } else { '?' };
    let token_url = format!(
        "{realm}{realm_sep}{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("service", &service)
            .finish()
    );
    let purser_date = match http_get(&token_url, None) {
        Ok(r) if matches!(r.status, 200 | 401) => {
            out.push(Finding::ok(
                "realm reachable",
                format!("{realm} answers ({})", r.status),
            ));
            r.header("date").and_then(parse_http_date)
        }
        Ok(r) => {
            out.push(Finding::problem(
                "realm reachable",
                format!(
                    "{realm} answers {} to a token request: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                ),
                "point auth.token.realm at purser's token path",
            ));
            None
        }
        Err(e) => {
            out.push(Finding::problem(
                "realm reachable",
                format!("{realm}: {e}"),
                "start purser, or point auth.token.realm at where it listens",
            ));
            None
        }
    };

    // Clock skew: the registry's clock against purser's (or this machine's).
    match first.header("date").and_then(parse_http_date) {
        Some(reg_date) => {
            let (other, whose) = match purser_date {
                Some(d) => (d, "purser's"),
                None => (local_now, "this machine's"),
            };
            let skew = signed_secs(reg_date, other);
            let abs = skew.unsigned_abs();
            // The Date header has one-second resolution, so a second of difference is noise.
            if abs + 1 >= REGISTRY_LEEWAY.as_secs() {
                out.push(Finding::problem(
                    "clock",
                    format!("the registry's clock is {skew:+} s from {whose}, beyond its 60 s leeway: tokens look expired or not yet valid"),
                    "synchronise both clocks (NTP)",
                ));
            } else if abs >= 10 {
                out.push(Finding::warn(
                    "clock",
                    format!("the registry's clock is {skew:+} s from {whose} (leeway 60 s)"),
                    "synchronise both clocks (NTP)",
                ));
            } else {
                out.push(Finding::ok(
                    "clock",
                    format!("the registry's clock is within {abs} s of {whose}"),
                ));
            }
        }
        None => out.push(Finding::warn(
            "clock",
            "the registry sent no Date header; clock skew not checked",
            "",
        )),
    }

    let Some(user) = user else {
        out.push(Finding::warn(
            "round trip",
            "not tried: give --user USER:PASSWORD to get a token and use it once",
            "",
        ));
        return out;
    };

    // The token.
    let token_url = format!(
        "{realm}{realm_sep}{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("service", &service)
            .append_pair("account", &user.user)
            .finish()
    );
    let basic = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{}:{}", user.user, user.password).as_bytes())
    );
    let token = match http_get(&token_url, Some(&basic)) {
        Ok(r) if r.status == 200 => {
            let body: Json = serde_json::from_slice(&r.body).unwrap_or(Json::Null);
            match body
                .get("token")
                .or_else(|| body.get("access_token"))
                .and_then(Json::as_str)
            {
                Some(t) if !t.is_empty() => t.to_string(),
                _ => {
                    out.push(Finding::problem(
                        "round trip",
                        format!("{realm} answered 200 without a token: it is not a token server"),
                        "point auth.token.realm at purser's token path",
                    ));
                    return out;
                }
            }
        }
        Ok(r) => {
            let msg = error_message(&r.body);
            let (what, fix) = match r.status {
                401 => (
                    format!(
                        "purser refused the credentials of {:?} (401: {msg})",
                        user.user
                    ),
                    "check the user and password given to --user (and purser's authn backends)"
                        .to_string(),
                ),
                400 => (
                    format!("purser refused the token request (400: {msg})"),
                    "make the registry's service one of purser's token.service".to_string(),
                ),
                s => (
                    format!("the token request failed ({s}: {msg})"),
                    "look at purser's log".to_string(),
                ),
            };
            out.push(Finding::problem("round trip", what, fix));
            return out;
        }
        Err(e) => {
            out.push(Finding::problem(
                "round trip",
                format!("token request to {realm}: {e}"),
                "start purser, or point auth.token.realm at it",
            ));
            return out;
        }
    };

    // The token used once.
    match http_get(&v2, Some(&format!("Bearer {token}"))) {
        Ok(r) if r.status == 200 => out.push(Finding::ok(
            "round trip",
            format!(
                "challenge -> token for {:?} from {realm} -> GET /v2/ with it: 200",
                user.user
            ),
        )),
        Ok(r) if r.status == 401 => {
            let detail = r
                .header("www-authenticate")
                .and_then(parse_bearer_challenge)
                .and_then(|c| c.get("error").cloned())
                .unwrap_or_default();
            let header = token_header(&token);
            out.push(Finding::problem(
                "round trip",
                format!(
                    "the registry refused the token purser issued (401{}; token alg {}, kid {})",
                    if detail.is_empty() { String::new() } else { format!(" {detail}") },
                    header.get("alg").and_then(Json::as_str).unwrap_or("?"),
                    header.get("kid").and_then(Json::as_str).unwrap_or("?"),
                ),
                "check rootcertbundle trusts the key: it must hold purser's certificate, with token.key_id libtrust for registry 2.x or thumbprint for 3.x; the registry's log names the reason",
            ));
        }
        Ok(r) => out.push(Finding::problem(
            "round trip",
            format!("GET /v2/ with the token answered {}", r.status),
            "look at the registry's log",
        )),
        Err(e) => out.push(Finding::problem(
            "round trip",
            format!("GET {v2} with the token: {e}"),
            "check that the registry is running",
        )),
    }
    out
}

fn error_message(body: &[u8]) -> String {
    let v: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let msg = v["errors"][0]["message"]
        .as_str()
        .or_else(|| v["error_description"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    msg.chars().take(300).collect()
}

fn token_header(token: &str) -> Json {
    token
        .split('.')
        .next()
        .and_then(|h| data_encoding::BASE64URL_NOPAD.decode(h.as_bytes()).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OneOrMany;

    #[test]
    fn env_files_read_like_docker_and_systemd() {
        let text = "# comment\n\nexport REGISTRY_AUTH_TOKEN_ISSUER=\"iss\"\nREGISTRY_AUTH_TOKEN_SERVICE='svc'\n  REGISTRY_HTTP_ADDR = 0.0.0.0:5000\nnot a pair\n";
        assert_eq!(
            parse_env_file(text),
            vec![
                ("REGISTRY_AUTH_TOKEN_ISSUER".to_string(), "iss".to_string()),
                ("REGISTRY_AUTH_TOKEN_SERVICE".to_string(), "svc".to_string()),
                ("REGISTRY_HTTP_ADDR".to_string(), "0.0.0.0:5000".to_string()),
            ]
        );
    }

    #[test]
    fn registry_config_with_env_overrides_and_version_hint() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            "version: 0.1\nhttp:\n  addr: :5000\nauth:\n  token:\n    realm: http://a/token\n    service: s\n    issuer: i\n    rootcertbundle: certs/bundle.pem\n",
        )
        .unwrap();
        let r = read_registry_config(&cfg, None).unwrap();
        assert!(r.present);
        assert_eq!(r.version, None);
        assert_eq!(r.issuer.as_deref(), Some("i"));
        assert_eq!(r.rootcertbundle, Some(dir.path().join("certs/bundle.pem")));
        assert_eq!(r.http_addr.as_deref(), Some(":5000"));

        let env = dir.path().join("env");
        std::fs::write(
            &env,
            "REGISTRY_AUTH_TOKEN_ISSUER=other\nREGISTRY_AUTH_TOKEN_SIGNINGALGORITHMS=[ES256, RS256]\nREGISTRY_AUTH_TOKEN_AUTOREDIRECT=true\n",
        )
        .unwrap();
        let r = read_registry_config(&cfg, Some(&env)).unwrap();
        assert_eq!(r.issuer.as_deref(), Some("other"));
        assert_eq!(r.version, Some(RegistryVersion::V3));
        assert_eq!(
            r.signingalgorithms,
            Some(vec!["ES256".to_string(), "RS256".to_string()])
        );
        assert!(r.autoredirect);
    }

    #[test]
    fn missing_token_block_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            "version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: /x\n",
        )
        .unwrap();
        let r = read_registry_config(&cfg, None).unwrap();
        let f = offline_checks(&Config::default(), &r, SystemTime::now());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].status, Status::Problem);
        assert!(f[0].what.contains("auth.htpasswd"), "{}", f[0]);
    }

    #[test]
    fn urls_parse_with_ports_paths_and_ipv6() {
        let u = SimpleUrl::parse("http://127.0.0.1:5001/token?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.query.as_str()),
            ("127.0.0.1", 5001, "/token", "x=1")
        );
        let u = SimpleUrl::parse("https://Auth.Example.org").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("auth.example.org", 443, "/")
        );
        let u = SimpleUrl::parse("http://[::1]:8080/auth/token").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.authority(), "[::1]:8080");
        assert!(SimpleUrl::parse("ftp://x/").is_none());
        assert!(SimpleUrl::parse("http://x:notaport/").is_none());
    }

    #[test]
    fn bearer_challenges_parse_with_quotes_and_commas() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg, one",scope="repository:a:pull",error="invalid_token""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "http://127.0.0.1:1/token");
        assert_eq!(c["service"], "reg, one");
        assert_eq!(c["error"], "invalid_token");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(parse_http_date("yesterday").is_none());
    }

    #[test]
    fn chunked_and_sized_responses_parse() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
        let r = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nDate: x\r\n\r\nhiextra",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("date")),
            (401, &b"hi"[..], Some("x"))
        );
    }

    /// purser's config with a key (and its certificate) written under `dir`.
    fn setup(dir: &Path, alg: Alg) -> (Config, PathBuf) {
        let files = purser_token::write_generated(dir, alg).unwrap();
        let mut c = Config::default();
        c.token.issuer = "iss".into();
        c.token.service = OneOrMany::Many(vec!["svc".into()]);
        c.token.signing_key_file = files.key.clone();
        c.token.generate_key = false;
        c.server.listen = "127.0.0.1:5001".into();
        (c, files.cert)
    }

    fn registry(bundle: &Path) -> RegistryToken {
        RegistryToken {
            realm: Some("http://127.0.0.1:5001/token".into()),
            service: Some("svc".into()),
            issuer: Some("iss".into()),
            rootcertbundle: Some(bundle.to_path_buf()),
            present: true,
            ..RegistryToken::default()
        }
    }

    fn problems(f: &[Finding]) -> Vec<String> {
        f.iter()
            .filter(|x| x.status == Status::Problem)
            .map(|x| x.to_string())
            .collect()
    }

    #[test]
    fn matching_configs_pass_and_unknown_version_only_warns_for_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let (c, cert) = setup(dir.path(), Alg::Es256);
        let f = offline_checks(&c, &registry(&cert), SystemTime::now());
        assert!(problems(&f).is_empty(), "{f:#?}");
        assert!(
            f.iter().any(|x| x.status == Status::Warn
                && x.what.contains("(registry 3.x)")
                && x.check == "key id"),
            "{f:#?}"
        );
    }

    #[test]
    fn v3_config_with_libtrust_kid_is_a_problem_and_jwks_trust_works() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, cert) = setup(dir.path(), Alg::Es256);
        let mut r = registry(&cert);
        r.version = Some(RegistryVersion::V3);
        let f = offline_checks(&c, &r, SystemTime::now());
        let p = problems(&f);
        assert_eq!(p.len(), 1, "{f:#?}");
        assert!(p[0].contains("token.key_id: thumbprint"), "{}", p[0]);

        c.token.key_id = KeyIdConfig::Thumbprint;
        assert!(problems(&offline_checks(&c, &r, SystemTime::now())).is_empty());

        // A jwks file instead of the bundle, with purser's JWK.
        let key = purser_token::load_signing_key_file(&c.token.signing_key_file).unwrap();
        let jwk = jwk_of(&key.public_key(), KeyIdMode::Thumbprint, &[]);
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::json!({ "keys": [jwk.clone()] }).to_string(),
        )
        .unwrap();
        r.rootcertbundle = None;
        r.jwks = Some(jwks.clone());
        assert!(problems(&offline_checks(&c, &r, SystemTime::now())).is_empty());
        // The same key under another kid.
        let mut other = jwk;
        other["kid"] = "something-else".into();
        std::fs::write(&jwks, serde_json::json!({ "keys": [other] }).to_string()).unwrap();
        let p = problems(&offline_checks(&c, &r, SystemTime::now()));
        assert!(
            p.iter().any(|x| x.contains("under kid something-else")),
            "{p:?}"
        );
    }

    #[test]
    fn signing_algorithms_restrict_v3() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, cert) = setup(dir.path(), Alg::Es256);
        c.token.key_id = KeyIdConfig::Thumbprint;
        let mut r = registry(&cert);
        r.version = Some(RegistryVersion::V3);
        r.signingalgorithms = Some(vec!["RS256".into()]);
        let p = problems(&offline_checks(&c, &r, SystemTime::now()));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("add ES256 to auth.token.signingalgorithms"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn realm_checks() {
        let dir = tempfile::tempdir().unwrap();
        let (c, cert) = setup(dir.path(), Alg::Es256);
        let mut r = registry(&cert);
        for (realm, status) in [
            ("http://127.0.0.1:5001/auth/token", Status::Warn),
            ("http://localhost:5001/token", Status::Warn),
            ("http://127.0.0.1:5002/token", Status::Problem),
            ("http://127.0.0.1:5001/other", Status::Problem),
            ("https://127.0.0.1:5001/token", Status::Problem),
            ("http://auth.example.org/token", Status::Warn),
            ("nonsense", Status::Problem),
        ] {
            r.realm = Some(realm.into());
            let f = check_realm(&c, &r);
            let worst = f.iter().map(|x| x.status).max_by_key(|s| *s as u8);
            assert_eq!(worst, Some(status), "{realm}: {f:#?}");
        }
        r.autoredirect = true;
        assert_eq!(check_realm(&c, &r)[0].status, Status::Warn);
        r.autoredirectpath = Some("/elsewhere".into());
        assert_eq!(check_realm(&c, &r)[0].status, Status::Problem);
    }

    #[test]
    fn missing_key_is_named_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, cert) = setup(dir.path(), Alg::Es256);
        c.token.signing_key_file = dir.path().join("nope.pem");
        c.token.generate_key = true;
        let p = problems(&offline_checks(&c, &registry(&cert), SystemTime::now()));
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("first start"), "{}", p[0]);
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        let u = UserPassword::parse("alice:s3cr:et").unwrap();
        assert_eq!(u.password, "s3cr:et");
        let o = DoctorOptions {
            user: Some(u),
            ..DoctorOptions::offline("x".into())
        };
        let d = format!("{o:?}");
        assert!(d.contains("alice") && !d.contains("s3cr"), "{d}");
        assert!(UserPassword::parse("nocolon").is_none());
    }
}
