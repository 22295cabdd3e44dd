//! A throwaway Redis server for tests.
//!
//! `RedisServer::start()` runs Debian's `/usr/bin/redis-server` in the foreground on
//! `127.0.0.1` and a free port, without persistence (`--save '' --appendonly no`), its working
//! folder and log in a temporary folder, and returns once it answers `PING`. `stop()` and
//! `start_again()` stop it and start it on the same port (empty again: nothing is saved);
//! dropping it kills it. [`RedisServer::cli`] runs `redis-cli` against it, and
//! [`RedisServer::keys_without_expiry`] lists the keys that would stay forever.
//!
//! Requires the Debian package `redis-server` (it brings `redis-cli`); a missing program is a
//! test failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{kill_child, wait_port_closed, wait_started};

/// The Redis server program.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Its command-line client.
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// How long the server gets to start or stop before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running redis-server (see the module's documentation), killed on drop.
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts a server on a free port; panics with the reason when it cannot.
    pub fn start() -> RedisServer {
        for (program, what) in [(REDIS_SERVER, "redis-server"), (REDIS_CLI, "redis-cli")] {
            assert!(
                Path::new(program).exists(),
                "{program} not found: the Redis tests need {what} (apt-get install redis-server)"
            );
        }
        let mut r = RedisServer {
            dir: tempfile::Builder::new()
                .prefix("redis-e2e-")
                .tempdir()
                .expect("temporary folder"),
            child: None,
            port: free_port(),
        };
        r.start_again();
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Everything the server logged so far, across restarts.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Whether the server answers `PING` now.
    pub fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Starts the server (again) on the same port, empty; returns when it answers `PING`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {REDIS_SERVER}: {e}"));
        let mut child = child;
        wait_started(
            &mut child,
            "redis-server",
            DEADLINE,
            || self.answers(),
            || self.log(),
        );
        self.child = Some(child);
    }

    /// Stops the server (SIGKILL: as abrupt as a crash) and waits until its port is closed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill_child(&mut child);
        wait_port_closed(([127, 0, 0, 1], self.port).into(), DEADLINE);
    }

    /// Runs `redis-cli -p PORT ARGS` and returns its output; panics when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(REDIS_CLI)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {REDIS_CLI}: {e}"));
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key (`SCAN`).
    pub fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The keys with no expiry (`TTL` -1).
    pub fn keys_without_expiry(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| self.cli(&["TTL", k]).trim() == "-1")
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
