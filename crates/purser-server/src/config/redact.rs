//! The effective configuration as YAML, secrets replaced.

use super::Config;

pub use super::values::REDACTED;

impl Config {
    /// The configuration as YAML, every secret (static users' `password_hash`, LDAP
    /// `bind_password`, `state.redis.url`) replaced by `"<redacted>"`. Paths of secret files are not secret and stay.
    pub fn to_redacted_yaml(&self) -> String {
        let mut shown = self.clone();
        // Each backend knows its own secrets.
        shown.authn.redact();
        // A Redis URL may hold a password.
        shown.state.redis.url = super::values::redacted_if_set(&shown.state.redis.url).into();
        // Plain structs, strings and lists: serialising them cannot fail.
        serde_norway::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LdapConfig, StaticConfig, StaticUser};

    #[test]
    fn secrets_are_replaced_and_debug_hides_them() {
        let mut c = Config::default();
        let hash = "$2y$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234";
        c.authn.r#static = Some(StaticConfig {
            users: [(
                "alice".to_string(),
                StaticUser {
                    password_hash: hash.into(),
                    ..StaticUser::default()
                },
            )]
            .into(),
        });
        c.authn.ldap = Some(LdapConfig {
            bind_password: "hunter2-bind".into(),
            ..LdapConfig::default()
        });
        c.state.redis.url = "redis://:hunter2-redis@10.0.0.1:6379/0".into();
        let yaml = c.to_redacted_yaml();
        assert!(!yaml.contains(hash), "{yaml}");
        assert!(!yaml.contains("hunter2-bind"), "{yaml}");
        assert!(!yaml.contains("hunter2-redis"), "{yaml}");
        assert_eq!(yaml.matches(REDACTED).count(), 3, "{yaml}");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains(hash)
                && !debug.contains("hunter2-bind")
                && !debug.contains("hunter2-redis"),
            "{debug}"
        );
        // The printed form reads back as the same shape.
        let back: Config = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back.server, c.server);
    }
}
