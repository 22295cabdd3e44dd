//! Semantic checks that need no network: everything is collected, nothing stops at the first.

use std::net::SocketAddr;

use super::{Config, Problem, StateBackend};

/// Bound of `state.redis.timeout`: past it, a login would wait on a store too long to be worth it.
const MAX_STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bound of `state.redis.key_prefix`.
const MAX_KEY_PREFIX: usize = 64;

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
        self.authn.validate(&mut p);
        if self.authz.policy_file.as_os_str().is_empty() {
            p.push(Problem::new(
                "authz.policy_file",
                "must name the policy file",
            ));
        }
        self.check_state(&mut p);
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

    fn check_state(&self, p: &mut Vec<Problem>) {
        let r = &self.state.redis;
        if self.state.backend != StateBackend::Redis {
            return;
        }
        if r.url.is_empty() {
            p.push(Problem::new(
                "state.redis.url",
                "must be set for state.backend: redis (redis://host:6379/0, or url_file)",
            ));
        } else {
            // The URL may hold a password: the messages never quote it.
            let scheme = r.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            match scheme.as_deref() {
                Some("redis") | Some("rediss") => {
                    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(r.url.as_str())
                    {
                        p.push(Problem::new(
                            "state.redis.url",
                            format!("is not a Redis URL ({}); write redis://[user:password@]host:port/db", e.category()),
                        ));
                    }
                }
                _ => p.push(Problem::new(
                    "state.redis.url",
                    "must start with redis:// (or rediss:// for TLS)",
                )),
            }
            if scheme.as_deref() != Some("rediss") && !r.ca_file.as_os_str().is_empty() {
                p.push(Problem::new(
                    "state.redis.ca_file",
                    "is only used with a rediss:// URL (TLS); remove it or use rediss://",
                ));
            }
        }
        if r.timeout.0.is_zero() || r.timeout.0 > MAX_STATE_TIMEOUT {
            p.push(Problem::new(
                "state.redis.timeout",
                format!(
                    "must be more than 0s and at most {}s (got {})",
                    MAX_STATE_TIMEOUT.as_secs(),
                    r.timeout
                ),
            ));
        }
        if r.key_prefix.len() > MAX_KEY_PREFIX {
            p.push(Problem::new(
                "state.redis.key_prefix",
                format!("must be at most {MAX_KEY_PREFIX} bytes"),
            ));
        }
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
        if let Some(r) = &t.rotation {
            if t.keys_dir.as_os_str().is_empty() {
                p.push(Problem::new(
                    "token.rotation",
                    "needs token.keys_dir: only a key folder can rotate",
                ));
            }
            if r.every.as_secs() < 60 || r.overlap.0 >= r.every.0 || r.overlap.0.is_zero() {
                p.push(Problem::new(
                    "token.rotation",
                    format!(
                        "overlap ({}) must be above 0s and below every ({}), and every at least 60s",
                        r.overlap, r.every
                    ),
                ));
            }
        }
        let keys_dir_only = [
            ("token.bundle_file", &t.bundle_file),
            ("token.jwks_file", &t.jwks_file),
        ];
        for (key, path) in keys_dir_only {
            if !path.as_os_str().is_empty() && t.keys_dir.as_os_str().is_empty() {
                p.push(Problem::new(
                    key,
                    "is written from token.keys_dir: set that too, or leave this empty",
                ));
            }
        }
        if t.publish_keys.iter().any(|k| k.as_os_str().is_empty()) {
            p.push(Problem::new(
                "token.publish_keys",
                "an entry is empty; list PEM file paths",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendKind, HumanDuration, LdapConfig, OneOrMany};

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
    fn state_rules_never_quote_the_url() {
        let mut c = Config::default();
        c.state.backend = StateBackend::Redis;
        assert_eq!(paths(&c), vec!["state.redis.url"]);
        c.state.redis.url = "http://:hunter2@127.0.0.1:6379".into();
        c.state.redis.ca_file = "ca.pem".into();
        c.state.redis.timeout = HumanDuration::secs(0);
        let problems = c.validate();
        assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            vec![
                "state.redis.url",
                "state.redis.ca_file",
                "state.redis.timeout"
            ]
        );
        assert!(problems.iter().all(|p| !p.message.contains("hunter2")));
        c.state.redis.url = "rediss://:hunter2@127.0.0.1:6379/0".into();
        c.state.redis.timeout = HumanDuration::millis(200);
        assert_eq!(paths(&c), Vec::<String>::new());
        c.state.redis.url = "redis://:hunter2@127.0.0.1:notaport/0".into();
        c.state.redis.ca_file = "".into();
        let problems = c.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].message.contains("hunter2"));
        // The memory store ignores the section.
        c.state.backend = StateBackend::Memory;
        assert_eq!(paths(&c), Vec::<String>::new());
    }

    #[test]
    fn key_folder_rules() {
        let mut c = Config::default();
        c.token.rotation = Some(crate::config::RotationConfig::default());
        c.token.bundle_file = "bundle.crt".into();
        assert_eq!(paths(&c), vec!["token.rotation", "token.bundle_file"]);
        c.token.keys_dir = "keys".into();
        assert_eq!(paths(&c), Vec::<String>::new());
        c.token.rotation = Some(crate::config::RotationConfig {
            every: HumanDuration::secs(86400),
            overlap: HumanDuration::secs(86400),
        });
        assert_eq!(paths(&c), vec!["token.rotation"]);
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
