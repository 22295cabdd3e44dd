//! The `ldap` backend: passwords checked by binding to a directory (OpenLDAP, 389-ds, Active
//! Directory), groups read from it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use purser_authn::ldap::{LdapAuthenticator, LdapSettings};
//! use purser_core::{Authenticator, Credentials, Password};
//!
//! let ldap = LdapAuthenticator::new(LdapSettings {
//!     urls: vec!["ldap://127.0.0.1:389".into()],
//!     bind_dn: "cn=purser,ou=services,dc=example,dc=org".into(),
//!     bind_password: Password::new("service secret"),
//!     user_base: "ou=people,dc=example,dc=org".into(),
//!     group_base: "ou=groups,dc=example,dc=org".into(),
//!     ..LdapSettings::default()
//! })?;
//! let outcome = ldap.authenticate(&Credentials::new("alice", "her password")).await?;
//! # Ok(()) }
//! ```
//!
//! Two ways to find the user:
//! - **search-then-bind** (`bind_dn` + `user_base`): a pooled connection bound as the service
//!   account searches `user_base` with `user_filter`; exactly one entry must match (none: unknown
//!   user; several: rejected, with a warning, as the filter is ambiguous). A separate,
//!   short-lived connection then binds as that entry with the password.
//! - **direct bind** (`user_dn`): the DN is the template with the escaped user name; a failed
//!   bind cannot tell an unknown user from a wrong password, so both answer `Rejected`.
//!
//! The account is the directory's, not the name typed: a directory matches `ALICE`, ` alice` or
//! other spellings to the entry `uid=alice`, so the user's name is the value of
//! `account_attribute` (`uid`; `sAMAccountName` for Active Directory) read from the entry
//! itself: requested with the user search, or read as the user right after a direct bind. The
//! identity, the group filter's `{username}` and `lookup` all use it; a rejected password names it
//! too when the entry was found, so that failed logins count against the account. When it cannot
//! be read (absent, several values, unreadable entry) the login is refused and the reason logged:
//! falling back to the name typed would reopen the hole, and the DN's RDN is no better (in direct
//! bind it is the name typed).
//!
//! `labels` (label name -> attribute) are requested with that same read of the entry: each
//! label is its attribute's first value, bounded to [`MAX_LABEL_VALUE`] bytes, and an entry
//! without the attribute gets no such label, so that a policy rule naming it does not match.
//!
//! Pooled connections are never bound as a user: user binds always use their own connection,
//! closed (unbind) right after. Their number is bounded by `pool_size` too.
//!
//! The directory being unreachable, slow (beyond `timeout`) or failing is an
//! `Err(BackendError::Unavailable)`, answered with 503 by the server, never a 401.

mod conn;
pub mod diagnose;
mod error;
pub mod escape;
mod pool;
mod refusal;
mod tls;

pub use self::pool::PoolStats;
pub use self::refusal::BindRefusal;
pub use self::tls::TlsReport;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ldap3::{Ldap, Scope, SearchEntry, SearchOptions};
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity, Password,
};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use self::conn::Connector;
use self::error::{DirectoryError, NoAccount, Op};
use self::escape::{dn_value, fill, filter_value};
use self::pool::Pool;
use self::tls::Trust;

const BACKEND: BackendName = "ldap";

/// User names longer than this (in bytes) are refused without asking the directory.
pub const MAX_USERNAME_LEN: usize = 256;
/// Passwords longer than this (in bytes) are refused without asking the directory.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Most groups read for one user; the rest are dropped with a warning.
const MAX_GROUPS: i32 = 1000;
/// Most labels (`labels`) read from a user's entry.
pub const MAX_LABELS: usize = 32;
/// Longest label value kept (in bytes); a longer attribute value is cut at a character
/// boundary, so that one entry cannot fill every token and audit record.
pub const MAX_LABEL_VALUE: usize = 256;

/// The `authn.ldap` settings, with secrets already resolved (`bind_password_file` read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapSettings {
    /// Tried in order until one answers; `ldap://` or `ldaps://`.
    pub urls: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS.
    pub start_tls: bool,
    /// PEM file of the CA(s) to trust for the directory's certificate, or of the directory's
    /// own certificate; empty: system roots.
    pub ca_file: PathBuf,
    /// The name the directory's certificate is checked against; empty: the URL's host.
    pub tls_server_name: String,
    /// Service account for search-then-bind (and for groups and lookups); empty: direct bind.
    pub bind_dn: String,
    pub bind_password: Password,
    /// Direct bind DN template with `{username}`.
    pub user_dn: String,
    /// Where users are searched.
    pub user_base: String,
    /// User search filter with `{username}`.
    pub user_filter: String,
    /// Where groups are searched; empty: no groups.
    pub group_base: String,
    /// Group filter with `{dn}` (the user's DN) and `{username}`.
    pub group_filter: String,
    /// The attribute naming a group.
    pub group_name_attribute: String,
    /// The attribute of the user's entry holding the account name (single-valued).
    pub account_attribute: String,
    /// Labels for the policy (`match: { labels: ... }`, `${labels.KEY}`) and the audit record:
    /// label name -> attribute of the user's entry, whose first value becomes the label.
    pub labels: BTreeMap<String, String>,
    /// Bound on each directory operation: connect, bind, search.
    pub timeout: Duration,
    /// Connections bound as the service account kept open at most; also the bound on
    /// simultaneous user binds.
    pub pool_size: usize,
}

impl Default for LdapSettings {
    /// The contract's defaults.
    fn default() -> Self {
        LdapSettings {
            urls: vec!["ldap://127.0.0.1:389".into()],
            start_tls: false,
            ca_file: PathBuf::new(),
            tls_server_name: String::new(),
            bind_dn: String::new(),
            bind_password: Password::new(""),
            user_dn: String::new(),
            user_base: String::new(),
            user_filter: "(uid={username})".into(),
            group_base: String::new(),
            group_filter: "(member={dn})".into(),
            group_name_attribute: "cn".into(),
            account_attribute: "uid".into(),
            labels: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            pool_size: 8,
        }
    }
}

/// One thing wrong with the settings, named by its key under `authn.ldap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingProblem {
    /// The key under `authn.ldap`, e.g. `urls`.
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "authn.ldap.{}: {}", self.key, self.message)
    }
}

/// Why an [`LdapAuthenticator`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LdapError {
    /// Every problem found in the settings, at once.
    #[error("{}", join(.0))]
    Settings(Vec<SettingProblem>),
}

fn join(problems: &[SettingProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl LdapSettings {
    /// Every problem that can be found without contacting the directory (for `check-config`).
    /// Reads `ca_file`.
    pub fn validate(&self) -> Vec<SettingProblem> {
        self.check().0
    }

    /// Whether a connection uses TLS (an `ldaps://` URL, or StartTLS).
    fn uses_tls(&self) -> bool {
        self.start_tls || self.urls.iter().any(|u| u.starts_with("ldaps://"))
    }

    fn check(&self) -> (Vec<SettingProblem>, Option<Arc<Trust>>) {
        let mut problems = Vec::new();
        let mut problem = |key, message: String| problems.push(SettingProblem { key, message });

        if self.urls.is_empty() {
            problem(
                "urls",
                "at least one URL is needed, e.g. ldap://ldap.example.org:389".into(),
            );
        }
        for u in &self.urls {
            match url::Url::parse(u) {
                Err(e) => problem("urls", format!("{u:?} is not a URL: {e}")),
                Ok(parsed) if !matches!(parsed.scheme(), "ldap" | "ldaps") => problem(
                    "urls",
                    format!("{u:?}: the scheme must be ldap:// or ldaps://"),
                ),
                Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
                    problem("urls", format!("{u:?} names no host"))
                }
                Ok(_) => {}
            }
        }

        let name_ok =
            self.tls_server_name.is_empty() || tls::server_name_of(&self.tls_server_name).is_some();
        if !name_ok {
            problem(
                "tls_server_name",
                format!(
                    "{:?} is neither a DNS name nor an IP address, e.g. dc1.example.org",
                    self.tls_server_name
                ),
            );
        }
        let tls = if (self.uses_tls() || !self.ca_file.as_os_str().is_empty()) && name_ok {
            match Trust::new(&self.ca_file, &self.tls_server_name) {
                Ok(trust) => Some(Arc::new(trust)),
                Err(e) => {
                    problem("ca_file", e.to_string());
                    None
                }
            }
        } else {
            None
        };

        let service = !self.bind_dn.is_empty();
        if service && self.bind_password.is_empty() {
            problem(
                "bind_password",
                "is empty while bind_dn is set: give the service account's password (or bind_password_file)".into(),
            );
        }
        if !self.user_dn.is_empty() {
            if !self.user_dn.contains("{username}") {
                problem(
                    "user_dn",
                    "must contain {username}, e.g. uid={username},ou=people,dc=example,dc=org"
                        .into(),
                );
            }
            // A bind name that is no DN (Active Directory's user@domain or DOMAIN\user) cannot
            // be read as an entry: the entry is then found under user_base after the bind.
            if !is_dn_template(&self.user_dn) {
                if self.user_base.is_empty() {
                    problem(
                        "user_base",
                        format!("is needed when user_dn ({:?}) is not a DN: the user's entry (its DN and groups) is searched there after the bind, e.g. cn=Users,dc=example,dc=org", self.user_dn),
                    );
                }
                check_filter(
                    &mut problem,
                    "user_filter",
                    &self.user_filter,
                    &["username"],
                );
            }
        } else if !service {
            problem(
                "bind_dn",
                "set user_dn (direct bind) or bind_dn, bind_password and user_base (search-then-bind)".into(),
            );
        } else {
            if self.user_base.is_empty() {
                problem(
                    "user_base",
                    "is needed for search-then-bind (bind_dn is set and user_dn is not)".into(),
                );
            }
            check_filter(
                &mut problem,
                "user_filter",
                &self.user_filter,
                &["username"],
            );
        }
        if !self.group_base.is_empty() {
            check_filter(
                &mut problem,
                "group_filter",
                &self.group_filter,
                &["dn", "username"],
            );
            if !is_attribute_name(&self.group_name_attribute) {
                problem(
                    "group_name_attribute",
                    format!("{:?} is not an attribute name", self.group_name_attribute),
                );
            }
        }
        if !is_attribute_name(&self.account_attribute) {
            problem(
                "account_attribute",
                format!(
                    "{:?} is not an attribute name, e.g. uid (sAMAccountName for Active Directory)",
                    self.account_attribute
                ),
            );
        }
        for (label, attribute) in &self.labels {
            if !purser_core::is_label_name(label) {
                problem(
                    "labels",
                    format!("{label:?} is not a label name: letters, digits, _ and -, at most {} characters", purser_core::MAX_LABEL_NAME),
                );
            }
            if !is_attribute_name(attribute) {
                problem(
                    "labels",
                    format!(
                        "{label}: {attribute:?} is not an attribute name, e.g. departmentNumber"
                    ),
                );
            }
        }
        if self.labels.len() > MAX_LABELS {
            problem(
                "labels",
                format!("{} labels: at most {MAX_LABELS}", self.labels.len()),
            );
        }
        if self.timeout.is_zero() {
            problem("timeout", "must be more than 0s".into());
        }
        if self.pool_size == 0 || self.pool_size > 1024 {
            problem(
                "pool_size",
                format!("{} is out of range: 1 to 1024", self.pool_size),
            );
        }
        (problems, tls)
    }
}

/// Whether a `user_dn` template names an entry (`uid={username},ou=people,...`) rather than
/// an Active Directory bind name (`{username}@example.org`, `EXAMPLE\\{username}`).
fn is_dn_template(template: &str) -> bool {
    template.contains('=')
}

/// An attribute description (RFC 4512 section 2.5): a name or an OID, options after `;`.
pub fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.split(';').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
}

/// `value` cut to at most [`MAX_LABEL_VALUE`] bytes, at a character boundary.
fn bounded_label(mut value: String) -> String {
    if value.len() > MAX_LABEL_VALUE {
        let mut end = MAX_LABEL_VALUE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

fn check_filter(
    problem: &mut impl FnMut(&'static str, String),
    key: &'static str,
    template: &str,
    placeholders: &[&str],
) {
    if !placeholders
        .iter()
        .any(|p| template.contains(&format!("{{{p}}}")))
    {
        let names: Vec<String> = placeholders.iter().map(|p| format!("{{{p}}}")).collect();
        problem(
            key,
            format!("{template:?} must contain {}", names.join(" or ")),
        );
        return;
    }
    let sample: Vec<(&str, &str)> = placeholders.iter().map(|p| (*p, "x")).collect();
    if ldap3::parse_filter(fill(template, &sample)).is_err() {
        problem(
            key,
            format!("{template:?} is not an LDAP filter (RFC 4515), e.g. (uid={{username}})"),
        );
    }
}

/// How long a readiness answer is reused before the directory is asked again: `/readyz` turns
/// 503 within this (plus the probe's `timeout`) of the directory going down, and back to 200 as
/// soon after its return, without waiting for a login, while a balancer polling `/readyz` many
/// times a second costs the directory one round trip per interval.
pub const READY_PROBE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
enum Health {
    Unknown,
    /// The directory answered (a probe, or a login that reached it) at this time.
    Up(Instant),
    /// The directory could not be reached at this time, for this reason.
    Down(Instant, String),
}

/// What the user search found.
enum Found {
    None,
    One(UserEntry),
    Many(usize),
}

/// A user's entry: its DN as the directory gave it, and its account (the value of
/// `account_attribute`) or why there is none.
struct UserEntry {
    dn: String,
    account: Result<String, NoAccount>,
    /// How many `memberOf` values the entry has (Active Directory, OpenLDAP's memberof
    /// overlay): groups the group search should then find.
    member_of: usize,
    /// The labels found: the first value of each label's attribute, bounded; an attribute
    /// the entry lacks (or the reader may not see) leaves its label out.
    labels: BTreeMap<String, String>,
}

/// The attribute that lists an entry's groups where the directory keeps one.
const MEMBER_OF: &str = "memberOf";

/// Checks passwords against a directory; see the module documentation.
pub struct LdapAuthenticator {
    connector: Connector,
    /// Present when a service account is configured.
    pool: Option<Pool>,
    /// Search-then-bind (`user_dn` empty) or direct bind.
    search_mode: bool,
    user_dn: String,
    user_base: String,
    user_filter: String,
    group_base: String,
    group_filter: String,
    group_name_attribute: String,
    account_attribute: String,
    /// Label name -> attribute, read with the user's entry.
    labels: BTreeMap<String, String>,
    timeout: Duration,
    user_binds: Semaphore,
    health: Mutex<Health>,
    /// Held while a readiness probe runs, so that concurrent `/readyz` calls share one probe.
    probing: tokio::sync::Mutex<()>,
    /// Smoothed duration of answers that needed the directory, in nanoseconds: refusals made
    /// without it wait as long, so they cannot be told apart by timing.
    typical_nanos: AtomicU64,
}

impl fmt::Debug for LdapAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapAuthenticator")
            .field("search_mode", &self.search_mode)
            .field("pool", &self.pool_stats())
            .finish_non_exhaustive()
    }
}

impl LdapAuthenticator {
    /// Validates the settings and prepares the backend, without contacting the directory (it
    /// may be down at start: `ready()` says so and logins answer "unavailable" until it is back).
    pub fn new(settings: LdapSettings) -> Result<Self, LdapError> {
        let (problems, tls) = settings.check();
        if !problems.is_empty() {
            return Err(LdapError::Settings(problems));
        }
        let connector = Connector::new(
            settings.urls.clone(),
            settings.start_tls,
            tls,
            settings.timeout,
        );
        let pool = (!settings.bind_dn.is_empty()).then(|| {
            Pool::new(
                settings.bind_dn.clone(),
                settings.bind_password.clone(),
                settings.pool_size,
                settings.timeout,
            )
        });
        Ok(LdapAuthenticator {
            connector,
            pool,
            search_mode: settings.user_dn.is_empty(),
            user_dn: settings.user_dn,
            user_base: settings.user_base,
            user_filter: settings.user_filter,
            group_base: settings.group_base,
            group_filter: settings.group_filter,
            group_name_attribute: settings.group_name_attribute,
            account_attribute: settings.account_attribute,
            labels: settings.labels,
            timeout: settings.timeout,
            user_binds: Semaphore::new(settings.pool_size),
            health: Mutex::new(Health::Unknown),
            probing: tokio::sync::Mutex::new(()),
            typical_nanos: AtomicU64::new(0),
        })
    }

    /// The service-account pool's gauges (all zero without a service account).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.as_ref().map(Pool::stats).unwrap_or_default()
    }

    fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An answer readiness may reuse: the directory was up within [`READY_PROBE_INTERVAL`], or
    /// it was checked (up or down) at or after `asked`, by a probe this caller waited for.
    fn reusable(&self, asked: Instant) -> Option<Result<(), String>> {
        match self.health() {
            Health::Up(at) if at.elapsed() < READY_PROBE_INTERVAL || at >= asked => Some(Ok(())),
            Health::Down(at, reason) if at >= asked => Some(Err(reason)),
            _ => None,
        }
    }

    fn unavailable(&self, reason: DirectoryError) -> BackendError {
        tracing::warn!(backend = BACKEND, %reason, "directory unavailable");
        self.set_health(Health::Down(Instant::now(), reason.to_string()));
        BackendError::Unavailable {
            backend: BACKEND,
            reason: reason.to_string(),
        }
    }

    fn record_duration(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let old = self.typical_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            nanos
        } else {
            old - old / 8 + nanos / 8
        };
        self.typical_nanos.store(new, Ordering::Relaxed);
    }

    /// Waits until a refusal made without the directory took as long as a typical answer.
    async fn pad(&self, started: Instant) {
        let typical = Duration::from_nanos(self.typical_nanos.load(Ordering::Relaxed));
        if let Some(rest) = typical.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }

    fn direct_dn(&self, username: &str) -> String {
        fill(&self.user_dn, &[("username", &dn_value(username))])
    }

    async fn with_pool<T, F, Fut>(&self, what: Op, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: std::future::Future<Output = Result<T, ldap3::LdapError>>,
    {
        let pool = self.pool.as_ref().ok_or(DirectoryError::NoServiceAccount)?;
        pool.run(&self.connector, what, op).await
    }

    /// Runs `op` on the user's own connection, bounded by the timeout.
    async fn on_own<T, Fut>(&self, what: Op, op: Fut) -> Result<T, DirectoryError>
    where
        Fut: std::future::Future<Output = Result<T, ldap3::LdapError>>,
    {
        timeout(self.timeout, op)
            .await
            .map_err(|_| DirectoryError::Timeout {
                op: what,
                timeout: self.timeout,
            })?
            .map_err(|source| DirectoryError::Protocol { op: what, source })
    }

    /// Searches `user_base` for the one entry of `username`, on the service pool.
    async fn find_user(&self, username: &str) -> Result<Found, DirectoryError> {
        let filter = fill(&self.user_filter, &[("username", &filter_value(username))]);
        self.find_by(&filter).await
    }

    /// The attributes requested with the user's entry: the account, `memberOf` and the labels'.
    fn entry_attributes(&self) -> Vec<String> {
        let mut attrs = vec![self.account_attribute.clone(), MEMBER_OF.to_string()];
        attrs.extend(self.labels.values().cloned());
        attrs
    }

    /// Searches `user_base` with `filter` for one entry, on the service pool.
    async fn find_by(&self, filter: &str) -> Result<Found, DirectoryError> {
        let filter = filter.to_string();
        let base = self.user_base.clone();
        let attrs = self.entry_attributes();
        let limit = self.server_time_limit();
        let result = self
            .with_pool(Op::UserSearch, |mut ldap| {
                let (base, filter, attrs) = (base.clone(), filter.clone(), attrs.clone());
                async move {
                    ldap.with_search_options(SearchOptions::new().sizelimit(2).timelimit(limit))
                        .search(&base, Scope::Subtree, &filter, attrs)
                        .await
                }
            })
            .await?;
        let ldap3::SearchResult(entries, res) = result;
        let mut dns: Vec<UserEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(|e| self.user_entry(SearchEntry::construct(e)))
            .collect();
        match res.rc {
            0 => {}
            // sizeLimitExceeded: more than one entry matched.
            4 => return Ok(Found::Many(dns.len().max(2))),
            32 => {
                tracing::warn!(backend = BACKEND, base = %self.user_base, "authn.ldap.user_base does not exist in the directory");
                return Ok(Found::None);
            }
            rc => {
                return Err(DirectoryError::ResultCode {
                    op: Op::UserSearch,
                    rc,
                    text: res.text,
                })
            }
        }
        Ok(match dns.len() {
            0 => Found::None,
            1 => Found::One(dns.remove(0)),
            n => Found::Many(n),
        })
    }

    /// The DN, account and labels of an entry read with [`Self::entry_attributes`] requested.
    fn user_entry(&self, entry: SearchEntry) -> UserEntry {
        let member_of = entry
            .attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(MEMBER_OF))
            .map(|(_, v)| v.len())
            .sum();
        let labels = self
            .labels
            .iter()
            .filter_map(|(label, attribute)| {
                let first = entry
                    .attrs
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(attribute))
                    .find_map(|(_, v)| v.first())?;
                Some((label.clone(), bounded_label(first.clone())))
            })
            .collect();
        let values: Vec<String> = entry
            .attrs
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&self.account_attribute))
            .flat_map(|(_, v)| v)
            .collect();
        let account = match <[String; 1]>::try_from(values) {
            Ok([one]) if acceptable_username(&one) => Ok(one),
            Ok(_) => Err(NoAccount::Unacceptable),
            Err(values) if values.is_empty() => Err(NoAccount::Missing),
            // Which of several names is the account would be a guess: one entry, one name.
            Err(values) => Err(NoAccount::Several(values.len())),
        };
        UserEntry {
            dn: entry.dn,
            account,
            member_of,
            labels,
        }
    }

    /// Reads the entry at `dn` (base scope) with `account_attribute`, on `bound` (the user's own
    /// connection) or else on the service pool. `Ok(None)`: no such entry, or not readable.
    async fn read_user(
        &self,
        dn: &str,
        bound: Option<&Ldap>,
    ) -> Result<Option<UserEntry>, DirectoryError> {
        let dn = dn.to_string();
        let attrs = self.entry_attributes();
        let limit = self.server_time_limit();
        let read = |mut ldap: Ldap| {
            let (dn, attrs) = (dn.clone(), attrs.clone());
            async move {
                ldap.with_search_options(SearchOptions::new().sizelimit(1).timelimit(limit))
                    .search(&dn, Scope::Base, "(objectClass=*)", attrs)
                    .await
            }
        };
        let result = match bound {
            None => self.with_pool(Op::EntryRead, read).await?,
            Some(ldap) => self.on_own(Op::EntryRead, read(ldap.clone())).await?,
        };
        let ldap3::SearchResult(entries, res) = result;
        match res.rc {
            0 => Ok(entries
                .into_iter()
                .find(|e| !e.is_ref() && !e.is_intermediate())
                .map(|e| self.user_entry(SearchEntry::construct(e)))),
            // noSuchObject, invalidDNSyntax, insufficientAccessRights.
            32 | 34 | 50 => Ok(None),
            rc => Err(DirectoryError::ResultCode {
                op: Op::EntryRead,
                rc,
                text: res.text,
            }),
        }
    }

    /// The entry of a direct-bind login: read at its DN, or, for a bind name that is no DN,
    /// found under `user_base` with `user_filter`; on `bound` (the user's own connection) or
    /// else on the service pool.
    async fn direct_entry(
        &self,
        username: &str,
        dn: &str,
        bound: Option<&Ldap>,
    ) -> Result<Option<UserEntry>, DirectoryError> {
        if is_dn_template(&self.user_dn) {
            return self.read_user(dn, bound).await;
        }
        match bound {
            Some(ldap) => self.search_own(username, ldap).await,
            None => Ok(match self.find_user(username).await? {
                Found::One(entry) => Some(entry),
                _ => None,
            }),
        }
    }

    /// After a direct bind with a name that is no DN (`alice@example.org`): the user's own
    /// entry, found under `user_base` with `user_filter` on the user's own connection.
    async fn search_own(
        &self,
        username: &str,
        ldap: &Ldap,
    ) -> Result<Option<UserEntry>, DirectoryError> {
        let filter = fill(&self.user_filter, &[("username", &filter_value(username))]);
        let limit = self.server_time_limit();
        let mut own = ldap.clone();
        let result = self
            .on_own(
                Op::EntryRead,
                own.with_search_options(SearchOptions::new().sizelimit(2).timelimit(limit))
                    .search(
                        &self.user_base,
                        Scope::Subtree,
                        &filter,
                        self.entry_attributes(),
                    ),
            )
            .await?;
        let ldap3::SearchResult(entries, res) = result;
        let mut found: Vec<UserEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(|e| self.user_entry(SearchEntry::construct(e)))
            .collect();
        match res.rc {
            0 if found.len() == 1 => Ok(found.pop()),
            0 | 4 => {
                tracing::warn!(backend = BACKEND, %filter, base = %self.user_base, entries = found.len(), "after a direct bind, the user's own entry was not found exactly once: check authn.ldap.user_filter and user_base");
                Ok(None)
            }
            32 | 34 | 50 => Ok(None),
            rc => Err(DirectoryError::ResultCode {
                op: Op::EntryRead,
                rc,
                text: res.text,
            }),
        }
    }

    fn server_time_limit(&self) -> i32 {
        i32::try_from(self.timeout.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Binds as `dn` on a new connection. `Ok(Ok(conn))`: accepted, the connection is bound
    /// as the user (the caller unbinds it); `Ok(Err(why))`: the directory refused the
    /// credentials.
    async fn user_bind(
        &self,
        dn: &str,
        password: &str,
    ) -> Result<Result<Ldap, BindRefusal>, DirectoryError> {
        let _permit = timeout(self.timeout, self.user_binds.acquire())
            .await
            .map_err(|_| DirectoryError::BindSlotBusy(self.timeout))?
            .map_err(|_| DirectoryError::BindSlotsClosed)?;
        let mut ldap = self.connector.connect().await?;
        let res = self
            .on_own(Op::Bind, ldap.simple_bind(dn, password))
            .await?;
        match res.rc {
            0 => Ok(Ok(ldap)),
            // invalidCredentials, inappropriateAuthentication, insufficientAccessRights,
            // unwillingToPerform (account locked or disabled), constraintViolation (password
            // policy), invalidDNSyntax, noSuchObject: the credentials do not log anyone in.
            49 | 48 | 50 | 53 | 19 | 34 | 32 => {
                close(ldap).await;
                Ok(Err(BindRefusal {
                    rc: res.rc,
                    text: res.text,
                }))
            }
            rc => {
                close(ldap).await;
                Err(DirectoryError::ResultCode {
                    op: Op::Bind,
                    rc,
                    text: res.text,
                })
            }
        }
    }

    /// The names of the groups `dn` is a member of; `bound` is the user's own connection, used
    /// when there is no service account.
    async fn groups(
        &self,
        dn: &str,
        username: &str,
        bound: Option<&Ldap>,
    ) -> Result<Vec<String>, DirectoryError> {
        if self.group_base.is_empty() {
            return Ok(Vec::new());
        }
        let filter = fill(
            &self.group_filter,
            &[
                ("dn", &filter_value(dn)),
                ("username", &filter_value(username)),
            ],
        );
        let base = self.group_base.clone();
        let attr = self.group_name_attribute.clone();
        let limit = self.server_time_limit();
        let search = |mut ldap: Ldap| {
            let (base, filter, attr) = (base.clone(), filter.clone(), attr.clone());
            async move {
                ldap.with_search_options(
                    SearchOptions::new().sizelimit(MAX_GROUPS).timelimit(limit),
                )
                .search(&base, Scope::Subtree, &filter, vec![attr])
                .await
            }
        };
        let result = match (&self.pool, bound) {
            (Some(_), _) | (None, None) => self.with_pool(Op::GroupSearch, search).await?,
            (None, Some(ldap)) => self.on_own(Op::GroupSearch, search(ldap.clone())).await?,
        };
        let ldap3::SearchResult(entries, res) = result;
        match res.rc {
            0 => {}
            4 => tracing::warn!(
                backend = BACKEND,
                limit = MAX_GROUPS,
                "more groups than the limit; the rest are ignored"
            ),
            32 => {
                tracing::warn!(backend = BACKEND, base = %self.group_base, "authn.ldap.group_base does not exist in the directory");
                return Ok(Vec::new());
            }
            rc => {
                return Err(DirectoryError::ResultCode {
                    op: Op::GroupSearch,
                    rc,
                    text: res.text,
                })
            }
        }
        let mut names: Vec<String> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .flat_map(|e| {
                SearchEntry::construct(e)
                    .attrs
                    .into_iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(&self.group_name_attribute))
                    .flat_map(|(_, v)| v)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn check(&self, username: &str, password: &str) -> Result<AuthnOutcome, DirectoryError> {
        let found = if self.search_mode {
            match self.find_user(username).await? {
                Found::One(entry) => Some(entry),
                found => {
                    if let Found::Many(n) = found {
                        tracing::warn!(backend = BACKEND, %username, entries = n, "user_filter matches several entries: login refused; make authn.ldap.user_filter match one entry per user");
                    }
                    // Spend the bind a known user costs, so timing does not tell which
                    // accounts exist. The user's password is not sent for this.
                    let decoy = format!("cn=purser-no-such-user,{}", self.user_base);
                    if let Ok(ldap) = self.user_bind(&decoy, "purser-decoy-password").await? {
                        close(ldap).await;
                    }
                    return Ok(match found {
                        Found::None => AuthnOutcome::UnknownUser,
                        _ => AuthnOutcome::REJECTED,
                    });
                }
            }
        } else {
            None
        };
        let dn = match &found {
            Some(entry) => entry.dn.clone(),
            None => self.direct_dn(username),
        };
        let ldap = match self.user_bind(&dn, password).await? {
            Ok(ldap) => ldap,
            Err(refusal) => {
                tracing::info!(backend = BACKEND, %username, %dn, reason = %refusal, "login refused by the directory");
                // Name the account when the entry is known, so that failures count against it
                // whatever the spelling. In direct bind only a service account can read it.
                let account = match found {
                    Some(entry) => entry.account.ok(),
                    None if self.pool.is_some() => {
                        match self.direct_entry(username, &dn, None).await {
                            Ok(entry) => entry.and_then(|e| e.account.ok()),
                            Err(reason) => {
                                tracing::debug!(backend = BACKEND, %reason, "account of a rejected login not read");
                                None
                            }
                        }
                    }
                    None => None,
                };
                return Ok(AuthnOutcome::Rejected { account });
            }
        };
        let entry = match found {
            Some(entry) => entry,
            // Direct bind: the DN was made from the name typed; the entry tells the account
            // and its DN as the directory spells it (for a bind name that is no DN, such as
            // Active Directory's user@domain, the entry is searched for: the group filter's
            // {dn} must be the entry's DN).
            None => match self.direct_entry(username, &dn, Some(&ldap)).await {
                Ok(Some(entry)) => entry,
                Ok(None) => UserEntry {
                    dn: dn.clone(),
                    account: Err(NoAccount::OwnEntryUnreadable),
                    member_of: 0,
                    labels: BTreeMap::new(),
                },
                Err(reason) => {
                    close(ldap).await;
                    return Err(reason);
                }
            },
        };
        let account = match entry.account.clone() {
            Ok(account) => account,
            Err(reason) => {
                close(ldap).await;
                tracing::error!(
                    backend = BACKEND,
                    dn = %entry.dn,
                    attribute = %self.account_attribute,
                    %reason,
                    "login refused: the account name cannot be read from the user's entry; check authn.ldap.account_attribute and the directory's access rules"
                );
                return Ok(AuthnOutcome::REJECTED);
            }
        };
        let groups = self.groups(&entry.dn, &account, Some(&ldap)).await;
        close(ldap).await;
        let groups = groups?;
        self.warn_if_groups_missed(&entry, &groups);
        let mut identity = Identity::new(account, groups);
        identity.labels = entry.labels;
        Ok(AuthnOutcome::Accepted(identity))
    }

    async fn find(&self, account: &str) -> Result<Option<Identity>, DirectoryError> {
        let entry = if self.search_mode {
            match self.find_user(account).await? {
                Found::One(entry) => entry,
                Found::None => return Ok(None),
                Found::Many(n) => {
                    tracing::warn!(backend = BACKEND, %account, entries = n, "user_filter matches several entries: account not looked up");
                    return Ok(None);
                }
            }
        } else if is_dn_template(&self.user_dn) {
            match self.read_user(&self.direct_dn(account), None).await? {
                Some(entry) => entry,
                None => return Ok(None),
            }
        } else {
            // The bind name (a UPN) is not the account: the entry is the one whose account
            // attribute is the account.
            let filter = format!("({}={})", self.account_attribute, filter_value(account));
            match self.find_by(&filter).await? {
                Found::One(entry) => entry,
                _ => return Ok(None),
            }
        };
        let name = match entry.account.clone() {
            Ok(name) => name,
            Err(reason) => {
                tracing::error!(
                    backend = BACKEND,
                    dn = %entry.dn,
                    attribute = %self.account_attribute,
                    %reason,
                    "account not looked up: its name cannot be read from its entry; check authn.ldap.account_attribute"
                );
                return Ok(None);
            }
        };
        let groups = self.groups(&entry.dn, &name, None).await?;
        self.warn_if_groups_missed(&entry, &groups);
        let mut identity = Identity::new(name, groups);
        identity.labels = entry.labels;
        Ok(Some(identity))
    }

    /// The entry lists groups (`memberOf`) but the group search found none: the group settings
    /// most likely do not match the directory.
    fn warn_if_groups_missed(&self, entry: &UserEntry, groups: &[String]) {
        if groups.is_empty() && entry.member_of > 0 && !self.group_base.is_empty() {
            tracing::warn!(
                backend = BACKEND,
                dn = %entry.dn,
                member_of = entry.member_of,
                filter = %self.group_filter,
                base = %self.group_base,
                "the group search found no group for a user whose entry lists {} in memberOf: likely a misconfiguration of authn.ldap.group_base or group_filter",
                entry.member_of
            );
        }
    }

    /// Contacts the directory once (a pooled connection's round trip, which binds as the service
    /// account when it opens a connection, or a plain connect without a service account),
    /// bounded by `timeout`, and records the result.
    async fn probe(&self) -> Result<(), String> {
        let result = match timeout(self.timeout, self.probe_once()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match &result {
            Ok(()) => self.set_health(Health::Up(Instant::now())),
            Err(e) => self.set_health(Health::Down(Instant::now(), e.clone())),
        }
        result
    }

    async fn probe_once(&self) -> Result<(), DirectoryError> {
        if self.pool.is_some() {
            self.with_pool(Op::Probe, |mut ldap| async move {
                ldap.extended(ldap3::exop::WhoAmI).await
            })
            .await
            .map(|_| ())
        } else {
            match self.connector.connect().await {
                Ok(ldap) => {
                    close(ldap).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Ends a short-lived connection politely; the socket closes when the last handle drops anyway.
async fn close(mut ldap: Ldap) {
    let _ = timeout(Duration::from_millis(200), ldap.unbind()).await;
}

fn acceptable_username(username: &str) -> bool {
    !username.is_empty() && username.len() <= MAX_USERNAME_LEN && !username.contains('\0')
}

#[async_trait]
impl Authenticator for LdapAuthenticator {
    fn name(&self) -> BackendName {
        BACKEND
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        let started = Instant::now();
        let password = &creds.password;
        // An empty password would be an unauthenticated bind, which many directories accept
        // as success (RFC 4513 section 5.1.2): never send one.
        if password.is_empty() || password.expose().len() > MAX_PASSWORD_LEN {
            self.pad(started).await;
            return Ok(AuthnOutcome::REJECTED);
        }
        if !acceptable_username(&creds.username) {
            self.pad(started).await;
            return Ok(if self.search_mode {
                AuthnOutcome::UnknownUser
            } else {
                AuthnOutcome::REJECTED
            });
        }
        match self.check(&creds.username, password.expose()).await {
            Ok(outcome) => {
                self.set_health(Health::Up(Instant::now()));
                self.record_duration(started.elapsed());
                Ok(outcome)
            }
            Err(reason) => Err(self.unavailable(reason)),
        }
    }

    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
        if self.pool.is_none() {
            return Err(BackendError::Unsupported {
                backend: BACKEND,
                reason: "direct bind without a service account cannot find accounts without their password: set authn.ldap.bind_dn and bind_password".into(),
            });
        }
        if !acceptable_username(account) {
            return Ok(None);
        }
        match self.find(account).await {
            Ok(found) => {
                self.set_health(Health::Up(Instant::now()));
                Ok(found)
            }
            Err(reason) => Err(self.unavailable(reason)),
        }
    }

    /// Whether the directory answers. An answer of the directory (a probe, or a login that
    /// reached it) within [`READY_PROBE_INTERVAL`] says yes; otherwise the directory is probed,
    /// one probe at a time, and callers that waited for a probe share its answer. So a directory
    /// that goes down makes `/readyz` 503 within seconds even when no one logs in, one that
    /// comes back makes it 200 at the next call, and a burst of calls costs one probe.
    async fn ready(&self) -> Result<(), String> {
        let asked = Instant::now();
        let answer = match self.reusable(asked) {
            Some(r) => r,
            None => {
                let _probing = self.probing.lock().await;
                match self.reusable(asked) {
                    Some(r) => r,
                    None => self.probe().await,
                }
            }
        };
        answer.map_err(|e| format!("ldap: directory unreachable: {e}"))
    }
}

#[cfg(test)]
mod tests;
