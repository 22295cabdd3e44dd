//! A real OpenID provider for the OIDC tests: `oidc-provider` from npm, run by the machine's
//! Node.js over HTTPS with a certificate from a test CA made here. scripts/test installs the
//! package into `target/oidc-provider`; a missing `node` or package fails the test.
//!
//! Each [`OidcClient`] gets tokens by the client-credentials grant: JWT access tokens signed
//! RS256 with the provider's current key, carrying the client's claims, audience and lifetime,
//! the shape of a CI job's ID token.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::openssl::openssl_stdout;
use crate::ports::free_port;
use crate::process::{file_tail, kill_child, log_files, require_on_path};
use crate::wait::{wait_until, READY_TIMEOUT};

/// The pinned version scripts/test installs.
pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";

/// A client of the provider and what its tokens carry.
#[derive(Clone, Debug)]
pub struct OidcClient {
    /// Its `client_id` (also the tokens' `sub`).
    pub id: String,
    /// The tokens' `aud`.
    pub audience: String,
    /// The tokens' lifetime, seconds.
    pub ttl: u64,
    /// Claims added to its tokens (`repository`, `ref`, ...).
    pub claims: Value,
}

impl OidcClient {
    /// A client with `claims`, audience `audience` and a ten-minute lifetime.
    pub fn new(id: &str, audience: &str, claims: Value) -> OidcClient {
        OidcClient {
            id: id.into(),
            audience: audience.into(),
            ttl: 600,
            claims,
        }
    }
}

/// The `node_modules` folder holding oidc-provider; panics with the install command when the
/// package is not there.
pub fn oidc_provider_modules() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let modules = root.join("target/oidc-provider/node_modules");
    assert!(
        modules.join("oidc-provider/package.json").is_file(),
        "oidc-provider is not installed in {}: run scripts/test, or \
         npm install --prefix target/oidc-provider oidc-provider@{OIDC_PROVIDER_VERSION}",
        modules.display()
    );
    modules
}

/// The provider script, next to the tests that use it.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc/provider.mjs")
}

/// A running provider; stopped when dropped.
pub struct OidcProvider {
    dir: TempDir,
    port: u16,
    node: PathBuf,
    modules: PathBuf,
    child: Option<Child>,
    /// Held open: the provider exits when it closes, so a provider shared through a static
    /// (never dropped) ends with the test binary.
    stdin: Option<ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
    kids: Vec<String>,
}

fn secret(id: &str) -> String {
    format!("secret-{id}")
}

impl OidcProvider {
    /// Makes a CA and a certificate for 127.0.0.1, one signing key (`kid` `k1`), and starts the
    /// provider with `clients`, waiting until it listens.
    pub fn start(clients: &[OidcClient]) -> OidcProvider {
        let node = require_on_path("node", "nodejs");
        let modules = oidc_provider_modules();
        let dir = tempfile::Builder::new()
            .prefix("oidc-provider-")
            .tempdir()
            .expect("tempdir");
        let d = |n: &str| dir.path().join(n).display().to_string();
        openssl_stdout(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
            "-subj",
            "/CN=purser test CA",
            "-days",
            "2",
        ]);
        openssl_stdout(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ]);
        fs::write(dir.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl_stdout(&[
            "x509",
            "-req",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-out",
            &d("server.pem"),
            "-days",
            "2",
            "-extfile",
            &d("ext.cnf"),
        ]);
        let port = free_port();
        let config = json!({
            "issuer": format!("https://127.0.0.1:{port}"),
            "port": port,
            "cert_file": d("server.pem"),
            "key_file": d("server.key"),
            "jwks_file": d("jwks.json"),
            "request_log": d("requests.log"),
            "clients": clients.iter().map(|c| json!({
                "client_id": c.id, "client_secret": secret(&c.id),
                "audience": c.audience, "ttl": c.ttl, "claims": c.claims,
            })).collect::<Vec<_>>(),
        });
        fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        fs::write(dir.path().join("requests.log"), "").unwrap();
        let (stdout, stderr) = (
            dir.path().join("node.stdout"),
            dir.path().join("node.stderr"),
        );
        let mut p = OidcProvider {
            dir,
            port,
            node,
            modules,
            child: None,
            stdin: None,
            stdout,
            stderr,
            kids: Vec::new(),
        };
        p.add_key("k1");
        p.run();
        p
    }

    /// Makes a signing key named `kid` and puts it first (the one the provider signs with),
    /// keeping the others published. Takes effect at the next [`OidcProvider::restart`].
    pub fn add_key(&mut self, kid: &str) {
        let out = Command::new(&self.node)
            .arg(script())
            .args(["keygen", kid])
            .output()
            .expect("run node keygen");
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key: Value = serde_json::from_slice(&out.stdout).expect("a JWK");
        let path = self.dir.path().join("jwks.json");
        let mut keys: Vec<Value> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["keys"].as_array().cloned())
            .unwrap_or_default();
        keys.insert(0, key);
        fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        self.kids.insert(0, kid.to_string());
    }

    fn run(&mut self) {
        let (out, err, o, e) = log_files(self.dir.path(), "node");
        self.stdout = out;
        self.stderr = err;
        let child = Command::new(&self.node)
            .arg(script())
            .arg("serve")
            .arg(self.dir.path().join("config.json"))
            .env("OIDC_PROVIDER_MODULES", &self.modules)
            .stdin(Stdio::piped())
            .stdout(o)
            .stderr(e)
            .spawn()
            .expect("spawn node");
        let mut child = child;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        let stdout = self.stdout.clone();
        wait_until(
            READY_TIMEOUT,
            "the OpenID provider",
            || fs::read_to_string(&stdout).is_ok_and(|s| s.contains("ready")),
            || self.log_tail(),
        );
    }

    /// Stops the provider (the issuer becomes unreachable).
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            kill_child(&mut c);
        }
    }

    /// Starts it again on the same port with the same (or newly added) keys.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The issuer URL, `https://127.0.0.1:PORT`, as in its tokens' `iss`.
    pub fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The test CA's certificate (PEM), the `ca_file` that makes purser trust the provider.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The key ids published, the signing one first.
    pub fn kids(&self) -> &[String] {
        &self.kids
    }

    /// A token for `client` by the client-credentials grant (over curl, trusting the test CA).
    pub fn token(&self, client: &str) -> String {
        let curl = require_on_path("curl", "curl");
        let out = Command::new(curl)
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(self.ca_file())
            .args(["-d", "grant_type=client_credentials", "-d", "scope=push"])
            .arg("-d")
            .arg(format!("client_id={client}"))
            .arg("-d")
            .arg(format!("client_secret={}", secret(client)))
            .arg(format!("{}/token", self.issuer()))
            .output()
            .expect("run curl");
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "token for {client}: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            )
        });
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("token for {client}: {body}"))
            .to_string()
    }

    /// How many requests for `path` the provider served (its request log).
    pub fn requests(&self, path: &str) -> usize {
        fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some(path))
            .count()
    }

    /// The provider's log tail, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- provider stdout\n{}\n--- provider stderr\n{}",
            file_tail(&self.stdout, 4000),
            file_tail(&self.stderr, 4000)
        )
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A bound used by waits on the provider's effects (key refresh, staleness).
pub const OIDC_WAIT: Duration = Duration::from_secs(60);
