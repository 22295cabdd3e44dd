//! The purser process: finding the binary, the fixtures every end-to-end config shares
//! (users, issuer, service, policy), preparing a config folder, starting `purser serve` and
//! talking to it, running one-shot commands, and the check that no log holds a secret.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::http::{Http, HttpResponse};
use crate::openssl::openssl_rsa_key_and_cert;
use crate::ports::free_port;
use crate::process::{file_tail, kill_child, log_files};
use crate::wait::{wait_until, READY_TIMEOUT};

/// The purser binary the tests run.
///
/// Cargo builds the binary before the root package's test targets, and tells only them where it
/// is (`CARGO_BIN_EXE_purser`): at compile time always, at run time too with a recent cargo. The
/// kit is a library compiled once for all of them, so it looks at run time: the environment
/// variable when it is set, otherwise beside the running test. A test binary lives in
/// `TARGET/PROFILE/deps/`, the binary in `TARGET/PROFILE/`, whatever `CARGO_TARGET_DIR`, the
/// profile or a `--target` triple say. Only the root package's tests can start purser: other
/// packages' tests (the kit's own, purser-authn's) do not get the binary built for them.
pub fn purser_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_purser") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join(format!("purser{}", std::env::consts::EXE_SUFFIX)))
            .unwrap_or_default();
        assert!(
            bin.is_file(),
            "the purser binary is not at {} (beside {}): only the root package's test targets \
             (tests/*.rs) get it built by cargo",
            bin.display(),
            exe.display()
        );
        bin
    })
}

/// The release build of purser (`cargo build --release --locked --bin purser`), built once per
/// test binary and shared by the tests that package it (the container image, the Debian
/// package): the first caller of a run pays for the build, the others find it done. Its target
/// folder is the one of [`purser_bin`].
pub fn release_purser_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = purser_bin()
            .parent()
            .and_then(Path::parent)
            .expect("the target folder above the debug binary")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // What cargo sets for this test process is not the build's: some build scripts track
        // CARGO_MANIFEST_DIR, and an inherited one would make the build differ from the
        // operator's `cargo build --release` (and from the other test binaries' call).
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            let set_for_tests = k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
                || k.starts_with("CARGO_MANIFEST_")
                || matches!(
                    k.as_str(),
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                );
            if set_for_tests {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(["build", "--release", "--locked", "--bin", "purser"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR").to_string() + "/../..")
            .stdin(Stdio::null())
            .output()
            .expect("run cargo build --release");
        assert!(
            out.status.success(),
            "cargo build --release failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target.join("release").join("purser");
        assert!(bin.is_file(), "no release binary at {}", bin.display());
        bin
    })
}

/// Runs `purser ARGS` with `stdin` and returns its output.
pub fn run_purser(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(purser_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn purser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait purser")
}

/// A bcrypt hash at the lowest cost, for test users.
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

/// A running `purser serve`, killed on drop.
pub struct Purser {
    pub(crate) child: Child,
    dir: TempDir,
    port: u16,
    metrics_port: u16,
    pub(crate) stdout: PathBuf,
    pub(crate) stderr: PathBuf,
    /// Where the signing key lives (absolute).
    key_file: PathBuf,
}

// The users every e2e config knows, with their passwords.
/// A user (name, password) with no group: owns `alice/**`.
pub const ALICE: (&str, &str) = ("alice", "alice-secret");
/// A user (name, password) with no group: may pull `alice/**`.
pub const BOB: (&str, &str) = ("bob", "bob-secret");
/// A user (name, password) in the group `admins`.
pub const ADMIN: (&str, &str) = ("admin", "admin-secret");
/// A non-ASCII name and a password with colons.
pub const ZOE: (&str, &str) = ("zoë", "pä:ss:wörd");

/// The issuer of the e2e tokens (`token.issuer`).
pub const ISSUER: &str = "purser-e2e";
/// The registry's service name (`token.service`, the tokens' audience).
pub const SERVICE: &str = "registry.e2e";
/// Where [`base_config`] keeps the signing key, relative to purser's folder.
pub const KEY_PATH: &str = "keys/signing.pem";

/// The policy of the e2e tests (the format of interface.md).
pub const POLICY: &str = r#"rules:
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: bob reads alice
    match: { account: bob, name: "alice/**" }
    actions: [pull]
  - name: alice owns alice
    match: { account: alice, name: "alice/**" }
    actions: [pull, push, delete]
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push, delete]
  - name: public read, anonymous too
    match: { name: "public/**" }
    actions: [pull]
"#;

/// The e2e configuration as JSON (which is YAML too): static users, anonymous on, the policy
/// above in `policy.yaml`, an RSA key and certificate under `keys/` (made with openssl at start,
/// see [`Purser::start`]). Listen addresses are added at start.
pub fn base_config() -> Value {
    let mut users = serde_json::Map::new();
    for ((name, pw), groups) in [
        (ALICE, vec![]),
        (BOB, vec![]),
        (ADMIN, vec!["admins"]),
        (ZOE, vec![]),
    ] {
        users.insert(
            name.to_string(),
            json!({ "password_hash": bcrypt_hash(pw), "groups": groups }),
        );
    }
    json!({
        "token": {
            "issuer": ISSUER,
            "service": [SERVICE],
            "lifetime": "5m",
            "signing_key_file": KEY_PATH,
            "generate_key": false,
            "generate_alg": "rs256",
        },
        "authn": {
            "order": ["static"],
            "anonymous": true,
            "cache_ttl": "60s",
            "static": { "users": Value::Object(users) },
        },
        "authz": { "policy_file": "policy.yaml" },
        // Tests send wrong passwords on purpose; they must not lock anyone out.
        "limits": { "failed_logins": { "max": 1000, "window": "60s", "lockout": "1s" } },
    })
}

/// `base` (a JSON object) with the keys of `extra` added or replaced.
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// Sets `value` at the dotted `path` of a JSON object, creating objects on the way.
pub fn set_path(config: &mut Value, path: &str, value: Value) {
    let mut cur = config;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !cur.get(*part).is_some_and(Value::is_object) {
            cur[*part] = json!({});
        }
        cur = cur.get_mut(*part).expect("object");
    }
    cur[parts[parts.len() - 1]] = value;
}

/// A purser folder made ready to start: the config (with free listen ports and
/// `log.level: debug`) and `files` written into a fresh temporary folder, the policy defaulting
/// to [`POLICY`], and an openssl RSA key and certificate when the config does not generate its
/// key and `files` holds none at the key path (key generation is purser's own job only in the
/// tests that are about it).
pub struct Prepared {
    /// The folder, purser's working directory.
    pub dir: TempDir,
    /// The token listener's port.
    pub port: u16,
    /// The metrics listener's port.
    pub metrics_port: u16,
    /// The config file (`purser.yaml`).
    pub cfg_path: PathBuf,
    /// The signing key's path (absolute).
    pub key_file: PathBuf,
}

impl Prepared {
    /// Writes `config` and `files` (relative path, content) into a fresh folder named
    /// `PREFIX...`, as described on [`Prepared`].
    pub fn new(mut config: Value, files: &[(&str, &str)], prefix: &str) -> Prepared {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let metrics_port = free_port();
        set_path(
            &mut config,
            "server.listen",
            json!(format!("127.0.0.1:{port}")),
        );
        set_path(
            &mut config,
            "metrics.listen",
            json!(format!("127.0.0.1:{metrics_port}")),
        );
        set_path(&mut config, "log.level", json!("debug"));
        if !files.iter().any(|(p, _)| *p == "policy.yaml") {
            fs::write(dir.path().join("policy.yaml"), POLICY).expect("write policy");
        }
        let key_rel = config["token"]["signing_key_file"]
            .as_str()
            .unwrap_or("data/signing.pem")
            .to_string();
        let generates = config["token"]["generate_key"].as_bool() != Some(false);
        if !generates && !files.iter().any(|(p, _)| *p == key_rel) {
            let key = dir.path().join(&key_rel);
            openssl_rsa_key_and_cert(&key, &key.with_file_name("signing.crt"));
        }
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, content).expect("write file");
        }
        let cfg_path = dir.path().join("purser.yaml");
        let text = serde_json::to_string_pretty(&config).expect("json");
        fs::write(&cfg_path, text).expect("write config");
        let key_file = dir.path().join(key_rel);
        Prepared {
            dir,
            port,
            metrics_port,
            cfg_path,
            key_file,
        }
    }
}

impl Purser {
    /// Starts purser with `config` (JSON written as the YAML config file) plus its listen
    /// addresses and `log.level: debug`, and `files` (relative path, content) written beside it.
    /// The policy file `policy.yaml` is [`POLICY`] unless `files` holds one. When the config
    /// does not generate its key and `files` holds none at the key path, an RSA key and its
    /// self-signed certificate (`signing.crt` beside it) are made with openssl: key generation
    /// is purser's own job only in the tests that are about it.
    pub fn start(config: Value, files: &[(&str, &str)]) -> Purser {
        let p = Prepared::new(config, files, "purser-e2e-");
        let cwd = p.dir.path().to_path_buf();
        let args = vec![
            "serve".to_string(),
            "--config".to_string(),
            p.cfg_path.display().to_string(),
        ];
        Purser::launch(p.dir, &cwd, &args, &[], p.port, p.metrics_port, p.key_file)
    }

    /// Starts purser with a config written verbatim; the listen addresses come from the
    /// `--listen` flag and `PURSER_METRICS__LISTEN`.
    pub fn start_yaml(yaml: &str, files: &[(&str, &str)], key_rel: &str) -> Purser {
        let dir = tempfile::Builder::new()
            .prefix("purser-e2e-")
            .tempdir()
            .expect("tempdir");
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, content).expect("write file");
        }
        let cfg_path = dir.path().join("purser.yaml");
        fs::write(&cfg_path, yaml).expect("write config");
        let port = free_port();
        let metrics_port = free_port();
        let cwd = dir.path().to_path_buf();
        let args = vec![
            "serve".to_string(),
            "--config".to_string(),
            cfg_path.display().to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--log-level".to_string(),
            "debug".to_string(),
        ];
        let env = vec![(
            "PURSER_METRICS__LISTEN".to_string(),
            format!("127.0.0.1:{metrics_port}"),
        )];
        let key_file = dir.path().join(key_rel);
        Purser::launch(dir, &cwd, &args, &env, port, metrics_port, key_file)
    }

    /// Runs `purser ARGS` in `cwd` with `env` (any inherited `PURSER_*` removed) and waits until
    /// `GET http://127.0.0.1:PORT/readyz` answers 200. `dir` receives the logs and is kept alive.
    pub fn launch(
        dir: TempDir,
        cwd: &Path,
        args: &[String],
        env: &[(String, String)],
        port: u16,
        metrics_port: u16,
        key_file: PathBuf,
    ) -> Purser {
        let mut p = Purser::spawn(dir, cwd, args, env, port, metrics_port, key_file);
        let url = format!("{}/readyz", p.base_url());
        p.wait_answering(
            "GET /readyz == 200",
            |_| matches!(Http::get(&url).send(), Ok(r) if r.status == 200),
        );
        p
    }

    /// Runs `purser ARGS` in `cwd` with `env` (any inherited `PURSER_*` removed), without
    /// waiting for it. `dir` receives the logs and is kept alive.
    pub fn spawn(
        dir: TempDir,
        cwd: &Path,
        args: &[String],
        env: &[(String, String)],
        port: u16,
        metrics_port: u16,
        key_file: PathBuf,
    ) -> Purser {
        let (stdout, stderr, o, e) = log_files(dir.path(), "purser");
        let mut cmd = Command::new(purser_bin());
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("PURSER_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn purser");
        Purser {
            child,
            dir,
            port,
            metrics_port,
            stdout,
            stderr,
            key_file,
        }
    }

    /// Runs `cmd` (purser under a wrapper, such as `chroot` into an image's root filesystem)
    /// with its output in `dir`, and waits until `GET http://127.0.0.1:PORT/readyz` answers 200.
    /// The wrapper must exec purser, so that the child is purser itself.
    pub fn launch_command(
        dir: TempDir,
        mut cmd: Command,
        port: u16,
        metrics_port: u16,
        key_file: PathBuf,
    ) -> Purser {
        let (stdout, stderr, o, e) = log_files(dir.path(), "purser");
        cmd.stdin(Stdio::null()).stdout(o).stderr(e);
        let child = cmd.spawn().expect("spawn purser");
        let mut p = Purser {
            child,
            dir,
            port,
            metrics_port,
            stdout,
            stderr,
            key_file,
        };
        let url = format!("{}/readyz", p.base_url());
        p.wait_answering(
            "GET /readyz == 200",
            |_| matches!(Http::get(&url).send(), Ok(r) if r.status == 200),
        );
        p
    }

    /// Polls `ready` until it holds, within the readiness deadline; panics with the logs when
    /// the deadline passes or purser exits first.
    pub fn wait_answering(&mut self, what: &str, ready: impl Fn(&Purser) -> bool) {
        let logs = (self.stdout.clone(), self.stderr.clone());
        let mut exited = None;
        wait_until(
            READY_TIMEOUT,
            &format!("purser ({what})"),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                ready(self)
            },
            || purser_context(&logs.0, &logs.1),
        );
        if let Some(status) = exited {
            panic!(
                "purser exited before it was ready ({status})\n{}",
                purser_context(&self.stdout, &self.stderr)
            );
        }
    }

    /// `http://127.0.0.1:PORT` of the token listener.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// The token endpoint, `BASE/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }
    /// The metrics endpoint, `http://127.0.0.1:METRICS_PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }
    /// The token listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// purser's folder (working directory, config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The signing key's path.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
    /// The certificate written beside a generated key (`signing.crt`).
    pub fn cert_file(&self) -> PathBuf {
        let cert = self.key_file.with_file_name("signing.crt");
        assert!(
            cert.is_file(),
            "purser did not write {} next to its key\n{}",
            cert.display(),
            self.log_tail()
        );
        cert
    }
    /// Everything purser printed so far.
    pub fn log_text(&self) -> String {
        let out = fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }
    /// The tails of stdout and stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        purser_context(&self.stdout, &self.stderr)
    }
    /// The process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Sends SIGHUP.
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }
    /// The audit records printed so far (log.format json), in order.
    pub fn audit_records(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "purser::audit")
            .collect()
    }
    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit(Duration::from_secs(15))
    }

    /// Waits up to `bound` for the process to exit; returns its exit code (None: killed by a
    /// signal). Panics with the log tail when it is still running.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<i32> {
        let mut status = None;
        let logs = (self.stdout.clone(), self.stderr.clone());
        wait_until(
            bound,
            "purser exit",
            || match self.child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    true
                }
                _ => false,
            },
            || purser_context(&logs.0, &logs.1),
        );
        status.and_then(|s| s.code())
    }

    /// `GET {token_url}` with query pairs and optional Basic credentials.
    pub fn token_get(&self, query: &[(&str, &str)], creds: Option<(&str, &str)>) -> HttpResponse {
        let mut req = Http::get(&self.token_url()).query(query);
        if let Some((u, p)) = creds {
            req = req.basic(u, p);
        }
        req.send().expect("token request")
    }

    /// A token for `account` (Basic auth) with `scopes`; panics unless 200.
    pub fn token_for(&self, creds: (&str, &str), scopes: &[&str]) -> String {
        let mut q = vec![("service", SERVICE), ("account", creds.0)];
        for s in scopes {
            q.push(("scope", s));
        }
        let r = self.token_get(&q, Some(creds));
        assert_eq!(
            r.status,
            200,
            "token request failed: {}\n{}",
            r.text(),
            self.log_tail()
        );
        r.json()["token"].as_str().expect("token field").to_string()
    }
}

pub(crate) fn purser_context(stdout: &Path, stderr: &Path) -> String {
    format!(
        "--- purser stdout (tail):\n{}\n--- purser stderr (tail):\n{}",
        file_tail(stdout, 3000),
        file_tail(stderr, 3000)
    )
}

impl Drop for Purser {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        // Every purser any end-to-end test starts has its whole log checked: no test password
        // and nothing shaped like a token (access or refresh) may ever be written there.
        if !std::thread::panicking() {
            if let Some(problem) = secret_in_log(&self.log_text()) {
                panic!("purser's log holds {problem}");
            }
        }
    }
}

/// The first secret found in a log: a password of the test users, or a compact JWS.
pub fn secret_in_log(log: &str) -> Option<String> {
    for (user, password) in [ALICE, BOB, ADMIN, ZOE] {
        if log.contains(password) {
            return Some(format!("the password of {user}"));
        }
    }
    let is_b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    for (i, _) in log.match_indices("eyJ") {
        let rest = &log[i..];
        let header_end = rest.find(|c: char| !is_b64url(c)).unwrap_or(rest.len());
        if rest[header_end..].starts_with(".eyJ") {
            return Some("a signed token".to_string());
        }
    }
    None
}

/// Runs `purser keygen --alg ALG --out DIR` and returns the key and certificate PEM texts.
pub fn keygen(alg: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_purser(
        &[
            "keygen",
            "--alg",
            alg,
            "--out",
            &dir.path().display().to_string(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "purser keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = fs::read_to_string(dir.path().join("signing.pem")).expect("keygen wrote signing.pem");
    let crt = fs::read_to_string(dir.path().join("signing.crt")).expect("keygen wrote signing.crt");
    (key, crt)
}
