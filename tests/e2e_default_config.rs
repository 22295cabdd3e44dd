//! `purser serve` with no `--config` reads `config/purser.yaml` from the working directory: the
//! demo configuration committed in the repository runs as is (demo user `demo`, password
//! `demo`). The config folder is copied so the run writes nothing into the repository.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::Path;

use purser_testkit::*;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read config dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The first service the demo config accepts (`token.service`, a string or a list).
fn demo_service(config: &Path) -> String {
    let text = fs::read_to_string(config).expect("config/purser.yaml exists in the repository");
    let doc: serde_json::Value = serde_norway::from_str(&text).expect("config/purser.yaml is YAML");
    match &doc["token"]["service"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a[0].as_str().expect("service string").to_string(),
        _ => "registry.local".to_string(),
    }
}

#[test]
fn serve_without_config_flag_reads_config_purser_yaml() {
    let repo_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let service = demo_service(&repo_config.join("purser.yaml"));

    let dir = tempfile::Builder::new()
        .prefix("purser-demo-")
        .tempdir()
        .expect("tempdir");
    copy_dir(&repo_config, &dir.path().join("config"));
    let cwd = dir.path().to_path_buf();
    let port = free_port();
    let metrics_port = free_port();
    let args = vec![
        "serve".to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    let env = vec![(
        "PURSER_METRICS__LISTEN".to_string(),
        format!("127.0.0.1:{metrics_port}"),
    )];
    let key = cwd.join("config/data/signing.pem");
    let mut p = Purser::launch(dir, &cwd, &args, &env, port, metrics_port, key);

    let r = p.token_get(
        &[
            ("service", &service),
            ("account", "demo"),
            ("scope", "repository:demo/app:pull"),
        ],
        Some(("demo", "demo")),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    let jwt = Jwt::decode(r.json()["token"].as_str().expect("token"));
    assert_eq!(jwt.claims["sub"], "demo");
    assert_eq!(jwt.claims["aud"], service.as_str());

    let r = p.token_get(&[("service", &service)], Some(("demo", "not-demo")));
    assert_eq!(r.status, 401, "{}", r.text());

    // The environment layer set the metrics listener.
    let m = Http::get(&p.metrics_url())
        .send()
        .expect("metrics listener from PURSER_METRICS__LISTEN");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("purser_build_info"), "{}", m.text());

    // SIGTERM is a graceful stop.
    assert_eq!(p.stop(), Some(0), "{}", p.log_tail());
}

/// An empty config file, or one of comments only, is every default: `check-config` passes
/// when the default policy file (`policy.yaml` beside the config) is there, without writing
/// anything, and says what is missing when it is not; `serve` starts on it, generating its key
/// under `data/`.
#[test]
fn an_empty_config_file_is_every_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::write(root.join("empty.yaml"), "").expect("write");
    fs::write(root.join("comments.yaml"), "# all defaults\n\n").expect("write");

    // Without the policy, the one file the defaults name and cannot make.
    let check = |name: &str| {
        let cfg = root.join(name).display().to_string();
        let out = run_purser(&["check-config", "--config", &cfg], "");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = check("empty.yaml");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("authz.policy_file: ")
            && out.contains("policy.yaml does not exist")
            && out.contains("create it or correct the path"),
        "the missing policy is not named with what to do:\n{out}"
    );

    fs::write(root.join("policy.yaml"), POLICY).expect("policy");
    for name in ["empty.yaml", "comments.yaml"] {
        let (code, out) = check(name);
        assert_eq!(code, Some(0), "{name}:\n{out}");
        assert!(out.contains("listen: 127.0.0.1:5001"), "{name}:\n{out}");
        assert!(out.contains("configuration OK"), "{name}:\n{out}");
    }
    assert!(
        !root.join("data").exists(),
        "check-config wrote the key serve would generate"
    );

    // serve on the empty file: the defaults, the listeners moved by flag and environment.
    let port = free_port();
    let metrics_port = free_port();
    let args = vec![
        "serve".to_string(),
        "--config".to_string(),
        root.join("empty.yaml").display().to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    let env = vec![(
        "PURSER_METRICS__LISTEN".to_string(),
        format!("127.0.0.1:{metrics_port}"),
    )];
    let cwd = root.to_path_buf();
    let key = cwd.join("data/signing.pem");
    let logs = tempfile::tempdir().expect("tempdir");
    let mut p = Purser::launch(logs, &cwd, &args, &env, port, metrics_port, key.clone());
    assert!(key.is_file(), "serve did not generate data/signing.pem");
    assert!(cwd.join("data/signing.crt").is_file());
    let r = p.token_get(&[("service", "registry.local")], None);
    assert_eq!(
        r.status,
        401,
        "no backend, no anonymous access: {}",
        r.text()
    );
    p.stop();

    // The key serve generated passes the same check.
    let (code, out) = check("empty.yaml");
    assert_eq!(code, Some(0), "{out}");
}
