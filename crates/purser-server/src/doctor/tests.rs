//! The offline checks end to end over purser's config and a registry's, with real keys.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use purser_token::{jwk_of, Alg, KeyIdMode};

use super::realm::check_realm;
use super::*;
use crate::config::{KeyIdConfig, OneOrMany};

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

#[test]
fn token_beside_htpasswd_is_a_problem_and_the_other_checks_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let (c, cert) = setup(dir.path(), Alg::Es256);
    let mut r = registry(&cert);
    r.other_auth = vec!["htpasswd".into()];
    let f = offline_checks(&c, &r, SystemTime::now());
    let p = problems(&f);
    assert_eq!(p.len(), 1, "{f:#?}");
    assert!(
        p[0].starts_with("problem auth: the registry config has auth.token and also auth.htpasswd")
            && p[0].ends_with(
                "-> remove the `htpasswd:` block under `auth:`; the registry accepts exactly one auth type"
            ),
        "{}",
        p[0]
    );
    assert!(f
        .iter()
        .any(|x| x.check == "issuer" && x.status == Status::Ok));
}

/// Debian's default config.yml with a token block appended as a second `auth:`.
const DEBIAN_WITH_SECOND_AUTH: &str = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\nauth:\n  token:\n    realm: http://127.0.0.1:5001/token\n    service: svc\n    issuer: iss\n    rootcertbundle: /etc/docker/registry/purser.crt\n";

#[test]
fn a_duplicated_auth_key_is_named_instead_of_the_parser_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, DEBIAN_WITH_SECOND_AUTH).unwrap();
    let report = run(&Config::default(), &DoctorOptions::offline(path.clone()));
    assert!(!report.healthy());
    let text = report.to_string();
    assert_eq!(report.findings.len(), 1, "{text}");
    assert_eq!(
        text,
        format!(
            "problem registry config: {}: key \"auth\" appears twice, on lines 14 and 23: the registry silently keeps only the last, and doctor cannot read the file -> merge the `auth:` blocks into one holding only `token:`, or delete the others\n",
            path.display()
        )
    );
}

#[test]
fn a_yaml_error_that_is_no_duplicate_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "auth: [unclosed\n").unwrap();
    let report = run(&Config::default(), &DoctorOptions::offline(path));
    assert_eq!(report.findings.len(), 1);
    assert!(
        report.findings[0]
            .what
            .contains("not a registry config (YAML)"),
        "{report}"
    );
}
