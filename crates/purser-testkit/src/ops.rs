//! Helpers of the operations tests: a test certificate authority made with openssl, purser
//! started over HTTPS or waited on by `/healthz`, a registry serving HTTPS, signals, the served
//! certificate's fingerprint, HTTPS requests with openssl, and checks of JSON logs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::http::Http;
use crate::openssl::openssl_stdout;
use crate::ports::free_port;
use crate::process::{
    file_tail, kill_child, log_files, random_hex, require_on_path, require_program,
};
use crate::purser::{purser_bin, set_path, Prepared, Purser, ISSUER, SERVICE};
use crate::registry::{registry_context, yaml_str, Registry, DOCKER_REGISTRY};
use crate::wait::{wait_until, READY_TIMEOUT};

/// Prometheus's checker (Debian's `prometheus`).
pub const PROMTOOL: &str = "/usr/bin/promtool";

// ---------------------------------------------------------------------------------------------
// certificates

/// A certificate authority for one test, with leaf certificates for 127.0.0.1 issued on demand.
pub struct TestCa {
    dir: TempDir,
    /// The CA's certificate (PEM), the bundle clients trust.
    pub cert: PathBuf,
    key: PathBuf,
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    /// A fresh CA (P-256, valid two days) in its own temporary folder.
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("purser-ca-")
            .tempdir()
            .expect("tempdir");
        let cert = dir.path().join("ca.crt");
        let key = dir.path().join("ca.key");
        openssl_stdout(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=purser e2e CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ]);
        TestCa { dir, cert, key }
    }

    /// A fresh key and a certificate for `127.0.0.1` and `localhost` signed by this CA, written
    /// as `NAME.crt` and `NAME.key` in `out`. Returns (certificate, key).
    pub fn issue(&self, out: &Path, name: &str) -> (PathBuf, PathBuf) {
        fs::create_dir_all(out).expect("mkdir");
        let cert = out.join(format!("{name}.crt"));
        let key = out.join(format!("{name}.key"));
        let csr = self
            .dir
            .path()
            .join(format!("{name}-{}.csr", random_hex(4)));
        let ext = self
            .dir
            .path()
            .join(format!("{name}-{}.ext", random_hex(4)));
        fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write ext");
        openssl_stdout(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key.display().to_string(),
            "-out",
            &csr.display().to_string(),
        ]);
        openssl_stdout(&[
            "x509",
            "-req",
            "-in",
            &csr.display().to_string(),
            "-CA",
            &self.cert.display().to_string(),
            "-CAkey",
            &self.key.display().to_string(),
            "-set_serial",
            &format!("0x{}", random_hex(8)),
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ]);
        (cert, key)
    }
}

/// The SHA-256 fingerprint of the first certificate in PEM `pem` (`AB:CD:...`).
pub fn fingerprint_of_pem(pem: &[u8]) -> String {
    let bin = require_on_path("openssl", "openssl");
    let mut child = Command::new(bin)
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pem)
        .expect("write pem");
    let out = child.wait_with_output().expect("openssl x509");
    assert!(
        out.status.success(),
        "openssl x509 -fingerprint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.trim()
        .rsplit_once('=')
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| panic!("unexpected fingerprint output {text:?}"))
}

/// The SHA-256 fingerprint of the certificate in the PEM file `cert`.
pub fn fingerprint_of_file(cert: &Path) -> String {
    fingerprint_of_pem(&fs::read(cert).expect("read certificate"))
}

/// The fingerprint of the certificate that `127.0.0.1:port` presents in a TLS handshake (taken
/// with `openssl s_client`), or None when no handshake completes.
pub fn served_fingerprint(port: u16) -> Option<String> {
    let bin = require_on_path("openssl", "openssl");
    let out = Command::new(bin)
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[start..].find(end_marker)? + start + end_marker.len();
    Some(fingerprint_of_pem(&text.as_bytes()[start..end]))
}

// ---------------------------------------------------------------------------------------------
// HTTPS with openssl s_client

/// An HTTPS answer.
pub struct HttpsResponse {
    /// The status code.
    pub status: u16,
    /// Everything after the header block, as text.
    pub body: String,
}

/// `GET path` over HTTPS to `127.0.0.1:port` with `openssl s_client`. With `ca`, the server's
/// chain must verify to it and name 127.0.0.1; without, the system's trust store decides. Err
/// holds openssl's complaint when no HTTP answer came (refused, failed verification).
pub fn https_get(ca: Option<&Path>, port: u16, path: &str) -> Result<HttpsResponse, String> {
    let bin = require_on_path("openssl", "openssl");
    let mut cmd = Command::new(bin);
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-quiet",
        "-verify_return_error",
        "-verify_ip",
        "127.0.0.1",
    ]);
    if let Some(ca) = ca {
        cmd.arg("-CAfile").arg(ca);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    // A refused handshake closes stdin early; the error shows in the output below.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes());
    let out = child.wait_with_output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    match status {
        Some(status) => Ok(HttpsResponse {
            status,
            body: text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default(),
        }),
        None => Err(format!(
            "no HTTP answer over TLS: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// purser

/// What [`start_purser`] waits for before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `/readyz` answers 200.
    Ready,
    /// `/healthz` answers 200 (the process serves; some backend may be down).
    Healthy,
}

/// How the token listener is reached.
pub enum Scheme<'a> {
    /// Plain HTTP.
    Http,
    /// HTTPS, verified against this CA bundle.
    Https(&'a Path),
}

/// Starts purser like [`Purser::start`] (config written beside `files`, an openssl RSA signing
/// key unless the config generates one, `log.level: debug`), with `log.format: json`, and waits
/// for `wait` over `scheme`.
pub fn start_purser(
    mut config: Value,
    files: &[(&str, &str)],
    scheme: Scheme,
    wait: Wait,
) -> Purser {
    set_path(&mut config, "log.format", json!("json"));
    let Prepared {
        dir,
        port,
        metrics_port,
        cfg_path,
        key_file,
    } = Prepared::new(config, files, "purser-ops-");

    let cwd = dir.path().to_path_buf();
    let args = [
        "serve".to_string(),
        "--config".to_string(),
        cfg_path.display().to_string(),
    ];
    let mut p = Purser::spawn(dir, &cwd, &args, &[], port, metrics_port, key_file);
    let path = match wait {
        Wait::Ready => "/readyz",
        Wait::Healthy => "/healthz",
    };
    p.wait_answering(&format!("GET {path} == 200"), |p| match &scheme {
        Scheme::Http => {
            matches!(Http::get(&format!("{}{path}", p.base_url())).send(), Ok(r) if r.status == 200)
        }
        Scheme::Https(ca) => {
            matches!(https_get(Some(ca), p.port(), path), Ok(r) if r.status == 200)
        }
    });
    p
}

/// The process id of a running purser.
pub fn pid(p: &Purser) -> u32 {
    p.child.id()
}

/// Sends `signal` (`TERM`, `INT`, `HUP`) to purser.
pub fn send_signal(p: &Purser, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid(p).to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits up to `bound` for purser to exit; returns its exit code (None: killed by a signal).
pub fn wait_exit(p: &mut Purser, bound: Duration) -> Option<i32> {
    p.wait_exit(bound)
}

/// The JSON log lines purser wrote so far (stderr), each parsed; panics on a line that is not
/// a JSON object. A last line still being written (no newline yet) is left for the next call.
pub fn json_log(p: &Purser) -> Vec<Value> {
    let text = fs::read_to_string(&p.stderr).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "log line is not a JSON object: {l}");
            v
        })
        .collect()
}

/// The request id a JSON log line carries (from the request span), if any.
pub fn request_id_of(line: &Value) -> Option<&str> {
    line.get("span")?.get("request_id")?.as_str()
}

/// Finds the first JWT-shaped string (`eyJ...` `.` `eyJ...`) in `text`.
pub fn find_jwt(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut i = 0;
    while let Some(off) = text[i..].find("eyJ") {
        let start = i + off;
        let mut j = start;
        while j < b.len() && is_b64(b[j]) {
            j += 1;
        }
        if j + 4 < b.len() && b[j] == b'.' && text[j + 1..].starts_with("eyJ") {
            let mut k = j + 1;
            while k < b.len() && (is_b64(b[k]) || b[k] == b'.') {
                k += 1;
            }
            return Some(text[start..k].to_string());
        }
        i = start + 3;
    }
    None
}

/// The checks every JSON log of these tests must pass: each line is a JSON object; every line
/// written inside a request (and every audit record) carries a request id; no line contains
/// any of `secrets` (passwords, hashes, tokens) or anything shaped like a JWT.
pub fn assert_clean_json_log(p: &Purser, secrets: &[&str]) {
    let lines = json_log(p);
    assert!(!lines.is_empty(), "purser wrote no log");
    let raw = fs::read_to_string(&p.stderr).unwrap_or_default()
        + &fs::read_to_string(&p.stdout).unwrap_or_default();
    for line in &lines {
        if line.get("span").is_some() || line["target"] == "purser::audit" {
            assert!(
                request_id_of(line).is_some_and(|id| !id.is_empty()),
                "a request's log line without a request id: {line}"
            );
        }
    }
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !raw.contains(s),
            "the log contains a secret ({} characters, starting {:?})",
            s.len(),
            s.chars().take(6).collect::<String>()
        );
    }
    if let Some(jwt) = find_jwt(&raw) {
        panic!("the log contains a token: {}...", &jwt[..jwt.len().min(20)]);
    }
}

// ---------------------------------------------------------------------------------------------
// metrics

/// `promtool check metrics` over `text`; panics with promtool's complaints unless it accepts.
pub fn promtool_check_metrics(text: &str) {
    require_program(PROMTOOL, "prometheus");
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET purser's `/metrics` text.
pub fn metrics_text(p: &Purser) -> String {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    assert_eq!(r.status, 200, "GET /metrics");
    r.text()
}

// ---------------------------------------------------------------------------------------------
// a registry over HTTPS

/// Starts the distribution registry serving HTTPS with `cert`/`key`, with `auth.token` pointing
/// at `realm` and trusting `bundle`; `ca` goes into its `SSL_CERT_FILE` (its own outgoing TLS
/// trusts the test CA) and verifies its readiness (`GET /v2/` == 401).
pub fn start_tls_registry(
    realm: &str,
    bundle: &Path,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Registry {
    require_program(DOCKER_REGISTRY, "docker-registry");
    let dir = tempfile::Builder::new()
        .prefix("registry-ops-")
        .tempdir()
        .expect("tempdir");
    let port = free_port();
    let storage = dir.path().join("storage");
    fs::create_dir_all(&storage).expect("mkdir storage");
    let q = |p: &Path| yaml_str(&p.display().to_string());
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: {}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        q(&storage),
        random_hex(16),
        q(cert),
        q(key),
        yaml_str(realm),
        yaml_str(SERVICE),
        yaml_str(ISSUER),
        q(bundle),
    );
    let cfg_path = dir.path().join("config.yml");
    fs::write(&cfg_path, config).expect("write registry config");
    let (stdout, stderr, o, e) = log_files(dir.path(), "registry");
    let child = Command::new(DOCKER_REGISTRY)
        .arg("serve")
        .arg(&cfg_path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("SSL_CERT_FILE", ca)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("spawn docker-registry");
    let mut r = Registry {
        child,
        dir,
        port,
        stdout,
        stderr,
    };
    let logs = (r.stdout.clone(), r.stderr.clone());
    let mut exited = None;
    wait_until(
        READY_TIMEOUT,
        "docker-registry over HTTPS (GET /v2/ == 401)",
        || {
            if let Ok(Some(status)) = r.child.try_wait() {
                exited = Some(status);
                return true;
            }
            matches!(https_get(Some(ca), port, "/v2/"), Ok(resp) if resp.status == 401)
        },
        || registry_context(&logs.0, &logs.1),
    );
    if let Some(status) = exited {
        panic!(
            "docker-registry exited before it was ready ({status})\n{}",
            r.log_tail()
        );
    }
    r
}

/// A folder holding `ca.crt`, for skopeo's `--*-cert-dir`: containers/image trusts it for the
/// registry and, through the same client, for the token realm.
pub fn cert_dir(ca: &Path, under: &Path) -> PathBuf {
    let d = under.join(format!("certs-{}", random_hex(4)));
    fs::create_dir_all(&d).expect("mkdir certs");
    fs::copy(ca, d.join("ca.crt")).expect("copy CA");
    d
}

/// The `password_hash` values of purser's config file (secrets that must stay out of logs).
pub fn config_hashes(p: &Purser) -> Vec<String> {
    let text = fs::read_to_string(p.dir().join("purser.yaml")).expect("read purser.yaml");
    let config: Value = serde_json::from_str(&text).expect("the config the tests write is JSON");
    let mut out = Vec::new();
    if let Some(users) = config["authn"]["static"]["users"].as_object() {
        for u in users.values() {
            if let Some(h) = u["password_hash"].as_str() {
                out.push(h.to_string());
            }
        }
    }
    out
}

/// Runs `purser ARGS` that must end by itself; panics if it still runs after `bound`.
pub fn run_purser_bounded(args: &[&str], bound: Duration) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path, o, e) = log_files(dir.path(), "run");
    let mut child = Command::new(purser_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("spawn purser");
    let mut status = None;
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        kill_child(&mut child);
        panic!(
            "purser {args:?} still ran after {bound:?}\n{}",
            file_tail(&err_path, 3000)
        );
    };
    std::process::Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

/// Polls until `cond` holds (bounded); returns how long it took.
pub fn poll(bound: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    wait_until(bound, what, cond, String::new);
    started.elapsed()
}
