//! The shipped configuration files load and validate, and the reference documents every key.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]
// `Jail` closures return `figment::Result`, whose error is large; that is figment's signature.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use figment::Jail;
use purser_server::backends::oidc::OidcIssuerConfig;
use purser_server::config::{
    Config, HtpasswdConfig, LdapConfig, LoadOptions, OidcConfig, StaticConfig, StaticUser,
    TokensConfig,
};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn load(rel: &str) -> Result<Config, figment::Error> {
    let opts = LoadOptions {
        config_file: Some(repo_file(rel)),
        ..LoadOptions::default()
    };
    Config::load(&opts)
        .map(|l| l.config)
        .map_err(|e| format!("{rel} does not load:\n{e}").into())
}

/// Dotted paths of every leaf of a YAML value; map keys under `users` collapse to `*`.
fn leaves(v: &serde_norway::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_norway::Value::Mapping(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = k.as_str().expect("string keys");
                let k = if prefix.ends_with("users") { "*" } else { k };
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn reference_loads_validates_and_names_every_key() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let config = load("config/reference.yaml")?;
        assert!(
            config.authn.r#static.is_some()
                && config.authn.htpasswd.is_some()
                && config.authn.ldap.is_some()
                && config.authn.oidc.is_some()
        );

        // Every key of a configuration with every optional part present.
        let mut full = Config::default();
        let user = StaticUser {
            password_hash_file: Some(PathBuf::new()),
            ..StaticUser::default()
        };
        full.authn.r#static = Some(StaticConfig {
            users: [("u".to_string(), user)].into(),
        });
        full.authn.htpasswd = Some(HtpasswdConfig::default());
        full.authn.tokens = Some(TokensConfig::default());
        full.authn.ldap = Some(LdapConfig {
            bind_password_file: Some(PathBuf::new()),
            ..LdapConfig::default()
        });
        full.authn.oidc = Some(OidcConfig {
            issuers: vec![OidcIssuerConfig::default()],
            ..OidcConfig::default()
        });
        full.state.redis.url_file = Some(PathBuf::new());
        let mut want = BTreeSet::new();
        leaves(
            &serde_norway::to_value(&full).map_err(|e| e.to_string())?,
            "",
            &mut want,
        );

        let text = std::fs::read_to_string(repo_file("config/reference.yaml"))
            .map_err(|e| e.to_string())?;
        let mut have = BTreeSet::new();
        leaves(
            &serde_norway::from_str(&text).map_err(|e| e.to_string())?,
            "",
            &mut have,
        );
        let missing: Vec<_> = want.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "config/reference.yaml lacks {missing:?}"
        );
        Ok(())
    });
}

#[test]
fn every_reference_value_is_commented_with_its_default() {
    let text = std::fs::read_to_string(repo_file("config/reference.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        // Section headers open a block; user names are data, not keys.
        if value.trim().is_empty() || key == "demo" {
            continue;
        }
        let comment: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        assert!(
            comment.iter().any(|c| c.contains("Default")),
            "line {}: {key} has no comment saying its default",
            i + 1
        );
        checked += 1;
    }
    assert!(checked > 40, "only {checked} keys found");
}

#[test]
fn the_runnable_config_loads() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let config = load("config/purser.yaml")?;
        assert!(config.authz.policy_file.is_absolute());
        Ok(())
    });
}
