//! Loading the configuration through every layer, in `figment::Jail`s (files and environment
//! variables confined to the test).

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]
// `Jail` closures return `figment::Result`, whose error is large; that is figment's signature.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use figment::Jail;
use purser_server::config::{
    BackendKind, Config, ConfigErrors, HumanDuration, LoadOptions, Loaded, LogLevel, ProblemSource,
    REDACTED,
};

/// A string shaped like a bcrypt hash; validation only looks at the shape.
const HASH: &str = "$2y$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

fn file(name: &str) -> LoadOptions {
    LoadOptions {
        config_file: Some(PathBuf::from(name)),
        ..LoadOptions::default()
    }
}

fn ok(opts: &LoadOptions) -> Result<Loaded, figment::Error> {
    Config::load(opts)
        .map_err(|e| figment::Error::from(format!("expected a valid config, got:\n{e}")))
}

fn errors(opts: &LoadOptions) -> ConfigErrors {
    match Config::load(opts) {
        Ok(loaded) => panic!("expected problems, loaded {:?}", loaded.config),
        Err(e) => e,
    }
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap()
}

#[test]
fn defaults_alone_are_valid() {
    Jail::expect_with(|_jail| {
        let loaded = ok(&LoadOptions::default())?;
        assert_eq!(loaded.config_file, None);
        assert_eq!(loaded.base_dir, cwd());
        let mut expected = Config::default();
        expected.token.signing_key_file = cwd().join("data/signing.pem");
        expected.authz.policy_file = cwd().join("policy.yaml");
        assert_eq!(loaded.config, expected);
        Ok(())
    });
}

#[test]
fn yaml_file_overrides_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "server:\n  listen: \"0.0.0.0:5001\"\n  max_scopes: 32\ntoken:\n  issuer: acme\n  service: registry.acme\nauthn:\n  order: [htpasswd]\n  htpasswd: { file: users.htpasswd }\n",
        )?;
        let c = ok(&file("purser.yaml"))?.config;
        assert_eq!(c.server.listen, "0.0.0.0:5001");
        assert_eq!(c.server.max_scopes, 32);
        assert_eq!(c.token.issuer, "acme");
        assert_eq!(c.token.service.to_vec(), vec!["registry.acme".to_string()]);
        assert_eq!(c.authn.order, vec![BackendKind::Htpasswd]);
        // Untouched keys keep their defaults.
        assert_eq!(c.server.path, "/token");
        assert_eq!(c.token.lifetime, HumanDuration::secs(300));
        Ok(())
    });
}

#[test]
fn config_purser_yaml_is_read_when_no_file_is_given() {
    Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file("config/purser.yaml", "token:\n  issuer: found-by-default\n")?;
        let loaded = ok(&LoadOptions::default())?;
        assert_eq!(loaded.config.token.issuer, "found-by-default");
        assert_eq!(loaded.config_file, Some(cwd().join("config/purser.yaml")));
        assert_eq!(loaded.base_dir, cwd().join("config"));
        Ok(())
    });
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    Jail::expect_with(|jail| {
        jail.create_file("purser.yaml", "server:\n  listen: \"127.0.0.1:7000\"\nlog:\n  level: warn\ntoken:\n  issuer: from-file\n  lifetime: 10m\n")?;
        jail.set_env("PURSER_TOKEN__ISSUER", "from-env");
        jail.set_env("PURSER_TOKEN__LIFETIME", "15m");
        jail.set_env("PURSER_SERVER__LISTEN", "127.0.0.1:7001");
        jail.set_env("PURSER_LOG__LEVEL", "debug");
        let c = ok(&file("purser.yaml"))?.config;
        assert_eq!(c.token.issuer, "from-env");
        assert_eq!(c.token.lifetime, HumanDuration::secs(900));
        assert_eq!(c.server.listen, "127.0.0.1:7001");
        assert_eq!(c.log.level, LogLevel::Debug);

        let opts = LoadOptions {
            listen: Some("127.0.0.1:7002".into()),
            log_level: Some(LogLevel::Trace),
            ..file("purser.yaml")
        };
        let c = ok(&opts)?.config;
        assert_eq!(c.server.listen, "127.0.0.1:7002");
        assert_eq!(c.log.level, LogLevel::Trace);
        assert_eq!(c.token.issuer, "from-env");
        Ok(())
    });
}

#[test]
fn toml_is_accepted() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.toml",
            "[token]\nissuer = \"toml-issuer\"\nlifetime = \"12h\"\n\n[authn.ldap]\nurls = [\"ldaps://ldap.example.org\"]\nuser_dn = \"uid={username},ou=people,dc=example,dc=org\"\n",
        )?;
        let c = ok(&file("purser.toml"))?.config;
        assert_eq!(c.token.issuer, "toml-issuer");
        assert_eq!(c.token.lifetime, HumanDuration::secs(12 * 3600));
        assert_eq!(
            c.authn.ldap.unwrap().urls,
            vec!["ldaps://ldap.example.org".to_string()]
        );
        Ok(())
    });
}

#[test]
fn unknown_key_in_file_names_path_line_and_suggestion() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "# purser\nauthn:\n  ldap:\n    user_dn: \"uid={username},dc=org\"\n    urlz: [\"ldap://127.0.0.1:389\"]\n",
        )?;
        let e = errors(&file("purser.yaml"));
        assert_eq!(e.problems.len(), 1, "{e}");
        let p = &e.problems[0];
        assert_eq!(p.path, "authn.ldap.urlz");
        assert_eq!(
            p.source,
            Some(ProblemSource::File {
                path: "purser.yaml".into(),
                line: Some(5)
            })
        );
        assert_eq!(
            e.to_string(),
            "purser.yaml:5: authn.ldap.urlz: unknown key (did you mean \"urls\"?)"
        );
        Ok(())
    });
}

#[test]
fn unknown_key_in_toml_names_its_line() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "p.toml",
            "[server]\nlisten = \"127.0.0.1:5001\"\nmax_scope = 3\n",
        )?;
        let e = errors(&file("p.toml"));
        assert_eq!(
            e.to_string(),
            "p.toml:3: server.max_scope: unknown key (did you mean \"max_scopes\"?)"
        );
        Ok(())
    });
}

#[test]
fn unknown_env_var_is_an_error_naming_it() {
    Jail::expect_with(|jail| {
        jail.set_env("PURSER_TOKEN__ISUER", "x");
        let e = errors(&LoadOptions::default());
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(
            e.problems[0].source,
            Some(ProblemSource::Env {
                var: "PURSER_TOKEN__ISUER".into()
            })
        );
        assert_eq!(
            e.to_string(),
            "environment variable PURSER_TOKEN__ISUER: token.isuer: unknown key (did you mean \"issuer\"?)"
        );
        Ok(())
    });
}

#[test]
fn type_errors_name_their_source() {
    Jail::expect_with(|jail| {
        jail.create_file("purser.yaml", "log:\n  level: verbose\n")?;
        jail.set_env("PURSER_SERVER__MAX_SCOPES", "many");
        let e = errors(&file("purser.yaml"));
        let text = e.to_string();
        assert_eq!(e.problems.len(), 2, "{text}");
        assert!(
            text.contains("purser.yaml:2: log.level: unknown value \"verbose\""),
            "{text}"
        );
        assert!(
            text.contains("environment variable PURSER_SERVER__MAX_SCOPES: server.max_scopes:"),
            "{text}"
        );
        Ok(())
    });
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "authn:\n  ldap:\n    user_dn: \"uid={username},dc=org\"\n    bind_password: [\"hunter2-in-a-list\"]\n",
        )?;
        let e = errors(&file("purser.yaml"));
        let text = e.to_string();
        assert!(
            text.contains("purser.yaml:4: authn.ldap.bind_password:"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        Ok(())
    });
}

#[test]
fn several_problems_are_reported_at_once() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "server:\n  listen: nowhere\n  path: token\n  colour: blue\ntoken:\n  lifetime: 30s\n  service: []\nauthn:\n  order: [static, static]\n  ldap:\n    urls: [\"http://x\"]\n    pool_size: 0\nlimits:\n  failed_logins: { max: 3, window: 0s }\n",
        )?;
        jail.set_env("PURSER_AUTHZ__POLICY", "p.yaml");
        let e = errors(&file("purser.yaml"));
        let text = e.to_string();
        for want in [
            "purser.yaml:4: server.colour: unknown key",
            "environment variable PURSER_AUTHZ__POLICY: authz.policy: unknown key (did you mean \"policy_file\"?)",
            "purser.yaml:2: server.listen:",
            "purser.yaml:3: server.path:",
            "purser.yaml:6: token.lifetime: must be at least 60s (got 30s)",
            "purser.yaml:7: token.service:",
            "purser.yaml:9: authn.order: static is listed twice",
            "purser.yaml:11: authn.ldap.urls:",
            "purser.yaml:10: authn.ldap: set user_dn",
            "purser.yaml:12: authn.ldap.pool_size: must be at least 1",
            "purser.yaml:14: limits.failed_logins.window:",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(text.lines().count(), e.problems.len());
        Ok(())
    });
}

#[test]
fn a_problem_set_by_a_flag_names_the_flag() {
    Jail::expect_with(|_jail| {
        let opts = LoadOptions {
            listen: Some("not-an-address".into()),
            ..LoadOptions::default()
        };
        let e = errors(&opts);
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(
            e.problems[0].source,
            Some(ProblemSource::Flag {
                flag: "--listen".into()
            })
        );
        Ok(())
    });
}

#[test]
fn a_missing_config_file_is_one_clear_problem() {
    Jail::expect_with(|_jail| {
        let e = errors(&file("absent.yaml"));
        assert_eq!(e.problems.len(), 1);
        assert!(
            e.to_string()
                .starts_with("absent.yaml: cannot read the config file"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn relative_paths_resolve_against_the_config_file_folder() {
    Jail::expect_with(|jail| {
        jail.create_dir("etc")?;
        jail.create_file(
            "etc/purser.yaml",
            "server:\n  tls: { cert_file: tls/cert.pem, key_file: /abs/key.pem }\ntoken:\n  publish_keys: [old.pem]\nauthn:\n  htpasswd:\n    groups_file: groups\nauthz:\n  policy_file: policy.yaml\n",
        )?;
        let loaded = ok(&file("etc/purser.yaml"))?;
        let etc = cwd().join("etc");
        let c = &loaded.config;
        assert_eq!(loaded.base_dir, etc);
        assert_eq!(c.server.tls.cert_file, etc.join("tls/cert.pem"));
        assert_eq!(c.server.tls.key_file, Path::new("/abs/key.pem"));
        assert_eq!(c.token.publish_keys, vec![etc.join("old.pem")]);
        assert_eq!(c.token.signing_key_file, etc.join("data/signing.pem"));
        assert_eq!(c.token.certificate_file, PathBuf::new());
        let h = c.authn.htpasswd.as_ref().unwrap();
        assert_eq!(h.file, etc.join("users.htpasswd"));
        assert_eq!(h.groups_file, etc.join("groups"));
        assert_eq!(c.authz.policy_file, etc.join("policy.yaml"));
        Ok(())
    });
}

#[test]
fn secret_file_twins_are_read_at_load() {
    Jail::expect_with(|jail| {
        jail.create_dir("secrets")?;
        jail.create_file("secrets/bind", "bind-pw\n")?;
        jail.create_file("secrets/alice.hash", &format!("{HASH}\r\n"))?;
        jail.create_file(
            "purser.yaml",
            "authn:\n  static:\n    users:\n      alice: { password_hash_file: secrets/alice.hash, groups: [dev] }\n  ldap:\n    bind_dn: \"cn=svc,dc=org\"\n    bind_password_file: secrets/bind\n    user_base: \"ou=people,dc=org\"\n",
        )?;
        let c = ok(&file("purser.yaml"))?.config;
        let alice = &c.authn.r#static.as_ref().unwrap().users["alice"];
        assert_eq!(alice.password_hash, HASH);
        assert_eq!(
            alice.password_hash_file,
            Some(cwd().join("secrets/alice.hash"))
        );
        assert_eq!(c.authn.ldap.as_ref().unwrap().bind_password, "bind-pw");

        // Both the value and the file: an error, at the file key.
        jail.set_env("PURSER_AUTHN__LDAP__BIND_PASSWORD", "also-set");
        let e = errors(&file("purser.yaml"));
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].path, "authn.ldap.bind_password_file");
        assert!(e.to_string().starts_with("purser.yaml:7: "), "{e}");
        assert!(!e.to_string().contains("also-set"), "{e}");
        Ok(())
    });
}

#[test]
fn an_unreadable_secret_file_is_a_problem() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "authn:\n  ldap:\n    bind_dn: \"cn=svc,dc=org\"\n    bind_password_file: missing\n    user_base: \"ou=people,dc=org\"\n",
        )?;
        let e = errors(&file("purser.yaml"));
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            e.to_string()
                .starts_with("purser.yaml:4: authn.ldap.bind_password_file: cannot read"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn redacted_yaml_never_shows_the_hash_or_bind_password() {
    Jail::expect_with(|jail| {
        jail.create_file("bind.txt", "bind-secret-value\n")?;
        jail.create_file(
            "purser.yaml",
            &format!(
                "authn:\n  static:\n    users:\n      bob: {{ password_hash: \"{HASH}\" }}\n  ldap:\n    bind_dn: \"cn=svc,dc=org\"\n    bind_password_file: bind.txt\n    user_base: \"ou=people,dc=org\"\n"
            ),
        )?;
        let loaded = ok(&file("purser.yaml"))?;
        let yaml = loaded.config.to_redacted_yaml();
        assert!(!yaml.contains(HASH), "{yaml}");
        assert!(!yaml.contains("bind-secret-value"), "{yaml}");
        assert_eq!(yaml.matches(REDACTED).count(), 2, "{yaml}");
        // The path of a secret file is not secret.
        assert!(
            yaml.contains(&cwd().join("bind.txt").display().to_string()),
            "{yaml}"
        );
        let debug = format!("{loaded:?}");
        assert!(
            !debug.contains(HASH) && !debug.contains("bind-secret-value"),
            "{debug}"
        );
        // What is printed parses back as a configuration.
        let back: Config = serde_norway::from_str(&yaml).map_err(|e| e.to_string())?;
        assert_eq!(back.token, loaded.config.token);
        Ok(())
    });
}

#[test]
fn durations_in_every_unit() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "token:\n  lifetime: 300s\n  refresh_lifetime: 30d\nauthn:\n  cache_ttl: 12h\nlimits:\n  failed_logins: { window: 5m, lockout: 12h }\n",
        )?;
        let c = ok(&file("purser.yaml"))?.config;
        assert_eq!(c.token.lifetime, HumanDuration::secs(300));
        assert_eq!(c.token.refresh_lifetime, HumanDuration::secs(30 * 86400));
        assert_eq!(c.authn.cache_ttl, HumanDuration::secs(12 * 3600));
        assert_eq!(c.limits.failed_logins.window, HumanDuration::secs(300));
        assert_eq!(
            c.limits.failed_logins.lockout,
            HumanDuration::secs(12 * 3600)
        );

        jail.set_env("PURSER_TOKEN__LIFETIME", "5m");
        assert_eq!(
            ok(&file("purser.yaml"))?.config.token.lifetime,
            HumanDuration::secs(300)
        );

        jail.set_env("PURSER_TOKEN__LIFETIME", "5 minutes");
        let e = errors(&file("purser.yaml"));
        assert!(
            e.to_string()
                .contains("environment variable PURSER_TOKEN__LIFETIME: token.lifetime:"),
            "{e}"
        );
        Ok(())
    });
}

/// The example in docs/configuration.md, kept true.
#[test]
fn the_documented_example_reports_what_the_docs_show() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "purser.yaml",
            "server:\n  listen: nowhere\n  colour: blue\ntoken:\n  lifetime: 30s\nauthn:\n  ldap:\n    urlz: [\"ldap://127.0.0.1:389\"]\n",
        )?;
        jail.set_env("PURSER_TOKEN__ISUER", "x");
        let text = errors(&file("purser.yaml")).to_string();
        let docs = include_str!("../../../docs/configuration.md");
        let start = docs
            .find("purser: the configuration has problems:\n")
            .expect("example in docs")
            + 40;
        let shown = &docs[start..start + docs[start..].find("```").expect("end of example")];
        assert_eq!(text.trim_end(), shown.trim_end());
        Ok(())
    });
}
