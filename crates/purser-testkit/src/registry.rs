//! The distribution registry (`docker-registry serve`), with or without token auth.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::http::Http;
use crate::ports::free_port;
use crate::process::{file_tail, kill_child, log_files, random_hex, require_program};
use crate::purser::{Purser, ISSUER, SERVICE};
use crate::wait::{wait_until, READY_TIMEOUT};

/// The registry program (Debian's `docker-registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// How the registry authenticates clients.
pub enum RegistryAuth {
    /// No authentication at all (the kit's self-tests).
    None,
    /// `auth.token` pointing at a purser.
    Token {
        /// Where clients get tokens (purser's `/token`).
        realm: String,
        /// The service name tokens must be issued for (their audience).
        service: String,
        /// The issuer tokens must carry.
        issuer: String,
        /// The certificates whose keys may sign tokens.
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
    pub(crate) child: Child,
    pub(crate) dir: TempDir,
    pub(crate) port: u16,
    pub(crate) stdout: PathBuf,
    pub(crate) stderr: PathBuf,
}

impl Registry {
    /// Starts a registry with filesystem storage (deletes enabled) and `auth` in a fresh
    /// temporary folder, and waits until `GET /v2/` answers 200 (no auth) or 401 (token auth).
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
        let child = spawn_registry(dir.path(), o, e);
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
        r.wait_ready(expect);
        r
    }

    /// Stops the registry and starts it again on the same port, configuration and storage (it
    /// reads its `rootcertbundle` again), and waits until `GET /v2/` answers `expect` (401 with
    /// token auth). Its logs are appended to.
    pub fn restart(&mut self, expect: u16) {
        kill_child(&mut self.child);
        let append = |p: &Path| {
            fs::OpenOptions::new()
                .append(true)
                .open(p)
                .expect("open registry log")
        };
        let (o, e) = (append(&self.stdout), append(&self.stderr));
        self.child = spawn_registry(self.dir.path(), o, e);
        self.wait_ready(expect);
    }

    fn wait_ready(&mut self, expect: u16) {
        let r = self;
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
    }

    /// `http://127.0.0.1:PORT`.
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
    /// The registry's folder (config, storage, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Everything the registry printed so far (its access log included).
    pub fn log_text(&self) -> String {
        let out = fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }
    /// The tails of both logs, for failure messages.
    pub fn log_tail(&self) -> String {
        registry_context(&self.stdout, &self.stderr)
    }
}

/// `docker-registry serve DIR/config.yml` in `dir`. The registry reads every REGISTRY_*
/// variable as a config override: it gets a clean environment.
fn spawn_registry(dir: &Path, out: impl Into<Stdio>, err: impl Into<Stdio>) -> Child {
    let mut cmd = Command::new(DOCKER_REGISTRY);
    cmd.arg("serve")
        .arg(dir.join("config.yml"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    cmd.spawn().expect("spawn docker-registry")
}

pub(crate) fn registry_context(stdout: &Path, stderr: &Path) -> String {
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

/// `s` as a quoted YAML (JSON) string.
pub(crate) fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}
