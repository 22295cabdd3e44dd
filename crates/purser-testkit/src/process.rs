//! Running the programs the tests need: install checks, log files and their tails, stopping,
//! and what a run printed.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;

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

/// Creates `NAME.stdout` and `NAME.stderr` in `dir`; returns their paths and the two files as
/// a child's stdout and stderr.
pub(crate) fn log_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, Stdio, Stdio) {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let o = fs::File::create(&out).expect("create stdout log");
    let e = fs::File::create(&err).expect("create stderr log");
    (out, err, Stdio::from(o), Stdio::from(e))
}

/// Kills `child` unless it has exited, and reaps it.
pub(crate) fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Waits until `ready()` holds for a server just started as `child`. Panics with `log()` when
/// the child exits first or `deadline` passes (killing it then: nothing is left running).
pub(crate) fn wait_started(
    child: &mut Child,
    what: &str,
    deadline: Duration,
    mut ready: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            panic!("{what} exited at start ({status}); its log:\n{}", log());
        }
        if ready() {
            return;
        }
        if started.elapsed() >= deadline {
            kill_child(child);
            panic!(
                "{what} was not ready within {deadline:?}; its log:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `child` and waits up to `grace` for it to exit; then kills it. Reaps it.
pub(crate) fn stop_child(child: &mut Child, what: &str, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{what} did not exit within {grace:?} of SIGTERM; killing it");
    kill_child(child);
}

/// Waits until nothing accepts connections at `addr` any more (a stopped server's listening
/// socket is closed once the process is gone); panics after `deadline`.
pub(crate) fn wait_port_closed(addr: SocketAddr, deadline: Duration) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        assert!(
            started.elapsed() < deadline,
            "{addr} still accepts connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` random bytes in lower-case hex: unique names, throwaway secrets.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

/// What a program run (skopeo, a container client) printed.
#[derive(Debug)]
pub struct Outcome {
    /// The program exited with status 0.
    pub ok: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
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

/// Runs the real `htpasswd ARGS` (Apache's tool, Debian's apache2-utils); panics with its stderr
/// on failure. Returns stdout.
pub fn htpasswd(args: &[&str]) -> String {
    let bin = require_on_path("htpasswd", "apache2-utils");
    let out = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run htpasswd");
    assert!(
        out.status.success(),
        "htpasswd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("htpasswd output is UTF-8")
}

/// Panics unless the tests run as root, naming what needs it (`chroot`, files owned by another
/// user, a package's install into a scratch root). `scripts/test` runs as root in CI.
pub fn require_root(what: &str) {
    use std::os::unix::fs::MetadataExt;
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(uid, 0, "{what} needs root: run the tests as root (CI does)");
}
