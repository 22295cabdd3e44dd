//! Semantic checks that need no network: everything is collected, nothing stops at the first.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::{Config, LdapConfig, Problem};

/// Bounds of `server.max_scopes`.
const MAX_SCOPES: std::ops::RangeInclusive<usize> = 1..=1000;
/// The shortest access token lifetime accepted, in seconds.
const MIN_LIFETIME_SECS: u64 = 60;

impl Config {
    /// Every semantic problem of this configuration, each with its key path. Sources are filled
    /// in by [`Config::load`], which knows the layers. The `*_file` secret twins are read (and
    /// their conflicts reported) by `load`, not here.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        self.check_server(&mut p);
        self.check_token(&mut p);
        self.check_authn(&mut p);
        if self.authz.policy_file.as_os_str().is_empty() {
            p.push(Problem::new(
                "authz.policy_file",
                "must name the policy file",
            ));
        }
        let fl = &self.limits.failed_logins;
        if fl.max > 0 {
            if fl.window.0.is_zero() {
                p.push(Problem::new(
                    "limits.failed_logins.window",
                    "must be more than 0s while max is above 0 (set max: 0 to turn limiting off)",
                ));
            }
            if fl.lockout.0.is_zero() {
                p.push(Problem::new(
                    "limits.failed_logins.lockout",
                    "must be more than 0s while max is above 0 (set max: 0 to turn limiting off)",
                ));
            }
        }
        p
    }

    fn check_server(&self, p: &mut Vec<Problem>) {
        let s = &self.server;
        if let Err(e) = s.listen.parse::<SocketAddr>() {
            p.push(Problem::new(
                "server.listen",
                format!(
                    "{:?} is not an address with a port, e.g. 127.0.0.1:5001 ({e})",
                    s.listen
                ),
            ));
        }
        if !self.metrics.listen.is_empty() {
            if let Err(e) = self.metrics.listen.parse::<SocketAddr>() {
                p.push(Problem::new(
                    "metrics.listen",
                    format!("{:?} is not an address with a port, e.g. 127.0.0.1:9090, or \"\" to disable ({e})", self.metrics.listen),
                ));
            }
        }
        if !s.path.starts_with('/') {
            p.push(Problem::new(
                "server.path",
                format!("{:?} must start with '/'", s.path),
            ));
        }
        match (
            s.tls.cert_file.as_os_str().is_empty(),
            s.tls.key_file.as_os_str().is_empty(),
        ) {
            (false, true) => p.push(Problem::new(
                "server.tls.key_file",
                "must be set when server.tls.cert_file is (set both or neither)",
            )),
            (true, false) => p.push(Problem::new(
                "server.tls.cert_file",
                "must be set when server.tls.key_file is (set both or neither)",
            )),
            _ => {}
        }
        for cidr in &s.trusted_proxies {
            if cidr.parse::<ipnet::IpNet>().is_err() {
                p.push(Problem::new(
                    "server.trusted_proxies",
                    format!("{cidr:?} is not a CIDR such as 10.0.0.0/8 (one address: 10.0.0.1/32)"),
                ));
            }
        }
        if !MAX_SCOPES.contains(&s.max_scopes) {
            p.push(Problem::new(
                "server.max_scopes",
                format!(
                    "must be between {} and {} (got {})",
                    MAX_SCOPES.start(),
                    MAX_SCOPES.end(),
                    s.max_scopes
                ),
            ));
        }
    }

    fn check_token(&self, p: &mut Vec<Problem>) {
        let t = &self.token;
        if t.issuer.trim().is_empty() {
            p.push(Problem::new(
                "token.issuer",
                "must not be empty; use the registry's auth.token.issuer",
            ));
        }
        let services = t.service.to_vec();
        if services.is_empty() {
            p.push(Problem::new(
                "token.service",
                "list at least one service (the registry's auth.token.service)",
            ));
        } else if services.iter().any(|s| s.trim().is_empty()) {
            p.push(Problem::new(
                "token.service",
                "a service name must not be empty",
            ));
        }
        if t.lifetime.as_secs() < MIN_LIFETIME_SECS {
            p.push(Problem::new(
                "token.lifetime",
                format!("must be at least {MIN_LIFETIME_SECS}s (got {})", t.lifetime),
            ));
        }
        if t.signing_key_file.as_os_str().is_empty() {
            p.push(Problem::new(
                "token.signing_key_file",
                "must name the signing key file",
            ));
        }
        if t.publish_keys.iter().any(|k| k.as_os_str().is_empty()) {
            p.push(Problem::new(
                "token.publish_keys",
                "an entry is empty; list PEM file paths",
            ));
        }
    }

    fn check_authn(&self, p: &mut Vec<Problem>) {
        let a = &self.authn;
        if a.order.is_empty() {
            p.push(Problem::new(
                "authn.order",
                "list at least one backend: static, htpasswd or ldap",
            ));
        }
        let mut seen = BTreeSet::new();
        for kind in &a.order {
            if !seen.insert(kind) {
                p.push(Problem::new(
                    "authn.order",
                    format!("{} is listed twice", kind.as_str()),
                ));
            }
        }
        if let Some(st) = &a.r#static {
            for (name, user) in &st.users {
                let path = format!("authn.static.users.{name}");
                if name.is_empty() || name.contains(':') {
                    p.push(Problem::new(
                        path.clone(),
                        "a user name must be non-empty and hold no ':'",
                    ));
                }
                let from_file = user
                    .password_hash_file
                    .as_ref()
                    .is_some_and(|f| !f.as_os_str().is_empty());
                if user.password_hash.is_empty() && !from_file {
                    p.push(Problem::new(
                        format!("{path}.password_hash"),
                        "must be set (or password_hash_file); make one with `purser hash-password`",
                    ));
                } else if !user.password_hash.is_empty() && !is_bcrypt(&user.password_hash) {
                    // Never echo the value: it is a secret even when malformed.
                    p.push(Problem::new(
                        format!("{path}.password_hash"),
                        "is not a bcrypt hash ($2a$, $2b$ or $2y$); make one with `purser hash-password`",
                    ));
                }
            }
        }
        if let Some(h) = &a.htpasswd {
            if h.file.as_os_str().is_empty() {
                p.push(Problem::new(
                    "authn.htpasswd.file",
                    "must name the htpasswd file",
                ));
            }
        }
        if let Some(l) = &a.ldap {
            check_ldap(l, p);
        }
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

fn check_ldap(l: &LdapConfig, p: &mut Vec<Problem>) {
    const AT: &str = "authn.ldap";
    if l.urls.is_empty() {
        p.push(Problem::new(
            format!("{AT}.urls"),
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
                format!("{AT}.urls"),
                format!("{url:?} must start with ldap:// or ldaps://"),
            ));
            continue;
        };
        if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
            p.push(Problem::new(
                format!("{AT}.urls"),
                format!("{url:?} must name a host, e.g. ldap://ldap.example.org:389"),
            ));
        }
    }
    if l.start_tls && any_ldaps {
        p.push(Problem::new(
            format!("{AT}.start_tls"),
            "StartTLS cannot be used with ldaps:// (already TLS); use ldap:// URLs or turn start_tls off",
        ));
    }
    let direct = !l.user_dn.is_empty();
    if direct {
        if !l.user_dn.contains("{username}") {
            p.push(Problem::new(
                format!("{AT}.user_dn"),
                "must contain {username}, e.g. uid={username},ou=people,dc=example,dc=org",
            ));
        }
    } else if l.bind_dn.is_empty() || l.user_base.is_empty() {
        p.push(Problem::new(
            AT,
            "set user_dn (direct bind) or both bind_dn and user_base (search, then bind)",
        ));
    }
    if !direct && !l.user_filter.contains("{username}") {
        p.push(Problem::new(
            format!("{AT}.user_filter"),
            "must contain {username}, e.g. (uid={username})",
        ));
    }
    let has_password_file = l
        .bind_password_file
        .as_ref()
        .is_some_and(|f| !f.as_os_str().is_empty());
    if !l.bind_dn.is_empty() && l.bind_password.is_empty() && !has_password_file {
        p.push(Problem::new(
            format!("{AT}.bind_password"),
            "must be set (or bind_password_file) when bind_dn is",
        ));
    }
    if !l.group_base.is_empty()
        && !l.group_filter.contains("{dn}")
        && !l.group_filter.contains("{username}")
    {
        p.push(Problem::new(
            format!("{AT}.group_filter"),
            "must contain {dn} or {username}, e.g. (member={dn})",
        ));
    }
    if l.group_name_attribute.is_empty() {
        p.push(Problem::new(
            format!("{AT}.group_name_attribute"),
            "must name an attribute, e.g. cn",
        ));
    }
    if !purser_authn::ldap::is_attribute_name(&l.account_attribute) {
        p.push(Problem::new(
            format!("{AT}.account_attribute"),
            format!(
                "{:?} is not an attribute name; use the attribute holding the login name, e.g. uid (sAMAccountName for Active Directory)",
                l.account_attribute
            ),
        ));
    }
    if l.timeout.0.is_zero() {
        p.push(Problem::new(
            format!("{AT}.timeout"),
            "must be more than 0s",
        ));
    }
    if l.pool_size < 1 {
        p.push(Problem::new(
            format!("{AT}.pool_size"),
            "must be at least 1",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendKind, HumanDuration, OneOrMany};

    fn paths(c: &Config) -> Vec<String> {
        c.validate().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), vec![]);
    }

    #[test]
    fn ldap_rules() {
        let mut c = Config::default();
        c.authn.ldap = Some(LdapConfig {
            urls: vec!["ldaps://a".into(), "http://b".into()],
            start_tls: true,
            user_filter: "(uid=x)".into(),
            pool_size: 0,
            ..LdapConfig::default()
        });
        let got = paths(&c);
        for want in [
            "authn.ldap.urls",
            "authn.ldap.start_tls",
            "authn.ldap",
            "authn.ldap.user_filter",
            "authn.ldap.pool_size",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
        }
        c.authn.ldap = Some(LdapConfig {
            user_dn: "uid=x,dc=org".into(),
            ..LdapConfig::default()
        });
        assert_eq!(paths(&c), vec!["authn.ldap.user_dn"]);
        c.authn.ldap = Some(LdapConfig {
            user_dn: "uid={username},dc=org".into(),
            ..LdapConfig::default()
        });
        assert_eq!(paths(&c), Vec::<String>::new());
        for bad in ["", "sAMAccount Name", "(uid=*)"] {
            c.authn.ldap = Some(LdapConfig {
                user_dn: "uid={username},dc=org".into(),
                account_attribute: bad.into(),
                ..LdapConfig::default()
            });
            assert_eq!(paths(&c), vec!["authn.ldap.account_attribute"], "{bad:?}");
        }
    }

    #[test]
    fn server_token_and_limits_rules() {
        let mut c = Config::default();
        c.server.listen = "nowhere".into();
        c.server.path = "token".into();
        c.server.tls.cert_file = "c.pem".into();
        c.server.max_scopes = 0;
        c.token.lifetime = HumanDuration::secs(59);
        c.token.service = OneOrMany::Many(vec![]);
        c.authn.order = vec![BackendKind::Static, BackendKind::Static];
        c.limits.failed_logins.window = HumanDuration::secs(0);
        let got = paths(&c);
        assert_eq!(
            got,
            vec![
                "server.listen",
                "server.path",
                "server.tls.key_file",
                "server.max_scopes",
                "token.service",
                "token.lifetime",
                "authn.order",
                "limits.failed_logins.window"
            ]
        );
        c.limits.failed_logins.max = 0;
        assert!(!paths(&c).contains(&"limits.failed_logins.window".to_string()));
        c.server.max_scopes = 1001;
        assert!(paths(&c).contains(&"server.max_scopes".to_string()));
        c.authn.order = vec![];
        assert!(paths(&c).contains(&"authn.order".to_string()));

        let mut c = Config::default();
        c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
        assert_eq!(paths(&c), Vec::<String>::new());
        c.server.trusted_proxies.push("proxy.local".into());
        assert_eq!(paths(&c), vec!["server.trusted_proxies"]);
    }
}
