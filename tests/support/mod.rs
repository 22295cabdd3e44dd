//! End-to-end harness shared by the test files in `tests/`: free ports, bounded readiness polls,
//! purser and registry processes, OCI image layouts, skopeo, a small HTTP client and JWT checks.
//!
//! Every process listens on 127.0.0.1 on a port picked at run time, writes its logs into its own
//! temporary folder and is killed when its handle drops, so test files run in parallel.
//! Programs the tests need (skopeo, docker-registry, openssl) must be installed: a missing one
//! fails the test with a message naming the package (`scripts/test` installs them).

#![allow(dead_code)]

pub mod ops;

pub mod clients;
// The throwaway OpenLDAP harness of purser-authn's own tests, shared rather than copied.
#[path = "../../crates/purser-authn/tests/support/slapd.rs"]
pub mod slapd;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD};
use hyper::body::Bytes;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub mod policy;

/// How long a process may take to become ready. Generous: a debug build of purser generating
/// an RSA key takes seconds, and tests run in parallel on small machines. Only a failing run
/// waits this long.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

// ---------------------------------------------------------------------------------------------
// Ports, polling, programs

/// A port on 127.0.0.1 for a test server: see [`slapd::free_port`], shared with purser-authn's
/// tests.
pub use slapd::free_port;

/// Polls `cond` at short, growing intervals until it holds or `timeout` passes; then panics
/// naming `what` and appending `context()` (typically a process's log tail).
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what} did not become ready within {timeout:?}\n{}",
                context()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The last `max` characters of a file, for failure messages.
pub fn file_tail(path: &Path, max: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// Panics with an install hint when `path` is not an executable file.
pub fn require_program(path: &str, package: &str) {
    assert!(
        Path::new(path).is_file(),
        "{path} is missing: install the Debian package `{package}` (scripts/test does it)"
    );
}

/// Finds `name` on PATH or panics with an install hint.
pub fn require_on_path(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not on PATH: install the Debian package `{package}` (scripts/test does it)"
    );
}

fn log_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, Stdio, Stdio) {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let o = fs::File::create(&out).expect("create stdout log");
    let e = fs::File::create(&err).expect("create stderr log");
    (out, err, Stdio::from(o), Stdio::from(e))
}

fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The path of the purser binary built for these tests.
pub fn purser_bin() -> &'static str {
    env!("CARGO_BIN_EXE_purser")
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

// ---------------------------------------------------------------------------------------------
// purser

/// A running `purser serve`, killed on drop.
pub struct Purser {
    child: Child,
    dir: TempDir,
    port: u16,
    metrics_port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Where the signing key lives (absolute).
    key_file: PathBuf,
}

/// The users every e2e config knows, with their passwords.
pub const ALICE: (&str, &str) = ("alice", "alice-secret");
pub const BOB: (&str, &str) = ("bob", "bob-secret");
pub const ADMIN: (&str, &str) = ("admin", "admin-secret");
/// A non-ASCII name and a password with colons.
pub const ZOE: (&str, &str) = ("zoë", "pä:ss:wörd");

pub const ISSUER: &str = "purser-e2e";
pub const SERVICE: &str = "registry.e2e";
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
    pub dir: TempDir,
    pub port: u16,
    pub metrics_port: u16,
    pub cfg_path: PathBuf,
    pub key_file: PathBuf,
}

impl Prepared {
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

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
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
    pub fn log_tail(&self) -> String {
        purser_context(&self.stdout, &self.stderr)
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

fn purser_context(stdout: &Path, stderr: &Path) -> String {
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

// ---------------------------------------------------------------------------------------------
// the distribution registry

/// How the registry authenticates clients.
pub enum RegistryAuth {
    /// No authentication at all (harness self-test).
    None,
    /// `auth.token` pointing at a purser.
    Token {
        realm: String,
        service: String,
        issuer: String,
        rootcertbundle: PathBuf,
    },
}

impl RegistryAuth {
    /// Token auth against `purser`, trusting `bundle`.
    pub fn purser(purser: &Purser, bundle: &Path) -> RegistryAuth {
        RegistryAuth::Token {
            realm: purser.token_url(),
            service: SERVICE.to_string(),
            issuer: ISSUER.to_string(),
            rootcertbundle: bundle.to_path_buf(),
        }
    }
}

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    child: Child,
    dir: TempDir,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Registry {
    pub fn start(auth: RegistryAuth) -> Registry {
        require_program(DOCKER_REGISTRY, "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("registry-e2e-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("mkdir storage");
        let auth_block = match &auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
            } => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_str(realm),
                yaml_str(service),
                yaml_str(issuer),
                yaml_str(&rootcertbundle.display().to_string())
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: {}\n{auth_block}",
            yaml_str(&storage.display().to_string()),
            random_hex(16),
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, config).expect("write registry config");
        let (stdout, stderr, o, e) = log_files(dir.path(), "registry");
        // The registry reads every REGISTRY_* variable as a config override: give it a clean
        // environment.
        let mut cmd = Command::new(DOCKER_REGISTRY);
        cmd.arg("serve")
            .arg(&cfg_path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e);
        let child = cmd.spawn().expect("spawn docker-registry");
        let mut r = Registry {
            child,
            dir,
            port,
            stdout,
            stderr,
        };
        let expect = match auth {
            RegistryAuth::None => 200,
            RegistryAuth::Token { .. } => 401,
        };
        let url = format!("{}/v2/", r.url());
        let logs = (r.stdout.clone(), r.stderr.clone());
        let mut exited = None;
        wait_until(
            READY_TIMEOUT,
            &format!("docker-registry (GET /v2/ == {expect})"),
            || {
                if let Ok(Some(status)) = r.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                matches!(Http::get(&url).send(), Ok(resp) if resp.status == expect)
            },
            || registry_context(&logs.0, &logs.1),
        );
        if let Some(status) = exited {
            panic!(
                "docker-registry exited before it was ready ({status})\n{}",
                registry_context(&r.stdout, &r.stderr)
            );
        }
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// `127.0.0.1:PORT`, the host part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// `docker://127.0.0.1:PORT/REPO_TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host())
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn log_text(&self) -> String {
        let out = fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }
    pub fn log_tail(&self) -> String {
        registry_context(&self.stdout, &self.stderr)
    }
}

fn registry_context(stdout: &Path, stderr: &Path) -> String {
    format!(
        "--- registry stdout (tail):\n{}\n--- registry stderr (tail):\n{}",
        file_tail(stdout, 3000),
        file_tail(stderr, 3000)
    )
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

// ---------------------------------------------------------------------------------------------
// OCI image layouts

/// A content-addressed blob of an image.
#[derive(Clone, Debug)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
        }
    }
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
    )
}

/// An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/...`) holding one
/// image: a config and gzip-compressed tar layers of random content. The layers are compressed
/// already so that a push keeps them (and the manifest) byte for byte.
pub struct OciImage {
    dir: TempDir,
    pub tag: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl OciImage {
    pub fn build(layer_count: usize) -> OciImage {
        let dir = tempfile::Builder::new()
            .prefix("oci-e2e-")
            .tempdir()
            .expect("tempdir");
        let blobs = dir.path().join("blobs").join("sha256");
        fs::create_dir_all(&blobs).expect("mkdir blobs");
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for i in 0..layer_count {
            let mut content = vec![0u8; 2048 + 512 * i];
            rand::thread_rng().fill_bytes(&mut content);
            let tar = tar_archive(&[(&format!("data/file-{i}.bin"), &content)]);
            diff_ids.push(sha256_digest(&tar));
            layers.push(Blob::new(gzip(&tar)));
        }
        let config = Blob::new(
            serde_json::to_vec(&json!({
                "architecture": "amd64",
                "os": "linux",
                "config": { "Labels": { "e2e": random_hex(8) } },
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "history": [],
            }))
            .expect("json"),
        );
        let manifest = Blob::new(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config.digest,
                    "size": config.bytes.len(),
                },
                "layers": layers.iter().map(|l| json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": l.digest,
                    "size": l.bytes.len(),
                })).collect::<Vec<_>>(),
            }))
            .expect("json"),
        );
        let tag = "latest".to_string();
        for b in layers.iter().chain([&config, &manifest]) {
            fs::write(blobs.join(b.hex()), &b.bytes).expect("write blob");
        }
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.digest,
                "size": manifest.bytes.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        fs::write(
            dir.path().join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write index");
        OciImage {
            dir,
            tag,
            manifest,
            config,
            layers,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// `oci:DIR:TAG`, skopeo's source reference.
    pub fn reference(&self) -> String {
        format!("oci:{}:{}", self.dir.path().display(), self.tag)
    }

    /// Panics unless the `dir:` copy at `pulled` holds this image byte for byte: the same
    /// manifest, config and layers.
    pub fn assert_same_as_dir(&self, pulled: &Path) {
        let manifest = fs::read(pulled.join("manifest.json")).expect("pulled manifest.json");
        assert_eq!(
            sha256_digest(&manifest),
            self.manifest.digest,
            "pulled manifest differs: {}",
            String::from_utf8_lossy(&manifest)
        );
        for b in self.layers.iter().chain([&self.config]) {
            let got = fs::read(pulled.join(b.hex()))
                .unwrap_or_else(|e| panic!("pulled blob {} missing: {e}", b.digest));
            assert!(got == b.bytes, "pulled blob {} differs", b.digest);
        }
    }
}

/// A ustar archive of regular files, built by hand.
pub fn tar_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        assert!(name.len() < 100, "tar name too long");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}\0", v, width = field.len() - 1);
            field.copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], content.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

// ---------------------------------------------------------------------------------------------
// skopeo

/// How skopeo authenticates to a registry.
#[derive(Clone, Copy, Debug)]
pub enum Creds<'a> {
    /// Anonymous (`--*-no-creds`).
    None,
    /// `--*-creds USER:PASSWORD`.
    User(&'a str, &'a str),
    /// `--*-authfile FILE`.
    AuthFile(&'a Path),
}

impl<'a> Creds<'a> {
    pub fn of(user: (&'a str, &'a str)) -> Creds<'a> {
        Creds::User(user.0, user.1)
    }
    fn args(&self, prefix: &str) -> Vec<String> {
        match self {
            Creds::None => vec![format!("--{prefix}no-creds")],
            Creds::User(u, p) => vec![format!("--{prefix}creds"), format!("{u}:{p}")],
            Creds::AuthFile(f) => vec![format!("--{prefix}authfile"), f.display().to_string()],
        }
    }
}

/// What a skopeo run printed.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with the output unless the run succeeded.
    pub fn expect_ok(self, what: &str) -> Outcome {
        assert!(
            self.ok,
            "{what} failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// skopeo with its own HOME, XDG_RUNTIME_DIR and a permissive policy, so nothing is shared
/// with the machine's configuration.
pub struct Skopeo {
    home: TempDir,
    policy: PathBuf,
    bin: PathBuf,
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let bin = require_on_path("skopeo", "skopeo");
        let home = tempfile::Builder::new()
            .prefix("skopeo-e2e-")
            .tempdir()
            .expect("tempdir");
        let policy = home.path().join("policy.json");
        fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy");
        fs::create_dir_all(home.path().join("run")).expect("mkdir run");
        fs::create_dir_all(home.path().join("tmp")).expect("mkdir tmp");
        Skopeo { home, policy, bin }
    }

    /// A fresh folder under this skopeo's home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.home.path().join(format!("{name}-{}", random_hex(4)));
        fs::create_dir_all(&p).expect("mkdir scratch");
        p
    }

    /// Runs `skopeo --policy P ARGS`.
    pub fn run(&self, args: &[String]) -> Outcome {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--policy")
            .arg(&self.policy)
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_RUNTIME_DIR", self.home.path().join("run"))
            .env("TMPDIR", self.home.path().join("tmp"))
            .stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("REGISTRY_")
                || k.starts_with("CONTAINERS_")
                || k == "DOCKER_CONFIG"
                || k.starts_with("XDG_CONFIG")
            {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("run skopeo");
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    pub fn copy(&self, src: &str, dst: &str, src_creds: Creds, dst_creds: Creds) -> Outcome {
        let mut args = vec!["copy".to_string()];
        if src.starts_with("docker://") {
            args.push("--src-tls-verify=false".into());
            args.extend(src_creds.args("src-"));
        }
        if dst.starts_with("docker://") {
            args.push("--dest-tls-verify=false".into());
            args.extend(dst_creds.args("dest-"));
        }
        args.push(src.into());
        args.push(dst.into());
        self.run(&args)
    }

    /// Pushes `image` to `registry` as `repo_tag` (`alice/app:1`).
    pub fn push(
        &self,
        image: &OciImage,
        registry: &Registry,
        repo_tag: &str,
        creds: Creds,
    ) -> Outcome {
        self.copy(
            &image.reference(),
            &registry.reference(repo_tag),
            Creds::None,
            creds,
        )
    }

    /// Pulls `repo_tag` into a fresh `dir:` folder; returns the outcome and the folder.
    pub fn pull_to_dir(
        &self,
        registry: &Registry,
        repo_tag: &str,
        creds: Creds,
    ) -> (Outcome, PathBuf) {
        let dest = self.scratch("pulled");
        let out = self.copy(
            &registry.reference(repo_tag),
            &format!("dir:{}", dest.display()),
            creds,
            Creds::None,
        );
        (out, dest)
    }

    /// `skopeo inspect --raw` (the manifest as stored).
    pub fn inspect_raw(&self, reference: &str, creds: Creds) -> Outcome {
        let mut args = vec![
            "inspect".to_string(),
            "--raw".to_string(),
            "--tls-verify=false".to_string(),
        ];
        args.extend(creds.args(""));
        args.push(reference.into());
        self.run(&args)
    }

    pub fn delete(&self, reference: &str, creds: Creds) -> Outcome {
        let mut args = vec!["delete".to_string(), "--tls-verify=false".to_string()];
        args.extend(creds.args(""));
        args.push(reference.into());
        self.run(&args)
    }

    /// Writes an auth file for `host` holding an identity (refresh) token as the docker CLI
    /// writes it after a login that returned one: `auth` = base64("USER:") beside
    /// `identitytoken`. containers/image (skopeo 1.9) ignores an entry without a decodable
    /// `auth`, and then uses the token only through the POST refresh grant.
    pub fn identity_token_authfile(&self, host: &str, user: &str, token: &str) -> PathBuf {
        let path = self.scratch("auth").join("auth.json");
        let entry = json!({
            "auth": BASE64.encode(format!("{user}:").as_bytes()),
            "identitytoken": token,
        });
        let mut auths = serde_json::Map::new();
        auths.insert(host.to_string(), entry);
        fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({ "auths": auths })).expect("json"),
        )
        .expect("write authfile");
        path
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// An HTTP/1.1 client on hyper's client connection, one connection per request
/// (`Connection: close`): tests set any header and can send the body chunked. Tests that must
/// send bytes no client would (tests/e2e_hostile.rs) write to a raw socket instead.
pub struct Http {
    method: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    chunked: bool,
}

/// How long each step of a request (connect, answer, each piece of the body) may take.
const HTTP_STEP_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    // One small runtime per test thread: `send` stays synchronous like the rest of the harness.
    static HTTP_RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("tokio runtime for the test HTTP client");
}

impl Http {
    pub fn get(url: &str) -> Http {
        Http::new("GET", url)
    }
    pub fn post(url: &str) -> Http {
        Http::new("POST", url)
    }
    pub fn new(method: &str, url: &str) -> Http {
        Http {
            method: method.into(),
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            chunked: false,
        }
    }
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Http {
        self.query
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Http {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// HTTP Basic credentials, UTF-8.
    pub fn basic(self, user: &str, password: &str) -> Http {
        let v = format!(
            "Basic {}",
            BASE64.encode(format!("{user}:{password}").as_bytes())
        );
        self.header("Authorization", &v)
    }
    pub fn bearer(self, token: &str) -> Http {
        self.header("Authorization", &format!("Bearer {token}"))
    }
    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Http {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body = Some(body.into_bytes());
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }
    /// Send the body with `Transfer-Encoding: chunked`.
    pub fn chunked(mut self) -> Http {
        self.chunked = true;
        self
    }

    pub fn send(&self) -> std::io::Result<HttpResponse> {
        let rest = self.url.strip_prefix("http://").expect("only http:// URLs");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut target = path.to_string();
        if !self.query.is_empty() {
            let q = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.query)
                .finish();
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&q);
        }
        let bad = |e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
        };
        let mut req = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(&target)
            .header("Host", authority)
            .header("Connection", "close")
            .header("User-Agent", "purser-e2e");
        for (k, v) in &self.headers {
            let v = hyper::header::HeaderValue::from_bytes(v.as_bytes()).map_err(|e| bad(&e))?;
            req = req.header(k.as_str(), v);
        }
        let mut parts = VecDeque::new();
        match &self.body {
            Some(body) if self.chunked => {
                req = req.header("Transfer-Encoding", "chunked");
                // Two chunks, to exercise reassembly.
                let mid = body.len() / 2;
                for part in [&body[..mid], &body[mid..]] {
                    if !part.is_empty() {
                        parts.push_back(Bytes::copy_from_slice(part));
                    }
                }
            }
            Some(body) => {
                req = req.header("Content-Length", body.len());
                parts.push_back(Bytes::copy_from_slice(body));
            }
            None if self.method == "POST" => req = req.header("Content-Length", 0),
            None => {}
        }
        let req = req.body(Parts(parts)).map_err(|e| bad(&e))?;
        let authority = authority.to_string();
        HTTP_RUNTIME.with(|rt| rt.block_on(exchange(&authority, req)))
    }
}

/// One request on a new connection, each step bounded by [`HTTP_STEP_TIMEOUT`].
async fn exchange(authority: &str, req: hyper::Request<Parts>) -> std::io::Result<HttpResponse> {
    use http_body_util::BodyExt;
    let step = |what: &'static str| {
        move |_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
    };
    let io_err = |e: hyper::Error| std::io::Error::other(e);
    let stream = tokio::time::timeout(HTTP_STEP_TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(step("connect"))??;
    // Header names as clients usually write them (`Transfer-Encoding`), for the tests that read
    // the raw request.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(io_err)?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = tokio::time::timeout(HTTP_STEP_TIMEOUT, sender.send_request(req))
            .await
            .map_err(step("the answer"))?
            .map_err(io_err)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut incoming = resp.into_body();
        let mut body = Vec::new();
        while let Some(frame) = tokio::time::timeout(HTTP_STEP_TIMEOUT, incoming.frame())
            .await
            .map_err(step("the body"))?
        {
            if let Ok(data) = frame.map_err(io_err)?.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
    .await;
    conn.abort();
    result
}

/// A request body sent as the given pieces: one for a sized body, two (as two chunks) for a
/// chunked one. Never reported as ended before it is polled, so a chunked body that is empty
/// still goes out as the last chunk alone.
struct Parts(VecDeque<Bytes>);

impl hyper::body::Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }
}

/// Decodes a chunked body (no trailers), for the stand-in servers of the harness's self-tests
/// that read raw requests.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------
// JWT

/// A JWT split and decoded, signature unchecked.
#[derive(Debug)]
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    pub raw: String,
}

impl Jwt {
    pub fn decode(token: &str) -> Jwt {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has three parts");
        let part = |s: &str| -> Value {
            let bytes = BASE64URL_NOPAD
                .decode(s.as_bytes())
                .expect("base64url part");
            serde_json::from_slice(&bytes).expect("JSON part")
        };
        Jwt {
            header: part(parts[0]),
            claims: part(parts[1]),
            raw: token.to_string(),
        }
    }

    /// Verifies the signature against the public key of the PEM certificate `cert` (extracted
    /// with openssl), with the header's algorithm, issuer and audience checked.
    pub fn verify_with_cert(&self, cert: &Path, issuer: &str, audience: &str) {
        let pubkey = openssl_stdout(&[
            "x509",
            "-in",
            &cert.display().to_string(),
            "-pubkey",
            "-noout",
        ]);
        let alg_name = self.header["alg"].as_str().expect("alg");
        let alg: jsonwebtoken::Algorithm = alg_name.parse().expect("known alg");
        let key = match alg {
            jsonwebtoken::Algorithm::RS256
            | jsonwebtoken::Algorithm::RS384
            | jsonwebtoken::Algorithm::RS512 => {
                jsonwebtoken::DecodingKey::from_rsa_pem(&pubkey).expect("RSA public key")
            }
            jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => {
                jsonwebtoken::DecodingKey::from_ec_pem(&pubkey).expect("EC public key")
            }
            other => panic!("unexpected alg {other:?}"),
        };
        let mut v = jsonwebtoken::Validation::new(alg);
        v.set_issuer(&[issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "nbf"]);
        jsonwebtoken::decode::<Value>(&self.raw, &key, &v)
            .unwrap_or_else(|e| panic!("token does not verify against {}: {e}", cert.display()));
    }
}

// ---------------------------------------------------------------------------------------------
// openssl

/// Writes a fresh RSA-2048 key (PKCS#8 PEM) and a self-signed certificate for it.
pub fn openssl_rsa_key_and_cert(key: &Path, cert: &Path) {
    openssl_key_and_cert(key, cert, &["rsa:2048"], "purser e2e");
}

/// Writes a fresh key made by `openssl req -newkey NEWKEY..` (e.g. `["rsa:2048"]`,
/// `["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]`, `["ed25519"]`; PKCS#8 PEM) and a self-signed
/// certificate for it with subject `CN=cn`, valid for two days.
pub fn openssl_key_and_cert(key: &Path, cert: &Path, newkey: &[&str], cn: &str) {
    fs::create_dir_all(key.parent().expect("parent")).expect("mkdir");
    let (key, cert, subject) = (
        key.display().to_string(),
        cert.display().to_string(),
        format!("/CN={cn}"),
    );
    let mut args = vec!["req", "-x509", "-newkey"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-nodes", "-keyout", &key, "-out", &cert, "-subj", &subject, "-days", "2",
    ]);
    openssl_stdout(&args);
}

/// Runs `openssl ARGS` and returns its stdout; panics on failure.
pub fn openssl_stdout(args: &[&str]) -> Vec<u8> {
    let bin = require_on_path("openssl", "openssl");
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The libtrust key id (registry 2.x) of a certificate's or key's public key, computed with
/// openssl: base32(sha256(DER SubjectPublicKeyInfo)[:30]) in 12 groups of 4 joined by ':'.
/// `is_cert` tells whether `pem` is an X.509 certificate or a private key.
pub fn libtrust_kid_openssl(pem: &Path, is_cert: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let pubkey = dir.path().join("pub.pem");
    let der = dir.path().join("pub.der");
    let p = pem.display().to_string();
    let pubkey_pem = if is_cert {
        openssl_stdout(&["x509", "-in", &p, "-pubkey", "-noout"])
    } else {
        openssl_stdout(&["pkey", "-in", &p, "-pubout"])
    };
    fs::write(&pubkey, pubkey_pem).expect("write pub");
    openssl_stdout(&[
        "pkey",
        "-pubin",
        "-in",
        &pubkey.display().to_string(),
        "-outform",
        "DER",
        "-out",
        &der.display().to_string(),
    ]);
    let digest = openssl_stdout(&["dgst", "-sha256", "-binary", &der.display().to_string()]);
    assert_eq!(digest.len(), 32, "sha256 is 32 bytes");
    let b32 = BASE32_NOPAD.encode(&digest[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a Prometheus text exposition into `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// purser + registry + skopeo together

/// A purser, a registry trusting its generated certificate, and a private skopeo.
pub struct Stack {
    pub purser: Purser,
    pub registry: Registry,
    pub skopeo: Skopeo,
}

impl Stack {
    /// Starts purser with `config` and `files` (see [`Purser::start`]) and a registry whose
    /// `rootcertbundle` is `bundle` (relative to purser's folder), by default the generated
    /// `keys/signing.crt`.
    pub fn start_with(config: Value, files: &[(&str, &str)], bundle: Option<&str>) -> Stack {
        let purser = Purser::start(config, files);
        let bundle = match bundle {
            Some(rel) => purser.dir().join(rel),
            None => purser.cert_file(),
        };
        let registry = Registry::start(RegistryAuth::purser(&purser, &bundle));
        Stack {
            purser,
            registry,
            skopeo: Skopeo::new(),
        }
    }

    pub fn start(config: Value) -> Stack {
        Stack::start_with(config, &[], None)
    }

    /// Both processes' log tails, for failure messages.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.purser.log_tail(), self.registry.log_tail())
    }

    /// Pushes `image` as `repo_tag` with `creds`, panicking with the logs on failure.
    pub fn push_ok(&self, image: &OciImage, repo_tag: &str, creds: Creds) {
        let out = self.skopeo.push(image, &self.registry, repo_tag, creds);
        assert!(
            out.ok,
            "push of {repo_tag} failed:\n{}\n{}",
            out.stderr,
            self.logs()
        );
    }

    /// Pulls `repo_tag` with `creds` and checks it is `image` byte for byte.
    pub fn pull_identical(&self, image: &OciImage, repo_tag: &str, creds: Creds) {
        let (out, dir) = self.skopeo.pull_to_dir(&self.registry, repo_tag, creds);
        assert!(
            out.ok,
            "pull of {repo_tag} failed:\n{}\n{}",
            out.stderr,
            self.logs()
        );
        image.assert_same_as_dir(&dir);
    }

    /// True when `repo_tag` exists in the registry (checked as admin).
    pub fn exists(&self, repo_tag: &str) -> bool {
        self.skopeo
            .inspect_raw(&self.registry.reference(repo_tag), Creds::of(ADMIN))
            .ok
    }
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
