//! The real container clients of the compatibility suite: private dockerd and containerd
//! daemons, podman and buildah with their own storage, each run with bounded waits, and a guard
//! that removes what these programs write outside their roots and checks that nothing (process,
//! mount, file) is left behind.
//!
//! Everything lives under one temporary folder per test run. The daemons listen on unix
//! sockets in that folder; dockerd trusts the loopback registries as plain-HTTP ones.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{file_tail, random_hex, require_program, stop_child, Outcome};
use crate::wait::{wait_until, READY_TIMEOUT};

/// How long one client command may run before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The docker CLI.
pub const DOCKER: &str = "/usr/bin/docker";
/// The docker daemon.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The containerd daemon.
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// containerd's CLI.
pub const CTR: &str = "/usr/bin/ctr";
/// podman.
pub const PODMAN: &str = "/usr/bin/podman";
/// buildah.
pub const BUILDAH: &str = "/usr/bin/buildah";

/// Paths the clients write outside their own roots (measured), deepest first, plus the places
/// where they would write if one of their settings were missed. A path that did not exist
/// before the run is removed after it.
const OUTSIDE_PATHS: &[&str] = &[
    "/etc/docker/key.json",
    "/run/docker/plugins",
    "/run/docker",
    "/run/containers/networks",
    "/run/containers",
    "/var/lib/containers/cache",
    "/var/lib/containers",
    // podman's CNI network lock, made at its first run on a machine.
    "/etc/cni/net.d/cni.lock",
    // containerd's `opt` plugin folder, made at its first start on a machine.
    "/opt/containerd/bin",
    "/opt/containerd/lib",
    "/opt/containerd",
];

/// Folders whose entries (two levels deep) are compared before and after the run: a new entry
/// that is not one of [`OUTSIDE_PATHS`] is something a client left behind.
const WATCHED_ROOTS: &[&str] = &[
    "/etc/docker",
    "/etc/containers",
    "/etc/cni",
    "/run",
    "/var/lib",
    "/var/tmp",
    "/opt",
];

/// Runs `cmd` with its output in files under `logs`, killing it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration, logs: &Path) -> Outcome {
    let id = random_hex(4);
    let out_path = logs.join(format!("cmd-{id}.stdout"));
    let err_path = logs.join(format!("cmd-{id}.stderr"));
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                file_tail(&out_path, 3000),
                file_tail(&err_path, 3000)
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    Outcome {
        ok: status.success(),
        stdout,
        stderr,
    }
}

/// Removes from `cmd`'s environment what would make a client read the machine's or the
/// caller's settings instead of the test's.
fn clean_env(cmd: &mut Command, home: &Path) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("REGISTRY_")
            || k.starts_with("CONTAINERS_")
            || k.starts_with("DOCKER_")
            || k.starts_with("CONTAINERD_")
            || k.starts_with("XDG_")
            || k.starts_with("BUILDAH_")
            || k.starts_with("STORAGE_")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("TMPDIR", home.join("tmp"));
}

fn mkdirs(paths: &[&Path]) {
    for p in paths {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }
}

// ---------------------------------------------------------------------------------------------
// What the run leaves on the machine

fn listing(roots: &[&str]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for root in roots {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            out.insert(p.clone());
            if is_dir {
                if let Ok(inner) = fs::read_dir(&p) {
                    out.extend(inner.flatten().map(|i| i.path()));
                }
            }
        }
    }
    out
}

/// Remembers what existed outside the test's folders before the clients ran; at the end,
/// removes what they wrote there and checks that no process, mount or file of theirs is left.
/// Dropping the guard (also when a test fails) removes the outside writes.
pub struct HostGuard {
    existed: Vec<(PathBuf, bool)>,
    before: BTreeSet<PathBuf>,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (path, existed) in &self.existed {
            if !existed && path.exists() {
                let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
            }
        }
    }
}

impl Default for HostGuard {
    fn default() -> Self {
        HostGuard::new()
    }
}

impl HostGuard {
    /// Takes the inventory: which known outside paths exist, what the watched folders hold.
    pub fn new() -> HostGuard {
        HostGuard {
            existed: OUTSIDE_PATHS
                .iter()
                .map(|p| (PathBuf::from(p), Path::new(p).exists()))
                .collect(),
            before: listing(WATCHED_ROOTS),
        }
    }

    /// Removes each known outside path that did not exist before (deepest first).
    pub fn remove_outside_writes(&self) {
        for (path, existed) in &self.existed {
            if *existed {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            let res = if meta.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            if let Err(e) = res {
                panic!("cannot remove {}: {e}", path.display());
            }
        }
    }

    /// Panics unless nothing of the run is left: no process whose command line or working
    /// folder names `base`, no mount under `base`, no new entry in the watched folders.
    pub fn assert_nothing_left(&self, base: &Path) {
        let base_text = base.display().to_string();
        let mut procs = Vec::new();
        if let Ok(entries) = fs::read_dir("/proc") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let cwd = fs::read_link(e.path().join("cwd")).unwrap_or_default();
                if cmdline.contains(&base_text) || cwd.starts_with(base) {
                    procs.push(format!("{name}: {cmdline}"));
                }
            }
        }
        assert!(procs.is_empty(), "processes left running: {procs:#?}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&base_text)).collect();
        assert!(left.is_empty(), "mounts left behind: {left:#?}");
        let after = listing(WATCHED_ROOTS);
        let new: Vec<&PathBuf> = after.difference(&self.before).collect();
        assert!(
            new.is_empty(),
            "files left behind outside the test's folders: {new:#?}"
        );
        for (path, existed) in &self.existed {
            if !existed {
                assert!(
                    !path.exists(),
                    "{} is left behind (it did not exist before the run)",
                    path.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dockerd and the docker CLI

/// A private dockerd: data, exec root, pid file and socket in its own folder; no iptables, no
/// bridge, vfs storage; every loopback registry is a plain-HTTP one.
pub struct Dockerd {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Dockerd {
    /// Starts dockerd under `BASE/dockerd` and waits until `docker version` answers.
    pub fn start(base: &Path) -> Dockerd {
        require_program(DOCKERD, "docker.io");
        require_program(DOCKER, "docker.io");
        let dir = base.join("dockerd");
        let (data, exec, home) = (dir.join("data"), dir.join("exec"), dir.join("home"));
        mkdirs(&[&data, &exec, &home.join("run"), &home.join("tmp")]);
        let sock = dir.join("docker.sock");
        let log = dir.join("dockerd.log");
        let logf = fs::File::create(&log).expect("create dockerd log");
        let mut cmd = Command::new(DOCKERD);
        cmd.args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--storage-driver=vfs")
            .arg(format!("--data-root={}", data.display()))
            .arg(format!("--exec-root={}", exec.display()))
            .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", sock.display()))
            .arg("--insecure-registry=127.0.0.0/8")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("clone log"))
            .stderr(logf);
        clean_env(&mut cmd, &home);
        let child = cmd.spawn().expect("spawn dockerd");
        let mut d = Dockerd {
            child,
            dir,
            sock,
            log,
        };
        let log = d.log.clone();
        let mut exited = false;
        let probe = d.dir.join("probe");
        fs::create_dir_all(&probe).expect("mkdir probe");
        wait_until(
            READY_TIMEOUT,
            "dockerd (docker version answers)",
            || {
                if let Ok(Some(_)) = d.child.try_wait() {
                    exited = true;
                    return true;
                }
                d.cli(&probe, &["version"]).ok
            },
            || file_tail(&log, 4000),
        );
        assert!(
            !exited,
            "dockerd exited at start:\n{}",
            file_tail(&d.log, 4000)
        );
        d
    }

    /// A fresh, empty docker CLI config folder (`DOCKER_CONFIG`): a client with no login.
    pub fn new_config(&self, name: &str) -> PathBuf {
        let p = self.dir.join(format!("config-{name}-{}", random_hex(4)));
        fs::create_dir_all(&p).expect("mkdir docker config");
        p
    }

    /// Runs `docker -H unix://SOCK ARGS` with `DOCKER_CONFIG=config`.
    pub fn cli(&self, config: &Path, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args);
        let home = self.dir.join("home");
        clean_env(&mut cmd, &home);
        cmd.env("DOCKER_CONFIG", config);
        run_bounded(cmd, COMMAND_TIMEOUT, &self.dir)
    }

    /// dockerd's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The tail of dockerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!("--- dockerd (tail):\n{}", file_tail(&self.log, 4000))
    }
    /// Stops dockerd: SIGTERM, then SIGKILL after a bound.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, "dockerd", STOP_TIMEOUT);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// containerd and ctr

/// A private containerd (config version 2, CRI disabled), root, state, sockets and temporary
/// mounts in its own folder.
pub struct Containerd {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Containerd {
    /// Starts containerd under `BASE/containerd` and waits until `ctr version` answers.
    pub fn start(base: &Path) -> Containerd {
        require_program(CONTAINERD, "containerd");
        require_program(CTR, "containerd");
        let dir = base.join("containerd");
        let home = dir.join("home");
        mkdirs(&[
            &dir.join("root"),
            &dir.join("state"),
            &dir.join("opt"),
            &home.join("run"),
            &home.join("tmp"),
        ]);
        let sock = dir.join("containerd.sock");
        let q = |p: PathBuf| serde_json::to_string(&p.display().to_string()).expect("json");
        let config = format!(
            "version = 2\nroot = {}\nstate = {}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {}\n[ttrpc]\n  address = {}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
            q(dir.join("root")),
            q(dir.join("state")),
            q(sock.clone()),
            q(dir.join("containerd.sock.ttrpc")),
            q(dir.join("opt")),
        );
        let cfg = dir.join("config.toml");
        fs::write(&cfg, config).expect("write containerd config");
        let log = dir.join("containerd.log");
        let logf = fs::File::create(&log).expect("create containerd log");
        let mut cmd = Command::new(CONTAINERD);
        cmd.arg("--config")
            .arg(&cfg)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("clone log"))
            .stderr(logf);
        clean_env(&mut cmd, &home);
        let child = cmd.spawn().expect("spawn containerd");
        let mut c = Containerd {
            child,
            dir,
            sock,
            log,
        };
        let log = c.log.clone();
        let mut exited = false;
        wait_until(
            READY_TIMEOUT,
            "containerd (ctr version answers)",
            || {
                if let Ok(Some(_)) = c.child.try_wait() {
                    exited = true;
                    return true;
                }
                c.ctr("probe", &["version"]).ok
            },
            || file_tail(&log, 4000),
        );
        assert!(
            !exited,
            "containerd exited at start:\n{}",
            file_tail(&c.log, 4000)
        );
        c
    }

    /// Runs `ctr --address SOCK -n NAMESPACE ARGS`.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(CTR);
        cmd.arg("--address")
            .arg(&self.sock)
            .args(["-n", namespace])
            .args(args);
        clean_env(&mut cmd, &self.dir.join("home"));
        run_bounded(cmd, COMMAND_TIMEOUT, &self.dir)
    }

    /// containerd's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The tail of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!("--- containerd (tail):\n{}", file_tail(&self.log, 4000))
    }
    /// Stops containerd: SIGTERM, then SIGKILL after a bound.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, "containerd", STOP_TIMEOUT);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// podman and buildah

/// podman or buildah with their own storage root, run root and temporary folder, vfs storage,
/// and a permissive signature policy of their own.
pub struct Containers {
    bin: &'static str,
    dir: PathBuf,
    policy: PathBuf,
}

impl Containers {
    /// podman with its storage under `BASE/podman`.
    pub fn podman(base: &Path) -> Containers {
        require_program(PODMAN, "podman");
        Containers::new(PODMAN, base.join("podman"))
    }
    /// buildah with its storage under `BASE/buildah`.
    pub fn buildah(base: &Path) -> Containers {
        require_program(BUILDAH, "buildah");
        Containers::new(BUILDAH, base.join("buildah"))
    }

    fn new(bin: &'static str, dir: PathBuf) -> Containers {
        let home = dir.join("home");
        mkdirs(&[
            &dir.join("root"),
            &dir.join("runroot"),
            &dir.join("tmp"),
            &home.join("run"),
            &home.join("tmp"),
        ]);
        let policy = dir.join("policy.json");
        fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy");
        Containers { bin, dir, policy }
    }

    /// True for podman, false for buildah.
    pub fn is_podman(&self) -> bool {
        self.bin == PODMAN
    }

    /// Runs the program with its storage options before `args`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(self.bin);
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--storage-driver")
            .arg("vfs");
        if self.is_podman() {
            cmd.arg("--tmpdir").arg(self.dir.join("tmp")).args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        }
        cmd.args(args).current_dir(&self.dir);
        clean_env(&mut cmd, &self.dir.join("home"));
        run_bounded(cmd, COMMAND_TIMEOUT, &self.dir)
    }

    /// The `--signature-policy` argument pair for commands that copy images.
    pub fn policy_args(&self) -> [String; 2] {
        [
            "--signature-policy".to_string(),
            self.policy.display().to_string(),
        ]
    }

    /// The program's folder (storage, run root, policy).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
