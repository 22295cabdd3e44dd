//! Signing key rotation with a key folder (`token.keys_dir`, `purser keys`), against the real
//! registry 2.8 (Debian's docker-registry) and skopeo: a full rotation under a continuous pull
//! loop logged in by identity token and real docker logged in the same way, from RS256 to
//! ES256, with no purser restart; the refusal
//! of `keys activate --registry-config` while a registry does not trust the next key; and the
//! `token.jwks_file` a registry 3.x reads, checked key by key against the signing keys.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use purser_testkit::clients::{Dockerd, HostGuard};
use purser_testkit::ops::PROMTOOL;
use purser_testkit::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Bound for a running server to load a changed key folder.
const SETTLE: Duration = Duration::from_secs(20);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `purser keys ARGS --config CONFIG`: (exit code, stdout, stderr).
fn keys(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["keys"];
    all.extend_from_slice(&args[..1]);
    let cfg = config.display().to_string();
    all.extend_from_slice(&["--config", &cfg]);
    all.extend_from_slice(&args[1..]);
    let out = run_purser(&all, "");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn keys_ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = keys(config, args);
    assert_eq!(code, 0, "purser keys {args:?}: {err}");
    out
}

/// The `kid` of the JWKS endpoint's first (active) key.
fn active_kid(p: &Purser) -> String {
    let r = Http::get(&format!("{}/.well-known/jwks.json", p.base_url()))
        .send()
        .unwrap();
    r.json()["keys"][0]["kid"].as_str().unwrap().to_string()
}

/// A key's field in `purser keys list`: `key-2`'s `libtrust`, say.
fn listed(config: &Path, name: &str, field: &str) -> String {
    let text = keys_ok(config, &["list"]);
    let mut in_key = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_key = line.starts_with(&format!("{name} "));
        } else if in_key {
            if let Some(v) = line.trim().strip_prefix(&format!("{field}:")) {
                return v.trim().to_string();
            }
        }
    }
    panic!("{name} {field} not in:\n{text}");
}

/// A password grant with `access_type=offline`, as `docker login` makes: the identity token
/// (refresh token) and its end.
fn docker_login(p: &Purser) -> (String, i64) {
    docker_login_at(&p.token_url())
}

/// [`docker_login`] by the token endpoint's address (for threads that do not hold the server).
fn docker_login_at(token_url: &str) -> (String, i64) {
    let r = Http::post(token_url)
        .form(&[
            ("grant_type", "password"),
            ("username", ALICE.0),
            ("password", ALICE.1),
            ("service", SERVICE),
            ("client_id", "docker"),
            ("access_type", "offline"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    let exp = Jwt::decode(&rt).claims["exp"].as_i64().unwrap();
    (rt, exp)
}

/// What the pull loop saw.
#[derive(Default)]
struct Pulls {
    ok: AtomicUsize,
    failed: Mutex<Vec<String>>,
    /// Logins made when a session ended (its identity token expired).
    logins: AtomicUsize,
}

#[test]
fn a_full_rotation_under_a_pull_loop_by_identity_token_from_rs256_to_es256() {
    // Lifetimes shortened: access tokens 60s (the least purser takes), refresh tokens 100s. A
    // retiring key may go 120s after its deactivation (60s + the registry's 60s leeway).
    let mut c = base_config();
    set_path(&mut c, "token.keys_dir", json!("keyring"));
    set_path(&mut c, "token.bundle_file", json!("published/bundle.crt"));
    set_path(&mut c, "token.jwks_file", json!("published/jwks.json"));
    set_path(&mut c, "token.lifetime", json!("60s"));
    set_path(&mut c, "token.refresh_lifetime", json!("100s"));
    // The RSA key of base_config (keys/signing.pem) becomes the folder's first key.
    let mut p = Purser::start(c, &[]);
    let pid = p.pid();
    let config = p.dir().join("purser.yaml");
    let bundle = p.dir().join("published/bundle.crt");
    let first = listed(&config, "key-1", "libtrust");
    assert_eq!(active_kid(&p), first);
    assert_eq!(
        fs::read_to_string(&bundle)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );

    let mut registry = Registry::start(RegistryAuth::purser(&p, &bundle));
    let skopeo = Arc::new(Skopeo::new());
    let image = OciImage::build(1);
    skopeo
        .push(&image, &registry, "alice/app:1", Creds::of(ALICE))
        .expect_ok("push");

    // The pull loop: skopeo with an auth file holding docker's identity token, which it
    // trades for access tokens through the POST refresh grant docker sends. When the session
    // ends (its refresh token expires, 100s after login) the loop logs in again, as a docker
    // user would. It stops only while the registry process itself restarts (the gate).
    let gate = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(Pulls::default());
    let loop_thread = {
        let (gate, stop, pulls, skopeo) =
            (gate.clone(), stop.clone(), pulls.clone(), skopeo.clone());
        let token_url = p.token_url();
        let (host, reference) = (registry.host(), registry.reference("alice/app:1"));
        let login = move || docker_login_at(&token_url);
        std::thread::spawn(move || {
            let (mut rt, mut exp) = login();
            let mut authfile = skopeo.identity_token_authfile(&host, ALICE.0, &rt);
            while !stop.load(Ordering::Acquire) {
                if exp - now_secs() < 15 {
                    (rt, exp) = login();
                    authfile = skopeo.identity_token_authfile(&host, ALICE.0, &rt);
                    pulls.logins.fetch_add(1, Ordering::AcqRel);
                }
                let _held = gate.lock().unwrap();
                let dest = skopeo.scratch("pulled");
                let out = skopeo.copy(
                    &reference,
                    &format!("dir:{}", dest.display()),
                    Creds::AuthFile(&authfile),
                    Creds::None,
                );
                let _ = fs::remove_dir_all(&dest);
                if out.ok {
                    pulls.ok.fetch_add(1, Ordering::AcqRel);
                } else {
                    pulls.failed.lock().unwrap().push(out.stderr);
                }
            }
        })
    };
    let pulled_past = |registry: &Registry, n: usize, what: &str| {
        let target = pulls.ok.load(Ordering::Acquire) + n;
        wait_until(
            Duration::from_secs(120),
            &format!("{n} more pulls {what}"),
            || {
                pulls.ok.load(Ordering::Acquire) >= target
                    || !pulls.failed.lock().unwrap().is_empty()
            },
            || registry.log_tail(),
        );
        let failed = pulls.failed.lock().unwrap();
        assert!(failed.is_empty(), "a pull failed {what}: {}", failed[0]);
    };
    pulled_past(&registry, 3, "before the rotation");

    // 1. The next key: ES256, published at once (bundle, JWKS); purser still signs with key-1.
    let out = keys_ok(&config, &["next", "--alg", "es256"]);
    assert!(out.contains("key-2"), "{out}");
    let next = listed(&config, "key-2", "libtrust");
    assert_eq!(
        fs::read_to_string(&bundle)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    wait_until(
        SETTLE,
        "the JWKS endpoint lists the next key",
        || {
            let r = Http::get(&format!("{}/.well-known/jwks.json", p.base_url()))
                .send()
                .unwrap();
            r.json()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == next.as_str())
        },
        || p.log_tail(),
    );
    assert_eq!(active_kid(&p), first);
    pulled_past(&registry, 2, "with the next key published");

    // 2. The registry restarted on the rewritten bundle: the pull loop waits (only) while the
    // registry process is down.
    {
        let _held = gate.lock().unwrap();
        registry.restart(401);
    }
    pulled_past(&registry, 2, "after the registry's restart");

    // Real docker, logged in before the switch: `docker login` keeps the identity token purser
    // hands out (no password stored), and dockerd trades it for access tokens by the POST
    // refresh grant from then on.
    let guard = HostGuard::new();
    let docker_base = tempfile::Builder::new()
        .prefix("keys-docker-")
        .tempdir()
        .unwrap();
    let mut dockerd = Dockerd::start(docker_base.path());
    let dcfg = dockerd.new_config("alice");
    let host = registry.host();
    let rootfs = dockerd.dir().join("rootfs.tar");
    fs::write(
        &rootfs,
        tar_archive(&[("hello.txt", random_hex(32).as_bytes())]),
    )
    .unwrap();
    let before_switch = format!("{host}/alice/docker-before:1");
    let o = dockerd.cli(
        &dcfg,
        &["import", &rootfs.display().to_string(), &before_switch],
    );
    assert!(o.ok, "docker import: {}{}", o.stdout, o.stderr);
    let password_file = dockerd.dir().join("password");
    fs::write(&password_file, ALICE.1).unwrap();
    let login = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "DOCKER_CONFIG='{}' docker -H 'unix://{}' login -u '{}' --password-stdin '{host}' < '{}'",
            dcfg.display(),
            dockerd.dir().join("docker.sock").display(),
            ALICE.0,
            password_file.display()
        ))
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "docker login: {}{}",
        String::from_utf8_lossy(&login.stdout),
        String::from_utf8_lossy(&login.stderr)
    );
    let stored = fs::read_to_string(dcfg.join("config.json")).unwrap();
    assert!(stored.contains("identitytoken"), "{stored}");
    let o = dockerd.cli(&dcfg, &["push", &before_switch]);
    assert!(
        o.ok,
        "docker push before the switch: {}{}\n{}",
        o.stdout,
        o.stderr,
        dockerd.log_tail()
    );

    // 3. Activate: the running purser switches to ES256 without a restart, and the identity
    // token of the session opened under RS256 keeps working.
    let (old_rt, _) = docker_login(&p);
    keys_ok(&config, &["activate"]);
    wait_until(
        SETTLE,
        "purser signs with the new key",
        || active_kid(&p) == next,
        || p.log_tail(),
    );
    let access = p.token_for(ALICE, &["repository:alice/app:pull"]);
    let header = Jwt::decode(&access).header;
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some(next.as_str()))
    );
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &old_rt),
            ("client_id", "docker"),
            ("service", SERVICE),
            ("scope", "repository:alice/app:pull"),
        ])
        .send()
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "the RS256 identity token after the switch: {}",
        r.text()
    );
    assert_eq!(
        Jwt::decode(r.json()["access_token"].as_str().unwrap()).header["kid"],
        next.as_str()
    );
    pulled_past(&registry, 3, "after the activation");
    // docker, still on the identity token it got under RS256: a push to a repository it has
    // no token for yet needs a new access token, which only the refresh grant can give it now,
    // signed by the new key.
    let issued_before = metric_in(
        &Http::get(&p.metrics_url()).send().unwrap().text(),
        "purser_tokens_issued_total",
        &[("alg", "ES256"), ("kind", "access")],
    );
    let after_switch = format!("{host}/alice/docker-after:1");
    assert!(
        dockerd
            .cli(&dcfg, &["tag", &before_switch, &after_switch])
            .ok
    );
    let o = dockerd.cli(&dcfg, &["push", &after_switch]);
    assert!(
        o.ok,
        "docker push after the switch: {}{}\n{}\n{}",
        o.stdout,
        o.stderr,
        dockerd.log_tail(),
        p.log_tail()
    );
    let issued_after = metric_in(
        &Http::get(&p.metrics_url()).send().unwrap().text(),
        "purser_tokens_issued_total",
        &[("alg", "ES256"), ("kind", "access")],
    );
    assert!(
        issued_after > issued_before,
        "docker's push got no ES256 token"
    );
    let stored = fs::read_to_string(dcfg.join("config.json")).unwrap();
    assert!(
        stored.contains("identitytoken") && !stored.contains(ALICE.1),
        "{stored}"
    );
    dockerd.stop();
    drop(guard);

    // 4. Retire: refused while tokens of key-1 may be valid, accepted after the lifetimes.
    let (code, _, err) = keys(&config, &["retire", "key-1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--force"), "{err}");
    let after = listed(&config, "key-1", "retire after");
    let after = purser_authn::tokens::parse_time(&after).unwrap();
    wait_until(
        Duration::from_secs(200),
        "the retiring key's tokens to expire",
        || now_secs() >= after,
        String::new,
    );
    pulled_past(&registry, 1, "until the old key may go");
    keys_ok(&config, &["retire", "key-1"]);
    assert_eq!(
        fs::read_to_string(&bundle)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    {
        let _held = gate.lock().unwrap();
        registry.restart(401);
    }
    pulled_past(&registry, 3, "after the retirement");
    stop.store(true, Ordering::Release);
    loop_thread.join().unwrap();

    assert!(pulls.failed.lock().unwrap().is_empty());
    assert!(
        pulls.logins.load(Ordering::Acquire) >= 1,
        "a session ended and a new one began during the test"
    );
    assert!(p.is_running(), "purser kept running");
    assert_eq!(p.pid(), pid, "no purser restart");
    // Every pull got its access token through the POST refresh grant (the loop's logins only
    // make identity tokens; no pull sent a password).
    let text = Http::get(&p.metrics_url()).send().unwrap().text();
    let posts = metric_in(
        &text,
        "purser_token_requests_total",
        &[("method", "POST"), ("outcome", "issued")],
    );
    assert!(
        posts >= pulls.ok.load(Ordering::Acquire) as f64,
        "{posts} refresh grants"
    );
}

/// A registry config.yml (2.x) trusting `bundle`.
fn registry_config(dir: &Path, bundle: &Path) -> PathBuf {
    let path = dir.join("registry-config.yml");
    fs::write(
        &path,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /tmp/unused\nhttp:\n  addr: 127.0.0.1:5000\nauth:\n  token:\n    realm: http://127.0.0.1:5001/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            bundle.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn activate_with_registry_config_refuses_until_the_registry_trusts_the_next_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("purser.yaml");
    fs::write(
        &config,
        format!("token:\n  issuer: {ISSUER}\n  service: [{SERVICE}]\n  keys_dir: keyring\n  generate_alg: es256\n"),
    )
    .unwrap();
    keys_ok(&config, &["list"]);
    // The registry was given key-1's certificate only.
    let bundle = dir.path().join("registry-bundle.crt");
    fs::copy(dir.path().join("keyring/key-1.crt"), &bundle).unwrap();
    let reg = registry_config(dir.path(), &bundle);
    keys_ok(&config, &["next"]);

    let (code, _, err) = keys(
        &config,
        &["activate", "--registry-config", &reg.display().to_string()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&reg.display().to_string()),
        "names the registry: {err}"
    );
    assert!(
        err.contains(&dir.path().join("keyring/key-2.crt").display().to_string())
            && err.contains(&bundle.display().to_string()),
        "says what to add where: {err}"
    );
    assert!(listed(&config, "key-2", "libtrust").len() == 59);
    assert!(
        keys_ok(&config, &["list"]).contains("key-2  next"),
        "nothing changed"
    );

    // The fix it names: the next key's certificate in the bundle.
    let mut text = fs::read_to_string(&bundle).unwrap();
    text.push_str(&fs::read_to_string(dir.path().join("keyring/key-2.crt")).unwrap());
    fs::write(&bundle, text).unwrap();
    keys_ok(
        &config,
        &["activate", "--registry-config", &reg.display().to_string()],
    );
    let list = keys_ok(&config, &["list"]);
    assert!(
        list.contains("key-2  active") && list.contains("key-1  retiring"),
        "{list}"
    );
}

/// The canonical thumbprint as registry 3.x computes it from a JWK: RFC 7638's members with EC
/// coordinates stripped of leading zero bytes.
fn distribution_thumbprint_of(jwk: &Value) -> String {
    let strip = |s: &str| {
        let b = BASE64URL_NOPAD.decode(s.as_bytes()).unwrap();
        let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        BASE64URL_NOPAD.encode(&b[start..])
    };
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str().unwrap(),
        strip(jwk["x"].as_str().unwrap()),
        strip(jwk["y"].as_str().unwrap())
    );
    BASE64URL_NOPAD.encode(&Sha256::digest(canonical.as_bytes()))
}

/// The uncompressed EC point of a PEM key, by openssl: (x, y).
fn ec_point_of(key: &Path) -> (Vec<u8>, Vec<u8>) {
    let der = openssl_stdout(&[
        "pkey",
        "-in",
        &key.display().to_string(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    // An EC SubjectPublicKeyInfo ends with the BIT STRING 0x04 || x || y.
    let n = 32;
    let point = &der[der.len() - (2 * n + 1)..];
    assert_eq!(point[0], 4);
    (point[1..=n].to_vec(), point[n + 1..].to_vec())
}

fn fixture_key(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crates/purser-token/tests/fixtures/key-id-vectors")
            .join(name),
    )
    .unwrap()
}

#[test]
fn the_jwks_file_verifies_the_next_keys_tokens_after_activation_for_registry_3() {
    // key-1 is the fixture whose y coordinate starts with a zero byte: its 3.x thumbprint is
    // not RFC 7638's, and its coordinate must be written full length.
    let mut c = base_config();
    set_path(&mut c, "token.signing_key_file", json!("old/signing.pem"));
    set_path(&mut c, "token.key_id", json!("thumbprint"));
    set_path(&mut c, "token.keys_dir", json!("keyring"));
    set_path(&mut c, "token.jwks_file", json!("published/jwks.json"));
    set_path(&mut c, "token.generate_alg", json!("es256"));
    set_path(
        &mut c,
        "token.rotation",
        json!({ "every": "90d", "overlap": "7d" }),
    );
    let p = Purser::start(
        c,
        &[("old/signing.pem", &fixture_key("p256-y-leading-zero.pem"))],
    );
    let config = p.dir().join("purser.yaml");
    let jwks_file = p.dir().join("published/jwks.json");
    let m = |name: &str, labels: &[(&str, &str)]| {
        let text = Http::get(&p.metrics_url()).send().unwrap().text();
        metric_in(&text, name, labels)
    };
    assert_eq!(m("purser_signing_keys", &[("state", "active")]), 1.0);
    assert_eq!(
        m("purser_signing_key_rotation_every_seconds", &[]),
        90.0 * 86400.0
    );

    keys_ok(&config, &["next"]);
    keys_ok(&config, &["activate"]);
    let doc: Value = serde_json::from_str(&fs::read_to_string(&jwks_file).unwrap()).unwrap();
    let published = doc["keys"].as_array().unwrap();
    assert_eq!(published.len(), 2, "active and retiring");
    for (jwk, name) in published.iter().zip(["key-2", "key-1"]) {
        let (x, y) = ec_point_of(&p.dir().join(format!("keyring/{name}.pem")));
        assert_eq!(
            jwk["x"].as_str().unwrap(),
            BASE64URL_NOPAD.encode(&x),
            "{name} x, full length"
        );
        assert_eq!(
            jwk["y"].as_str().unwrap(),
            BASE64URL_NOPAD.encode(&y),
            "{name} y, full length"
        );
        assert_eq!(
            jwk["kid"].as_str().unwrap(),
            distribution_thumbprint_of(jwk),
            "{name} kid"
        );
        assert_eq!(
            jwk["kid"].as_str().unwrap(),
            listed(&config, name, "thumbprint")
        );
    }
    // The fixture's independent vector: the 3.x thumbprint, not RFC 7638's.
    assert_eq!(
        published[1]["kid"],
        "nlKOamrY7wemwRomfqi8M_eWCWRky8AGPrEvY3VvFms"
    );
    assert!(
        BASE64URL_NOPAD
            .decode(published[1]["y"].as_str().unwrap().as_bytes())
            .unwrap()[0]
            == 0
    );

    // The running server signs with key-2 (reloaded), and the file verifies its tokens.
    let next = published[0]["kid"].as_str().unwrap().to_string();
    wait_until(
        SETTLE,
        "purser signs with key-2",
        || active_kid(&p) == next,
        || p.log_tail(),
    );
    let token = Jwt::decode(&p.token_for(ALICE, &["repository:alice/app:pull"]));
    assert_eq!(token.header["kid"], next.as_str());
    token.verify_with_jwks(&doc, ISSUER, SERVICE);
    assert_eq!(m("purser_signing_keys", &[("state", "retiring")]), 1.0);
    assert!(m("purser_signing_key_age_seconds", &[]) < 60.0);

    // A half-written folder is not taken: the last good set keeps signing, the reload counts
    // as failed.
    let manifest = p.dir().join("keyring/manifest.json");
    let good = fs::read_to_string(&manifest).unwrap();
    let failures = m(
        "purser_reloads_total",
        &[("source", "keys"), ("outcome", "failure")],
    );
    fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    wait_until(
        SETTLE,
        "the failed reload of the half manifest",
        || {
            m(
                "purser_reloads_total",
                &[("source", "keys"), ("outcome", "failure")],
            ) > failures
        },
        || p.log_tail(),
    );
    assert_eq!(active_kid(&p), next);
    Jwt::decode(&p.token_for(ALICE, &["repository:alice/app:pull"]))
        .verify_with_jwks(&doc, ISSUER, SERVICE);
    assert!(p.log_text().contains("reload failed"));
    fs::write(&manifest, good).unwrap();
}

#[test]
fn the_signing_key_alerts_fire_on_an_overdue_key_and_a_missing_next_key() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts.yaml");
    require_program(PROMTOOL, "prometheus");
    let dir = tempfile::tempdir().unwrap();
    // p1: overdue (age 200s, every 100s), next key published; p2: in the overlap (age 95s of
    // 100s, overlap 10s) without a next key; p3: no schedule, old key: nothing.
    let series = |instance: &str, every: u32, overlap: u32, age: u32, next: u32| {
        format!(
            "      - series: 'purser_signing_key_rotation_every_seconds{{instance=\"{instance}\",job=\"purser\"}}'\n        values: '{every}x180'\n      - series: 'purser_signing_key_rotation_overlap_seconds{{instance=\"{instance}\",job=\"purser\"}}'\n        values: '{overlap}x180'\n      - series: 'purser_signing_key_age_seconds{{instance=\"{instance}\",job=\"purser\"}}'\n        values: '{age}x180'\n      - series: 'purser_signing_keys{{instance=\"{instance}\",job=\"purser\",state=\"next\"}}'\n        values: '{next}x180'\n"
        )
    };
    let test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}{}{}    alert_rule_test:\n      - eval_time: 30m\n        alertname: PurserSigningKeyOverdue\n        exp_alerts: []\n      - eval_time: 2h\n        alertname: PurserSigningKeyOverdue\n        exp_alerts:\n          - exp_labels: {{ severity: warning, instance: p1, job: purser }}\n            exp_annotations:\n              summary: \"the signing key of purser p1 is overdue for rotation\"\n              description: \"The active key has signed for 3m 20s, past token.rotation.every. `purser keys list` shows the folder; the log says why the schedule did not act ('key rotation schedule', 'reload failed').\"\n      - eval_time: 2h\n        alertname: PurserNextSigningKeyMissing\n        exp_alerts:\n          - exp_labels: {{ severity: warning, instance: p2, job: purser }}\n            exp_annotations:\n              summary: \"purser p2 has published no next signing key within the overlap\"\n              description: \"The active key is within token.rotation.overlap of its end and no next key is published: the rotation will activate a key the registries were never given, or not happen. Run `purser keys next` and give the registries the new bundle or JWKS.\"\n",
        rules.display(),
        series("p1", 100, 10, 200, 1),
        series("p2", 100, 10, 95, 0),
        series("p3", 0, 0, 99999, 0),
    );
    let file = dir.path().join("signing-key-alerts.test.yaml");
    fs::write(&file, test).unwrap();
    let out = std::process::Command::new(PROMTOOL)
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_reports_a_key_folder_that_does_not_load_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("purser.yaml");
    fs::write(
        &config,
        "token:\n  keys_dir: keyring\n  bundle_file: bundle.crt\n  generate_key: false\n  signing_key_file: missing.pem\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let out = run_purser(&["check-config", "--config", &cfg], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("token.keys_dir") && err.contains("holds no keys"),
        "{err}"
    );
    assert!(
        !dir.path().join("keyring").exists(),
        "a dry run makes no folder"
    );

    // A folder made by `purser keys`, then broken: named, and nothing rewritten.
    fs::write(
        &config,
        "token:\n  keys_dir: keyring\n  bundle_file: bundle.crt\n",
    )
    .unwrap();
    keys_ok(&config, &["list"]);
    fs::remove_file(dir.path().join("keyring/key-1.crt")).unwrap();
    let bundle = fs::read_to_string(dir.path().join("bundle.crt")).unwrap();
    let out = run_purser(&["check-config", "--config", &cfg], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("token.keys_dir") && err.contains("key-1.crt"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("bundle.crt")).unwrap(),
        bundle
    );
    // Keys the folder replaces are named as unused.
    fs::write(
        &config,
        "token:\n  keys_dir: keyring\n  publish_keys: [old.crt]\n",
    )
    .unwrap();
    let out = run_purser(&["check-config", "--config", &cfg], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token.publish_keys: is not used with token.keys_dir"),
        "{err}"
    );
}

#[test]
fn two_replicas_sharing_a_key_folder_rotate_once_on_schedule() {
    // every 60s (the least purser takes), overlap 30s: the next key is made 30s after the
    // first start and activated 60s after it.
    let shared = tempfile::tempdir().unwrap();
    // One configuration for both (the same user hashes, as replicas have).
    let base = base_config();
    let config = || {
        let mut c = base.clone();
        set_path(&mut c, "token.keys_dir", json!(shared.path().join("keys")));
        set_path(
            &mut c,
            "token.bundle_file",
            json!(shared.path().join("bundle.crt")),
        );
        set_path(
            &mut c,
            "token.rotation",
            json!({ "every": "60s", "overlap": "30s" }),
        );
        set_path(&mut c, "token.generate_alg", json!("es256"));
        c
    };
    let one = Purser::start(config(), &[]);
    let two = Purser::start(config(), &[]);
    let first = active_kid(&one);
    assert_eq!(
        active_kid(&two),
        first,
        "the second replica uses the folder the first made"
    );
    let rt = docker_login(&one).0;

    let jwks_len = |p: &Purser| {
        Http::get(&format!("{}/.well-known/jwks.json", p.base_url()))
            .send()
            .unwrap()
            .json()["keys"]
            .as_array()
            .unwrap()
            .len()
    };
    wait_until(
        Duration::from_secs(90),
        "the scheduled next key",
        || jwks_len(&two) == 2,
        || two.log_tail(),
    );
    assert_eq!(active_kid(&two), first, "published before it signs");
    assert_eq!(
        fs::read_to_string(shared.path().join("bundle.crt"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    wait_until(
        Duration::from_secs(90),
        "both replicas sign with the scheduled key",
        || active_kid(&one) != first && active_kid(&two) != first,
        || format!("{}\n{}", one.log_tail(), two.log_tail()),
    );
    assert_eq!(active_kid(&one), active_kid(&two));
    let manifest: Value = serde_json::from_str(
        &fs::read_to_string(shared.path().join("keys/manifest.json")).unwrap(),
    )
    .unwrap();
    let states: Vec<(&str, &str)> = manifest["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("key-1", "retiring"), ("key-2", "active")],
        "each step once"
    );
    // A session opened at one replica under the old key goes on at the other.
    let r = Http::post(&two.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "docker"),
            ("service", SERVICE),
            ("scope", "repository:alice/app:pull"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let text = Http::get(&two.metrics_url()).send().unwrap().text();
    assert_eq!(
        metric_in(&text, "purser_signing_keys", &[("state", "retiring")]),
        1.0
    );
}
