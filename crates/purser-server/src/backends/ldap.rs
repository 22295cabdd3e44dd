//! `authn.ldap`: a directory, by direct bind or search-then-bind through a pool of
//! service-account connections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use purser_authn::ldap::{
    is_attribute_name, LdapAuthenticator, LdapSettings, PoolStats, MAX_LABELS,
};
use purser_core::Authenticator;
use serde::{Deserialize, Serialize};

use super::Backend;
use crate::build::ctx::{BuildError, Ctx, Mode};
use crate::config::problem::Problem;
use crate::config::values::{read_twin, redacted_if_set, resolve, HumanDuration};
use crate::metrics::Metrics;

/// Keys holding secrets.
pub(crate) const SECRET_KEYS: &[&str] = &["bind_password"];

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapConfig {
    /// Tried in order; `ldaps://` for implicit TLS. Default `["ldap://127.0.0.1:389"]`.
    pub urls: Vec<String>,
    /// Upgrade `ldap://` with StartTLS. Default `false`.
    pub start_tls: bool,
    /// PEM CA bundle to verify the directory's certificate; a certificate in it that is the
    /// directory's own is trusted as that exact certificate. Default empty (system roots).
    pub ca_file: PathBuf,
    /// The name the directory's certificate must carry, when it is not the URL's host.
    /// Default empty (the URL's host).
    pub tls_server_name: String,
    /// Service account for search-then-bind; empty: direct bind. Default empty.
    pub bind_dn: String,
    /// The service account's password. Secret. Default empty.
    pub bind_password: String,
    /// Or a file holding it (read at load, a trailing newline dropped); setting both is an error.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<PathBuf>,
    /// Direct bind DN template, e.g. `uid={username},ou=people,dc=example,dc=org`. Default empty.
    pub user_dn: String,
    /// Search base for users. Default empty.
    pub user_base: String,
    /// Search filter for users. Default `(uid={username})`.
    pub user_filter: String,
    /// Search base for groups; empty: no groups. Default empty.
    pub group_base: String,
    /// Group filter, with `{dn}` and `{username}`. Default `(member={dn})`.
    pub group_filter: String,
    /// Attribute naming a group. Default `cn`.
    pub group_name_attribute: String,
    /// Attribute of the user's entry holding the account name, the name the policy, the token
    /// and the lockout see (`sAMAccountName` for Active Directory). Default `uid`.
    pub account_attribute: String,
    /// Labels for the policy (`match: { labels: ... }`, `${labels.KEY}`) and the audit record,
    /// label name -> attribute of the user's entry, e.g. `{ department: departmentNumber }`:
    /// the attribute's first value, read with the entry; an entry without it gets no such
    /// label. At most 32. Default empty.
    pub labels: BTreeMap<String, String>,
    /// Bound on every directory operation. Default `5s`.
    pub timeout: HumanDuration,
    /// Service-account connections kept. Default `8`.
    pub pool_size: usize,
}

// Written by hand so that the bind password never reaches a log line through `{:?}`.
impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("urls", &self.urls)
            .field("start_tls", &self.start_tls)
            .field("ca_file", &self.ca_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &redacted_if_set(&self.bind_password))
            .field("bind_password_file", &self.bind_password_file)
            .field("user_dn", &self.user_dn)
            .field("user_base", &self.user_base)
            .field("user_filter", &self.user_filter)
            .field("group_base", &self.group_base)
            .field("group_filter", &self.group_filter)
            .field("group_name_attribute", &self.group_name_attribute)
            .field("account_attribute", &self.account_attribute)
            .field("labels", &self.labels)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            urls: vec!["ldap://127.0.0.1:389".into()],
            start_tls: false,
            ca_file: PathBuf::new(),
            tls_server_name: String::new(),
            bind_dn: String::new(),
            bind_password: String::new(),
            bind_password_file: None,
            user_dn: String::new(),
            user_base: String::new(),
            user_filter: "(uid={username})".into(),
            group_base: String::new(),
            group_filter: "(member={dn})".into(),
            group_name_attribute: "cn".into(),
            account_attribute: "uid".into(),
            labels: BTreeMap::new(),
            timeout: HumanDuration::secs(5),
            pool_size: 8,
        }
    }
}

impl LdapConfig {
    /// The backend's settings, secrets already read.
    pub(crate) fn settings(&self) -> LdapSettings {
        LdapSettings {
            urls: self.urls.clone(),
            start_tls: self.start_tls,
            ca_file: self.ca_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
            bind_dn: self.bind_dn.clone(),
            bind_password: purser_core::Password::new(self.bind_password.clone()),
            user_dn: self.user_dn.clone(),
            user_base: self.user_base.clone(),
            user_filter: self.user_filter.clone(),
            group_base: self.group_base.clone(),
            group_filter: self.group_filter.clone(),
            group_name_attribute: self.group_name_attribute.clone(),
            account_attribute: self.account_attribute.clone(),
            labels: self.labels.clone(),
            timeout: self.timeout.0,
            pool_size: self.pool_size,
        }
    }
}

impl Backend for LdapConfig {
    fn validate(&self, at: &str, p: &mut Vec<Problem>) {
        let l = self;
        if l.urls.is_empty() {
            p.push(Problem::new(
                format!("{at}.urls"),
                "list at least one ldap:// or ldaps:// URL",
            ));
        }
        let mut any_ldaps = false;
        for url in &l.urls {
            let rest = if let Some(r) = url.strip_prefix("ldaps://") {
                any_ldaps = true;
                r
            } else if let Some(r) = url.strip_prefix("ldap://") {
                r
            } else {
                p.push(Problem::new(
                    format!("{at}.urls"),
                    format!("{url:?} must start with ldap:// or ldaps://"),
                ));
                continue;
            };
            if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
                p.push(Problem::new(
                    format!("{at}.urls"),
                    format!("{url:?} must name a host, e.g. ldap://ldap.example.org:389"),
                ));
            }
        }
        if l.start_tls && any_ldaps {
            p.push(Problem::new(
                format!("{at}.start_tls"),
                "StartTLS cannot be used with ldaps:// (already TLS); use ldap:// URLs or turn start_tls off",
            ));
        }
        let direct = !l.user_dn.is_empty();
        if direct {
            if !l.user_dn.contains("{username}") {
                p.push(Problem::new(
                    format!("{at}.user_dn"),
                    "must contain {username}, e.g. uid={username},ou=people,dc=example,dc=org",
                ));
            }
        } else if l.bind_dn.is_empty() || l.user_base.is_empty() {
            p.push(Problem::new(
                at,
                "set user_dn (direct bind) or both bind_dn and user_base (search, then bind)",
            ));
        }
        if !direct && !l.user_filter.contains("{username}") {
            p.push(Problem::new(
                format!("{at}.user_filter"),
                "must contain {username}, e.g. (uid={username})",
            ));
        }
        let has_password_file = l
            .bind_password_file
            .as_ref()
            .is_some_and(|f| !f.as_os_str().is_empty());
        if !l.bind_dn.is_empty() && l.bind_password.is_empty() && !has_password_file {
            p.push(Problem::new(
                format!("{at}.bind_password"),
                "must be set (or bind_password_file) when bind_dn is",
            ));
        }
        if !l.group_base.is_empty()
            && !l.group_filter.contains("{dn}")
            && !l.group_filter.contains("{username}")
        {
            p.push(Problem::new(
                format!("{at}.group_filter"),
                "must contain {dn} or {username}, e.g. (member={dn})",
            ));
        }
        if l.group_name_attribute.is_empty() {
            p.push(Problem::new(
                format!("{at}.group_name_attribute"),
                "must name an attribute, e.g. cn",
            ));
        }
        for (label, attribute) in &l.labels {
            if !purser_core::is_label_name(label) {
                p.push(Problem::new(
                    format!("{at}.labels"),
                    format!(
                        "{label:?} is not a label name: letters, digits, _ and -, at most {} characters",
                        purser_core::MAX_LABEL_NAME
                    ),
                ));
            }
            if !is_attribute_name(attribute) {
                p.push(Problem::new(
                    format!("{at}.labels.{label}"),
                    format!("{attribute:?} is not an attribute name; name the attribute of the user's entry, e.g. departmentNumber"),
                ));
            }
        }
        if l.labels.len() > MAX_LABELS {
            p.push(Problem::new(
                format!("{at}.labels"),
                format!("{} labels: at most {MAX_LABELS}", l.labels.len()),
            ));
        }
        if !is_attribute_name(&l.account_attribute) {
            p.push(Problem::new(
                format!("{at}.account_attribute"),
                format!(
                    "{:?} is not an attribute name; use the attribute holding the login name, e.g. uid (sAMAccountName for Active Directory)",
                    l.account_attribute
                ),
            ));
        }
        if l.timeout.0.is_zero() {
            p.push(Problem::new(
                format!("{at}.timeout"),
                "must be more than 0s",
            ));
        }
        if l.pool_size < 1 {
            p.push(Problem::new(
                format!("{at}.pool_size"),
                "must be at least 1",
            ));
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        resolve(&mut self.ca_file, base);
        if let Some(f) = self.bind_password_file.as_mut() {
            resolve(f, base);
        }
    }

    fn read_secrets(&mut self, at: &str, problems: &mut Vec<Problem>) {
        read_twin(
            &mut self.bind_password,
            self.bind_password_file.as_deref(),
            &format!("{at}.bind_password"),
            problems,
        );
    }

    fn redact(&mut self) {
        self.bind_password = redacted_if_set(&self.bind_password).to_string();
    }

    /// Prepares the backend (the CA file read, the settings checked) without contacting the
    /// directory: it may be down at start, which `/readyz` reports.
    fn build(
        &self,
        at: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<dyn Authenticator>>, BuildError> {
        let built = LdapAuthenticator::new(self.settings()).map_err(|e| BuildError::backend(at, e));
        let Some(ldap) = ctx.check(built)? else {
            return Ok(None);
        };
        let ldap = Arc::new(ldap);
        if ctx.mode == Mode::Serve {
            export_pool_gauges(&ldap, ctx.metrics);
        }
        Ok(Some(ldap))
    }
}

/// Keeps `purser_ldap_pool_connections{state}` current: set now, then refreshed once a second
/// from the pool's counters for as long as the backend lives. A task rather than a refresh on
/// scrape keeps the metrics listener free of backend knowledge.
fn export_pool_gauges(ldap: &Arc<LdapAuthenticator>, metrics: &Metrics) {
    let gauge = metrics.ldap_pool_connections.clone();
    let set = move |s: PoolStats| {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        gauge.with_label_values(&["idle"]).set(n(s.idle));
        gauge.with_label_values(&["busy"]).set(n(s.busy));
    };
    set(ldap.pool_stats());
    // Outside a runtime (a synchronous caller) the gauges keep their first values.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(ldap);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ldap) = weak.upgrade() else { return };
            set(ldap.pool_stats());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &LdapConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate("authn.ldap", &mut p);
        p.iter().map(ToString::to_string).collect()
    }

    fn direct() -> LdapConfig {
        LdapConfig {
            user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
            ..LdapConfig::default()
        }
    }

    #[test]
    fn labels_need_policy_label_names_and_attribute_names_and_are_bounded() {
        let mut c = direct();
        c.labels = BTreeMap::from([
            ("department".into(), "departmentNumber".into()),
            ("job-title_2".into(), "title;lang-en".into()),
        ]);
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        assert!(LdapAuthenticator::new(c.settings()).is_ok());

        c.labels = BTreeMap::from([
            ("bad key".into(), "title".into()),
            ("dept".into(), "".into()),
            ("cost".into(), "cost center".into()),
            ("x".repeat(65), "title".into()),
        ]);
        let p = problems(&c).join("\n");
        assert!(
            p.contains("authn.ldap.labels: \"bad key\" is not a label name"),
            "{p}"
        );
        assert!(
            p.contains(&format!(
                "authn.ldap.labels: {:?} is not a label name",
                "x".repeat(65)
            )),
            "{p}"
        );
        assert!(
            p.contains("authn.ldap.labels.dept: \"\" is not an attribute name"),
            "{p}"
        );
        assert!(
            p.contains("authn.ldap.labels.cost: \"cost center\" is not an attribute name"),
            "{p}"
        );
        // The library refuses the same settings on its own.
        let e = LdapAuthenticator::new(c.settings())
            .unwrap_err()
            .to_string();
        assert!(e.contains("authn.ldap.labels"), "{e}");

        c.labels = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), format!("a{i}")))
            .collect();
        let p = problems(&c).join("\n");
        assert!(p.contains("33 labels: at most 32"), "{p}");
    }
}
