//! `purser serve` with no `--config` reads `config/purser.yaml` from the working directory: the
//! demo configuration committed in the repository runs as is (demo user `demo`, password
//! `demo`). The config folder is copied so the run writes nothing into the repository.

mod support;

use std::fs;
use std::path::Path;

use support::*;

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
