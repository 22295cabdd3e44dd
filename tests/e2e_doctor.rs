//! `purser doctor`: a matching registry config passes; each usual mismatch is named with its fix;
//! Debian's default config with `token:` added beside its `htpasswd:`, or in a second `auth:`, is
//! named with what to remove or merge (and the real registry shows why); against a real registry
//! 2.8 a working exchange is reported, and a registry that trusts another key, or gets a kid it
//! never accepts, is named as such.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use purser_testkit::*;
use serde_json::{json, Value};
use tempfile::TempDir;

/// purser's config (the e2e base with a fixed listen address) and an RSA key with its
/// certificate, all made with openssl, in a temporary folder.
struct Offline {
    dir: TempDir,
    config: Value,
}

const LISTEN: &str = "127.0.0.1:5001";
const REALM: &str = "http://127.0.0.1:5001/token";

impl Offline {
    fn new() -> Offline {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join(KEY_PATH);
        openssl_rsa_key_and_cert(&key, &key.with_file_name("signing.crt"));
        let mut config = base_config();
        set_path(&mut config, "server.listen", json!(LISTEN));
        Offline { dir, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cert(&self) -> PathBuf {
        self.path("keys/signing.crt")
    }

    /// Writes the registry's config.yml with an auth.token block.
    fn registry_config(&self, realm: &str, service: &str, issuer: &str, bundle: &Path) -> PathBuf {
        let path = self.path("registry/config.yml");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: 127.0.0.1:5000\nauth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            ),
        )
        .unwrap();
        path
    }

    fn matching_registry(&self) -> PathBuf {
        self.registry_config(REALM, SERVICE, ISSUER, &self.cert())
    }

    /// Runs `purser doctor --config ... --registry-config REG EXTRA...`.
    fn doctor(&self, registry_config: &Path, extra: &[&str]) -> Output {
        let cfg = self.path("purser.yaml");
        fs::write(&cfg, serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        let cfg = cfg.display().to_string();
        let reg = registry_config.display().to_string();
        let mut args = vec!["doctor", "--config", &cfg, "--registry-config", &reg];
        args.extend_from_slice(extra);
        run_purser(&args, "")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line starting with `prefix`; panics with the whole report otherwise.
fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = report.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one line starting with {prefix:?}:\n{report}"
    );
    found[0]
}

fn assert_has(line: &str, needles: &[&str]) {
    for n in needles {
        assert!(line.contains(n), "{n:?} missing from:\n{line}");
    }
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "doctor exit code\n--- stdout:\n{}\n--- stderr:\n{}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every line has the documented shape.
fn assert_shape(report: &str) {
    assert!(!report.trim().is_empty(), "empty report");
    for l in report.lines() {
        let (status, rest) = l.split_once(' ').unwrap_or(("", ""));
        assert!(
            ["ok", "warn", "problem"].contains(&status) && rest.contains(": "),
            "bad line shape: {l}"
        );
        if status == "problem" {
            assert!(l.contains(" -> "), "a problem without a fix: {l}");
        }
    }
}

/// A fresh self-signed certificate of another RSA key.
fn other_cert(dir: &Path) -> PathBuf {
    let key = dir.join("other/other.pem");
    let cert = dir.join("other/other.crt");
    openssl_rsa_key_and_cert(&key, &cert);
    cert
}

#[test]
fn matching_registry_config_passes() {
    let o = Offline::new();
    let out = o.doctor(&o.matching_registry(), &[]);
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 0);
    assert_has(
        line(&r, "ok issuer:"),
        &[&format!("\"{ISSUER}\" on both sides")],
    );
    assert_has(line(&r, "ok service:"), &[SERVICE]);
    assert!(
        r.lines()
            .any(|l| l.starts_with("ok realm:") && l.contains("reaches purser's token path")),
        "{r}"
    );
    let kid = libtrust_kid_openssl(&o.cert(), true);
    assert_has(
        line(&r, "ok trust: (registry 2.x)"),
        &["holds a certificate of purser's signing key", &kid],
    );
    assert!(!r.contains("problem"), "{r}");
}

#[test]
fn env_file_overrides_are_applied() {
    let o = Offline::new();
    let reg = o.registry_config(REALM, SERVICE, "wrong-in-file", &o.cert());
    let env = o.path("registry/env");
    fs::write(
        &env,
        format!("# the registry's environment\nREGISTRY_AUTH_TOKEN_ISSUER={ISSUER}\n"),
    )
    .unwrap();
    let env = env.display().to_string();
    let out = o.doctor(&reg, &["--registry-env", &env]);
    assert_exit(&out, 0);
    line(&stdout(&out), "ok issuer:");
}

#[test]
fn wrong_issuer_is_named_with_its_fix() {
    let o = Offline::new();
    let out = o.doctor(
        &o.registry_config(REALM, SERVICE, "someone-else", &o.cert()),
        &[],
    );
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem issuer:"),
        &[
            "the registry expects issuer \"someone-else\" but purser signs tokens as \"purser-e2e\"",
            "-> set auth.token.issuer: \"purser-e2e\" in the registry config",
        ],
    );
}

#[test]
fn wrong_service_is_named_with_its_fix() {
    let o = Offline::new();
    let out = o.doctor(
        &o.registry_config(REALM, "other.registry", ISSUER, &o.cert()),
        &[],
    );
    let r = stdout(&out);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem service:"),
        &[
            "the registry's service \"other.registry\" is not among purser's token.service",
            "-> add \"other.registry\" to token.service",
        ],
    );
}

#[test]
fn bundle_with_another_key_is_named_with_its_fix() {
    let o = Offline::new();
    let other = other_cert(o.dir.path());
    let out = o.doctor(&o.registry_config(REALM, SERVICE, ISSUER, &other), &[]);
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    let kid = libtrust_kid_openssl(&o.cert(), true);
    let other_kid = libtrust_kid_openssl(&other, true);
    assert_has(
        line(&r, "problem trust: (registry 2.x)"),
        &[
            "holds no certificate of purser's signing key",
            &kid,
            &other_kid,
            "token signed by untrusted key",
            "-> append",
            "signing.crt (purser's certificate)",
        ],
    );
    line(&r, "problem trust: (registry 3.x)");
}

#[test]
fn eddsa_key_with_a_2x_config_is_named_with_its_fix() {
    let mut o = Offline::new();
    let key = o.path("keys/ed25519.pem");
    let cert = o.path("keys/ed25519.crt");
    openssl_key_and_cert(&key, &cert, &["ed25519"], "purser e2e ed25519");
    set_path(
        &mut o.config,
        "token.signing_key_file",
        json!("keys/ed25519.pem"),
    );
    let out = o.doctor(&o.registry_config(REALM, SERVICE, ISSUER, &cert), &[]);
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem algorithm: (registry 2.x)"),
        &[
            "the signing key is Ed25519 (EdDSA), which registry 2.x cannot verify",
            "-> use an RS256, ES256 or ES384 key (`purser keygen --alg es256`), or run registry 3.x",
        ],
    );
    assert_has(
        line(&r, "problem rootcertbundle: (registry 2.x)"),
        &["Ed25519 certificate", "stop at start"],
    );
}

#[test]
fn expired_certificate_is_named_with_its_fix() {
    let mut o = Offline::new();
    let key = o.path(KEY_PATH).display().to_string();
    let csr = o.path("keys/req.csr").display().to_string();
    let expired = o.path("keys/expired.crt");
    openssl_stdout(&[
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        "/CN=purser e2e",
        "-out",
        &csr,
    ]);
    // `-days -1` puts notAfter a day before now.
    openssl_stdout(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-signkey",
        &key,
        "-days",
        "-1",
        "-out",
        &expired.display().to_string(),
    ]);
    set_path(
        &mut o.config,
        "token.certificate_file",
        json!("keys/expired.crt"),
    );
    let out = o.doctor(&o.registry_config(REALM, SERVICE, ISSUER, &expired), &[]);
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    let expiry: Vec<&str> = r
        .lines()
        .filter(|l| l.starts_with("problem certificate expiry:"))
        .collect();
    assert!(!expiry.is_empty(), "{r}");
    assert_has(
        expiry[0],
        &[
            "certificate 1 of",
            "expired.crt expired on",
            "the registry refuses tokens whose x5c holds it",
            "-> issue a new certificate for the signing key",
        ],
    );
}

#[test]
fn realm_pointing_elsewhere_is_named_with_its_fix() {
    let o = Offline::new();
    let out = o.doctor(
        &o.registry_config("http://127.0.0.1:6000/oauth", SERVICE, ISSUER, &o.cert()),
        &[],
    );
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem realm:"),
        &[
            "the realm http://127.0.0.1:6000/oauth does not reach purser",
            "its path /oauth is not purser's token path (/token or /auth/token)",
            "it points at port 6000 but purser listens on 127.0.0.1:5001",
            "-> set auth.token.realm: http://127.0.0.1:5001/token",
        ],
    );
}

#[test]
fn missing_registry_config_is_a_problem() {
    let o = Offline::new();
    let out = o.doctor(&o.path("nowhere/config.yml"), &[]);
    assert_exit(&out, 1);
    assert_has(
        line(&stdout(&out), "problem registry config:"),
        &["cannot read", "-> give --registry-config"],
    );
}

// ---------------------------------------------------------------------------------------------
// Debian's default registry config with purser's token block added

/// Debian's /etc/docker/registry/config.yml as the docker-registry package ships it (storage and
/// address made local), which already has `auth: htpasswd:`.
fn debian_config(storage: &Path, port: u16) -> (String, &'static str) {
    let head = format!(
        "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry\n",
        storage.display()
    );
    let tail =
        "health:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n";
    (head, tail)
}

impl Offline {
    /// purser's `token:` block, indented `indent` spaces.
    fn token_block(&self, indent: &str) -> String {
        format!(
            "{indent}token:\n{indent}  realm: {REALM}\n{indent}  service: {SERVICE}\n{indent}  issuer: {ISSUER}\n{indent}  rootcertbundle: {}\n",
            self.cert().display()
        )
    }

    fn write_registry_config(&self, text: &str) -> PathBuf {
        let path = self.path("registry/config.yml");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::create_dir_all(self.path("registry/storage")).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

/// A registry process, killed when dropped.
struct RegistryProcess(std::process::Child);

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the real registry on `config` until it exits or answers `GET /v2/` on `port`. Returns
/// its exit status (`None` when it came up), the answer when it came up, and its output.
fn run_registry(
    config: &Path,
    port: u16,
) -> (
    Option<std::process::ExitStatus>,
    Option<HttpResponse>,
    String,
) {
    require_program(DOCKER_REGISTRY, "docker-registry");
    let dir = config.parent().unwrap();
    let log = dir.join("registry.log");
    let out = fs::File::create(&log).unwrap();
    // The registry reads every REGISTRY_* variable as a config override: a clean environment.
    let mut registry = RegistryProcess(
        std::process::Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(config)
            .env_clear()
            .env("HOME", dir)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn docker-registry"),
    );
    let url = format!("http://127.0.0.1:{port}/v2/");
    let (mut exited, mut answer) = (None, None);
    wait_until(
        READY_TIMEOUT,
        "docker-registry (exit, or an answer to GET /v2/)",
        || {
            if let Ok(Some(status)) = registry.0.try_wait() {
                exited = Some(status);
                return true;
            }
            answer = Http::get(&url).send().ok();
            answer.is_some()
        },
        || file_tail(&log, 3000),
    );
    drop(registry);
    (exited, answer, fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn token_beside_debians_htpasswd_is_named_and_the_registry_refuses_it() {
    let o = Offline::new();
    let port = free_port();
    let (head, tail) = debian_config(&o.path("registry/storage"), port);
    // The operator adds `token:` under Debian's `auth:`, beside its `htpasswd:`.
    let reg = o.write_registry_config(&format!("{head}{}{tail}", o.token_block("  ")));

    // The fact the finding rests on: registry 2.8 does not start with two auth types.
    let (exited, answer, log) = run_registry(&reg, port);
    assert!(
        exited.is_some_and(|s| !s.success()) && answer.is_none(),
        "the registry started with two auth types:\n{log}"
    );
    assert!(log.contains("must provide exactly one type"), "{log}");

    let out = o.doctor(&reg, &[]);
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem auth:"),
        &[
            "the registry config has auth.token and also auth.htpasswd: the registry refuses to start",
            "-> remove the `htpasswd:` block under `auth:`; the registry accepts exactly one auth type",
        ],
    );
    // The token block is still checked.
    line(&r, "ok issuer:");
    line(&r, "ok service:");
}

#[test]
fn a_second_auth_key_is_named_with_its_lines() {
    let o = Offline::new();
    let port = free_port();
    let (head, tail) = debian_config(&o.path("registry/storage"), port);
    // The operator appends a whole `auth:` block at the end instead.
    let reg = o.write_registry_config(&format!("{head}{tail}auth:\n{}", o.token_block("  ")));

    // The fact the finding rests on: registry 2.8 starts, silently using the last `auth:`.
    let (exited, answer, log) = run_registry(&reg, port);
    assert_eq!(exited, None, "{log}");
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 401, "{log}");
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer ")),
        "{answer:?}"
    );

    let out = o.doctor(&reg, &[]);
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    let l = line(&r, "problem registry config:");
    assert_has(
        l,
        &[
            "config.yml: key \"auth\" appears twice, on lines 16 and 25",
            "the registry silently keeps only the last, and doctor cannot read the file",
            "-> merge the `auth:` blocks into one holding only `token:`, or delete the others",
        ],
    );
    assert!(!r.contains("duplicate entry"), "{r}");
}

// ---------------------------------------------------------------------------------------------
// Against a running registry 2.8 and purser

fn doctor_online(purser: &Purser, registry: &Registry, user: Option<(&str, &str)>) -> Output {
    let cfg = purser.dir().join("purser.yaml").display().to_string();
    let reg_cfg = registry.dir().join("config.yml").display().to_string();
    let url = registry.url();
    let mut args = vec![
        "doctor".to_string(),
        "--config".into(),
        cfg,
        "--registry-config".into(),
        reg_cfg,
        "--registry".into(),
        url,
    ];
    if let Some((u, p)) = user {
        args.push("--user".into());
        args.push(format!("{u}:{p}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_purser(&args, "")
}

#[test]
fn working_round_trip_against_registry_2_8() {
    let purser = Purser::start(base_config(), &[]);
    let registry = Registry::start(RegistryAuth::purser(&purser, &purser.cert_file()));
    let out = doctor_online(&purser, &registry, Some(ALICE));
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 0);
    assert_has(
        line(&r, "ok version:"),
        &[
            "the running registry behaves as registry 2.x",
            "libtrust kid only",
        ],
    );
    line(&r, "ok challenge:");
    line(&r, "ok realm reachable:");
    line(&r, "ok clock:");
    assert_has(
        line(&r, "ok round trip:"),
        &["challenge -> token for \"alice\"", "GET /v2/ with it: 200"],
    );
    // With the version known, results no longer name it.
    line(&r, "ok trust:");
    assert!(
        !r.contains(ALICE.1),
        "the password shows in the report:\n{r}"
    );
}

#[test]
fn registry_started_with_the_wrong_bundle_is_named() {
    let purser = Purser::start(base_config(), &[]);
    let wrong = other_cert(purser.dir());
    let registry = Registry::start(RegistryAuth::purser(&purser, &wrong));
    let out = doctor_online(&purser, &registry, Some(ALICE));
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem round trip:"),
        &[
            "the registry refused the token purser issued (401 invalid_token",
            "-> check rootcertbundle trusts the key",
        ],
    );
    assert_has(
        line(&r, "problem trust: (registry 2.x)"),
        &["holds no certificate of purser's signing key"],
    );
}

#[test]
fn thumbprint_kid_with_a_2x_registry_is_named_with_its_fix() {
    let mut config = base_config();
    set_path(&mut config, "token.key_id", json!("thumbprint"));
    let purser = Purser::start(config, &[]);
    let registry = Registry::start(RegistryAuth::purser(&purser, &purser.cert_file()));
    let out = doctor_online(&purser, &registry, Some(ALICE));
    let r = stdout(&out);
    assert_shape(&r);
    assert_exit(&out, 1);
    line(&r, "ok version:");
    assert_has(
        line(&r, "problem key id:"),
        &[
            "tokens carry a thumbprint kid",
            "which registry 2.x never accepts",
            "-> set token.key_id: libtrust in purser's config",
        ],
    );
    line(&r, "problem round trip:");
}

#[test]
fn wrong_password_is_reported_at_the_token_step() {
    let purser = Purser::start(base_config(), &[]);
    let registry = Registry::start(RegistryAuth::purser(&purser, &purser.cert_file()));
    let out = doctor_online(&purser, &registry, Some(("alice", "not-her-password")));
    let r = stdout(&out);
    assert_exit(&out, 1);
    assert_has(
        line(&r, "problem round trip:"),
        &["purser refused the credentials of \"alice\" (401"],
    );
    assert!(!r.contains("not-her-password"), "{r}");
}

// ---------------------------------------------------------------------------------------------
// scripts/demo

/// True while a process with this id runs something from the demo's folder.
fn demo_process_alive(pid: u32, folder: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let cmd = String::from_utf8_lossy(&c).replace('\0', " ");
            cmd.contains(&folder.display().to_string()) || cmd.contains("purser.yaml")
        })
        .unwrap_or(false)
}

#[test]
fn demo_script_pushes_pulls_and_cleans_up() {
    require_program(DOCKER_REGISTRY, "docker-registry");
    require_on_path("skopeo", "skopeo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("PURSER_BIN", purser_bin())
        .env("TMPDIR", tmp.path())
        .env_remove("DEMO_KEEP")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/demo");
    let text = format!(
        "{}\n--- stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scripts/demo failed:\n{text}");
    for needle in [
        "pulled layer sha256:",
        ": identical",
        "refused, as the policy says",
        "ok round trip: challenge -> token for \"demo\"",
        "rootcertbundle: ",
        "signing_key_file: \"keys/signing.pem\"",
        "demo: pushed and pulled 127.0.0.1:",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the demo's output:\n{text}"
        );
    }
    let left: Vec<_> = fs::read_dir(tmp.path())
        .expect("read TMPDIR")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
    let mut pids = 0;
    for l in text.lines() {
        for name in ["purser pid ", "registry pid "] {
            if let Some(pid) = l.strip_prefix(name) {
                let pid: u32 = pid.trim().parse().expect("pid");
                pids += 1;
                assert!(
                    !demo_process_alive(pid, tmp.path()),
                    "{name}{pid} still runs after the demo"
                );
            }
        }
    }
    assert_eq!(
        pids, 2,
        "the demo names the two processes it starts:\n{text}"
    );
}
