//! The benchmark run: makes keys, users and policies, measures the limits of one core, starts
//! the server once per scenario pinned to its core, drives it from the other core, and prints
//! one table with the acceptance checks under it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::fixtures::{self, ActiveUsers, ServerFiles};
use crate::load::{LoadResult, LoadSpec};
use crate::procstat;
use crate::rates::Rate;

/// How to start the server under test: a program and the arguments before its subcommand
/// (`purser` itself, or this benchmark's copy of `purser serve` for smoke runs).
#[derive(Clone, Debug)]
pub struct ServerCommand {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub server: ServerCommand,
    /// This benchmark's own binary: the load generator, the rates, the HTTP limit.
    pub bench_exe: PathBuf,
    pub work: PathBuf,
    /// `taskset` CPU lists.
    pub server_cpus: String,
    pub load_cpus: String,
    /// A short run that checks every part works, with figures of no value.
    pub smoke: bool,
    /// Run only the scenarios whose name contains one of these (all when empty).
    pub only: Vec<String>,
}

pub(crate) struct Timing {
    pub(crate) warmup: Duration,
    measure: Duration,
    cold_measure: Duration,
    rate: Duration,
    active_users: usize,
}

impl Options {
    pub(crate) fn timing(&self) -> Timing {
        if self.smoke {
            Timing {
                warmup: Duration::from_millis(200),
                measure: Duration::from_millis(600),
                cold_measure: Duration::from_millis(1200),
                rate: Duration::from_millis(200),
                active_users: 10,
            }
        } else {
            Timing {
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(6),
                cold_measure: Duration::from_secs(12),
                rate: Duration::from_secs(3),
                active_users: 100,
            }
        }
    }
}

/// Users in the large htpasswd file.
pub const LARGE_USERS: usize = 100_000;
/// Cost of every bcrypt hash the benchmark writes.
pub const BCRYPT_COST: u32 = 10;
/// Prepared requests per rotation.
const ROTATION: usize = 1000;
/// How often `/healthz` is asked during the cold-path run.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn keygen_name(self) -> &'static str {
        match self {
            Alg::Rs256 => "rs256",
            Alg::Es256 => "es256",
            Alg::EdDsa => "eddsa",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Target {
    Purser {
        alg: Alg,
        /// Credential cache on (warm path) or off (cold path).
        warm: bool,
        large_users: bool,
        large_policy: bool,
        scopes: usize,
        /// The clients log in with machine tokens (`authn.order: [tokens]`) instead of
        /// htpasswd passwords.
        #[serde(default)]
        machine_tokens: bool,
        /// The failed-login state in a redis-server of its own (`state.backend: redis`).
        #[serde(default)]
        redis: bool,
        /// The 10,000-rule policy as the shadow policy (`authz.shadow_policy_file`) beside
        /// the live one.
        #[serde(default)]
        shadow: bool,
        /// The clients log in with OIDC ID tokens of a stand-in issuer (`authn.order: [oidc]`).
        #[serde(default)]
        oidc: bool,
    },
    /// The minimal hyper endpoint.
    Limit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub target: Target,
    pub connections: usize,
    /// Ask `/healthz` every 10 ms alongside.
    pub probe: bool,
}

/// Every scenario, in run order (the HTTP limit after ES256 so it can copy its answer size).
pub fn scenarios() -> Vec<Scenario> {
    let purser = |alg, warm, large_users, large_policy, scopes| Target::Purser {
        alg,
        warm,
        large_users,
        large_policy,
        scopes,
        machine_tokens: false,
        redis: false,
        shadow: false,
        oidc: false,
    };
    let mut out = Vec::new();
    for alg in [Alg::Es256, Alg::EdDsa, Alg::Rs256] {
        for c in [1, 16, 64] {
            out.push(Scenario {
                name: format!("warm {} c{c}", alg.label()),
                target: purser(alg, true, false, false, 1),
                connections: c,
                probe: false,
            });
        }
    }
    for c in [1, 16, 64] {
        out.push(Scenario {
            name: format!("http limit c{c}"),
            target: Target::Limit,
            connections: c,
            probe: false,
        });
    }
    out.push(Scenario {
        name: "warm ES256 c16 10k rules".into(),
        target: purser(Alg::Es256, true, false, true, 1),
        connections: 16,
        probe: false,
    });
    out.push(Scenario {
        name: "warm ES256 c16 100k users".into(),
        target: purser(Alg::Es256, true, true, false, 1),
        connections: 16,
        probe: false,
    });
    out.push(Scenario {
        name: "warm ES256 c16 16 scopes".into(),
        target: purser(Alg::Es256, true, false, false, 16),
        connections: 16,
        probe: false,
    });
    // Machine-token logins with the credential cache off: every request hashes its secret
    // (one SHA-256) and looks the token up; judged against the warm path of the same run.
    out.push(Scenario {
        name: MACHINE.into(),
        target: Target::Purser {
            alg: Alg::Es256,
            warm: false,
            large_users: false,
            large_policy: false,
            scopes: 1,
            machine_tokens: true,
            redis: false,
            shadow: false,
            oidc: false,
        },
        connections: 16,
        probe: false,
    });
    // OIDC logins with the issuer's keys cached: every request verifies an RS256 ID token
    // (never remembered by the credential cache); judged against the warm path of the same run.
    out.push(Scenario {
        name: OIDC.into(),
        target: Target::Purser {
            alg: Alg::Es256,
            warm: false,
            large_users: false,
            large_policy: false,
            scopes: 1,
            machine_tokens: false,
            redis: false,
            shadow: false,
            oidc: true,
        },
        connections: 16,
        probe: false,
    });
    // Every request decided by a 10,000-rule shadow policy too, judged against the warm path
    // measured on either side of it.
    let mut target = purser(Alg::Es256, true, false, false, 1);
    if let Target::Purser { shadow, .. } = &mut target {
        *shadow = true;
    }
    out.push(Scenario {
        name: SHADOW.into(),
        target,
        connections: 16,
        probe: false,
    });
    // The failed-login state in memory, then in Redis, one after the other in the same run
    // (`--only "state "`): the warm path's price of a shared store.
    for redis in [false, true] {
        let mut target = purser(Alg::Es256, true, false, false, 1);
        if let Target::Purser { redis: r, .. } = &mut target {
            *r = redis;
        }
        out.push(Scenario {
            name: format!("state {} ES256 c16", if redis { "redis" } else { "memory" }),
            target,
            connections: 16,
            probe: false,
        });
    }
    // Sixteen logins at once (the acceptance figure), then one at a time: the same saturated
    // core, with one bcrypt thread instead of sixteen competing with the event loop.
    for c in [16, 1] {
        out.push(Scenario {
            name: format!("cold bcrypt-10 ES256 c{c}"),
            target: purser(Alg::Es256, false, false, false, 1),
            connections: c,
            probe: true,
        });
    }
    out
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub scenario: Scenario,
    pub result: LoadResult,
    /// Server CPU over the window, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Answers per second of server CPU: the server's efficiency, whatever else ran.
    #[serde(default)]
    pub per_cpu_second: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// The raw signing rate measured on the server's CPU just before and just after this
    /// scenario (warm RS256 only): the reference threshold 1 is judged against, free of the
    /// drift a shared machine shows over minutes.
    #[serde(default)]
    pub reference: Option<Reference>,
}

/// A raw rate measured around one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reference {
    pub what: String,
    pub before: f64,
    pub after: f64,
}

impl Reference {
    pub fn mean(&self) -> f64 {
        (self.before + self.after) / 2.0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub machine: String,
    pub server_cpus: String,
    pub load_cpus: String,
    pub smoke: bool,
    pub rates: Vec<Rate>,
    pub rows: Vec<Row>,
    pub checks: Vec<Check>,
    pub wall_secs: f64,
    /// `/proc/loadavg` before and after: other work on the machine shows here.
    #[serde(default)]
    pub loadavg: (String, String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub what: String,
    pub holds: bool,
    pub detail: String,
}

/// Counts the CPUs of a `taskset` list such as `1`, `0,2` or `2-3`.
pub fn cpu_count(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(part.trim().parse::<usize>().is_ok()),
        })
        .sum()
}

/// The CPU model and count, from `lscpu`.
pub fn machine() -> String {
    let out = Command::new("lscpu")
        .env("LC_ALL", "C")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "{}, {} CPUs (lscpu), kernel {}",
        field("Model name:"),
        field("CPU(s):"),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}

pub(crate) fn pinned(cpus: &str, program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpus).arg(program);
    // The server reads PURSER_* variables as configuration: none from the caller's shell.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PURSER_") {
            c.env_remove(k);
        }
    }
    c
}

fn run_json<T: for<'de> Deserialize<'de>>(mut cmd: Command, what: &str) -> anyhow::Result<T> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {what} (is taskset installed?)"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what}: unexpected output"))
}

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A child process that is stopped when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) what: String,
}

impl Running {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A redis-server of its own for a scenario, on the load generator's CPUs (it stands for a
/// store on another machine: its work is not the server's), without persistence; its URL.
fn start_redis(opts: &Options) -> anyhow::Result<(Running, String)> {
    const REDIS_SERVER: &str = "/usr/bin/redis-server";
    if !Path::new(REDIS_SERVER).exists() {
        bail!("{REDIS_SERVER} is needed for the redis scenario (Debian: redis-server)");
    }
    let addr = free_addr()?;
    let mut cmd = pinned(&opts.load_cpus, Path::new(REDIS_SERVER));
    cmd.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&opts.work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut running = Running {
        child: cmd.spawn().context("cannot start redis-server")?,
        what: "redis-server".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.exited() {
            bail!("redis-server exited at start ({status})");
        }
        let pong = TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 8];
            let n = s.read(&mut buf)?;
            Ok(buf[..n].starts_with(b"+PONG"))
        });
        if matches!(pong, Ok(true)) {
            return Ok((running, format!("redis://{addr}/0")));
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a fresh connection, blocking; the answer's status and body.
pub fn fetch(addr: SocketAddr, request: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = crate::load::parse_answer_head(&buf[..p + 4])?;
            let total = p + 4 + head.1;
            while buf.len() < total {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((head.0, buf[p + 4..total.min(buf.len())].to_vec()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Polls `path` until it answers 200, the process exits, or the deadline passes.
pub(crate) fn wait_ready(
    proc_: &mut Running,
    addr: SocketAddr,
    path: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    loop {
        if let Some(status) = proc_.exited() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!(
                "{} exited with {status} before it was ready:\n{tail}",
                proc_.what
            );
        }
        if let Ok((200, _)) = fetch(addr, &req) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} was not ready at {addr}{path} within 120 s", proc_.what);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Prepared {
    keys: Vec<(Alg, PathBuf)>,
    active: ActiveUsers,
    users_small: PathBuf,
    users_large: PathBuf,
    groups: PathBuf,
    policy_small: PathBuf,
    policy_large: PathBuf,
    /// One machine token per active user, with the user's name: (name, secret).
    machine: ActiveUsers,
    tokens: PathBuf,
    /// One OIDC ID token per active user: ("oidc", token).
    oidc: ActiveUsers,
    /// The stand-in issuer's address, folder (certificates, JWKS) and URL.
    issuer_addr: std::net::SocketAddr,
    issuer_dir: PathBuf,
    issuer_url: String,
}

fn prepare(opts: &Options, t: &Timing) -> anyhow::Result<Prepared> {
    let w = &opts.work;
    std::fs::create_dir_all(w.join("logs"))?;
    let mut keys = Vec::new();
    for alg in [Alg::Rs256, Alg::Es256, Alg::EdDsa] {
        let dir = w.join(format!("key-{}", alg.keygen_name()));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new(&opts.server.program)
            .args(&opts.server.prefix)
            .args(["keygen", "--alg", alg.keygen_name(), "--out"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .context("cannot run keygen")?;
        if !status.success() {
            bail!("keygen --alg {} failed: {status}", alg.keygen_name());
        }
        keys.push((alg, dir.join(purser_token::KEY_FILE_NAME)));
    }
    eprintln!(
        "purser-bench: hashing {} passwords at bcrypt cost {BCRYPT_COST}",
        t.active_users
    );
    let active = ActiveUsers::generate(t.active_users, BCRYPT_COST)?;
    let filler = bcrypt::hash(format!("filler-{}", rand::random::<u64>()), BCRYPT_COST)?
        .replacen("$2b$", "$2y$", 1);
    let users_small = w.join("users-small.htpasswd");
    let users_large = w.join("users-100000.htpasswd");
    fixtures::write_htpasswd(&users_small, &active, active.users.len(), &filler)?;
    fixtures::write_htpasswd(&users_large, &active, LARGE_USERS, &filler)?;
    let groups = w.join("users.htgroup");
    fixtures::write_htgroup(&groups, &active)?;
    let policy_small = w.join("policy-10.yaml");
    let policy_large = w.join("policy-10000.yaml");
    std::fs::write(&policy_small, fixtures::policy(false))?;
    std::fs::write(&policy_large, fixtures::policy(true))?;
    let tokens = w.join("tokens.yaml");
    let machine = fixtures::write_tokens(&tokens, &active)?;
    let issuer_dir = w.join("issuer");
    std::fs::create_dir_all(&issuer_dir)?;
    crate::issuer::make_certs(&issuer_dir)?;
    let issuer_addr = free_addr()?;
    let issuer_url = format!("https://{issuer_addr}");
    let oidc =
        crate::issuer::write_keys_and_tokens(&issuer_url, &active, &issuer_dir.join("jwks.json"))?;
    Ok(Prepared {
        oidc,
        issuer_addr,
        issuer_dir,
        issuer_url,
        machine,
        tokens,
        keys,
        active,
        users_small,
        users_large,
        groups,
        policy_small,
        policy_large,
    })
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub(crate) fn run_load(opts: &Options, spec: &LoadSpec, name: &str) -> anyhow::Result<LoadResult> {
    let file = opts.work.join(format!("load-{}.json", slug(name)));
    std::fs::write(&file, serde_json::to_vec(spec)?)?;
    let mut cmd = pinned(&opts.load_cpus, &opts.bench_exe);
    cmd.arg("load").arg("--spec").arg(&file);
    let r = run_json(cmd, "the load generator");
    let _ = std::fs::remove_file(&file);
    r
}

fn run_scenario(
    opts: &Options,
    t: &Timing,
    p: &Prepared,
    s: &Scenario,
    limit_body: usize,
) -> anyhow::Result<Row> {
    let addr = free_addr()?;
    let log = opts
        .work
        .join("logs")
        .join(format!("{}.log", slug(&s.name)));
    let log_file = std::fs::File::create(&log)?;
    // Stopped when the scenario ends (dropped after the server).
    let mut _redis_server: Option<Running> = None;
    let mut _issuer: Option<Running> = None;
    let (mut server, requests, warm) = match &s.target {
        Target::Purser {
            alg,
            warm,
            large_users,
            large_policy,
            scopes,
            machine_tokens,
            redis,
            shadow,
            oidc,
        } => {
            if *oidc {
                let mut cmd = pinned(&opts.load_cpus, &opts.bench_exe);
                cmd.arg("issuer")
                    .arg("--listen")
                    .arg(p.issuer_addr.to_string())
                    .arg("--cert")
                    .arg(p.issuer_dir.join("server.pem"))
                    .arg("--key")
                    .arg(p.issuer_dir.join("server.key"))
                    .arg("--jwks")
                    .arg(p.issuer_dir.join("jwks.json"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let child = cmd.spawn().context("cannot start the stand-in issuer")?;
                _issuer = Some(Running {
                    child,
                    what: "the stand-in issuer".into(),
                });
                // Listening before purser starts, so that its first fetch of the keys succeeds.
                let deadline = Instant::now() + Duration::from_secs(30);
                while TcpStream::connect_timeout(&p.issuer_addr, Duration::from_secs(1)).is_err() {
                    if Instant::now() > deadline {
                        bail!("the stand-in issuer does not listen on {}", p.issuer_addr);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let key = &p.keys.iter().find(|(a, _)| a == alg).expect("every key").1;
            let redis_url = if *redis {
                let (server, url) = start_redis(opts)?;
                _redis_server = Some(server);
                Some(url)
            } else {
                None
            };
            let ca = p.issuer_dir.join("ca.pem");
            let config = opts.work.join(format!("{}.yaml", slug(&s.name)));
            let listen = addr.to_string();
            let shadow_line = if *shadow {
                format!(
                    "authz:\n  shadow_policy_file: {}\n",
                    serde_json::to_string(&p.policy_large.display().to_string())?
                )
            } else {
                "authz:\n".into()
            };
            std::fs::write(
                &config,
                fixtures::server_config(&ServerFiles {
                    listen: &listen,
                    key_file: key,
                    htpasswd: if *large_users {
                        &p.users_large
                    } else {
                        &p.users_small
                    },
                    htgroup: &p.groups,
                    policy: if *large_policy {
                        &p.policy_large
                    } else {
                        &p.policy_small
                    },
                    cache_ttl: if *warm { "10m" } else { "0s" },
                    tokens: machine_tokens.then_some(p.tokens.as_path()),
                    redis_url: redis_url.as_deref(),
                    oidc: oidc.then(|| (p.issuer_url.as_str(), ca.as_path())),
                })
                .replacen("authz:\n", &shadow_line, 1),
            )?;
            let mut cmd = pinned(&opts.server_cpus, &opts.server.program);
            cmd.args(&opts.server.prefix)
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file);
            let child = cmd.spawn().context("cannot start the server")?;
            let clients = if *machine_tokens {
                &p.machine
            } else if *oidc {
                &p.oidc
            } else {
                &p.active
            };
            let requests = fixtures::token_requests(clients, *scopes, ROTATION);
            (
                Running {
                    child,
                    what: "purser".into(),
                },
                requests,
                *warm,
            )
        }
        Target::Limit => {
            let mut cmd = pinned(&opts.server_cpus, &opts.bench_exe);
            cmd.arg("http-limit")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--body-len")
                .arg(limit_body.to_string())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file);
            let child = cmd
                .spawn()
                .context("cannot start the HTTP limit endpoint")?;
            let requests = fixtures::token_requests(&p.active, 1, ROTATION);
            (
                Running {
                    child,
                    what: "the HTTP limit endpoint".into(),
                },
                requests,
                false,
            )
        }
    };
    let ready_path = match s.target {
        Target::Purser { .. } => "/readyz",
        Target::Limit => "/",
    };
    wait_ready(&mut server, addr, ready_path, &log)?;
    if matches!(s.target, Target::Purser { oidc: true, .. }) {
        // /readyz answers 200 while the issuer's keys are still being fetched (a degraded
        // note): wait until it no longer says so, so that the run measures cached keys.
        let deadline = Instant::now() + Duration::from_secs(30);
        let req = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        loop {
            let (status, body) = fetch(addr, req)?;
            if status == 200 && !String::from_utf8_lossy(&body).contains("OIDC") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: the issuer's keys were not fetched; see {}",
                    s.name,
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if warm {
        // Every user logs in once, so the run measures cache hits only.
        for req in fixtures::priming_requests(&p.active) {
            let (status, _) = fetch(addr, &req)?;
            if status != 200 {
                bail!(
                    "{}: priming request answered {status}; see {}",
                    s.name,
                    log.display()
                );
            }
        }
    }
    let spec = LoadSpec {
        addr,
        connections: s.connections,
        warmup: t.warmup,
        duration: if s.probe { t.cold_measure } else { t.measure },
        requests,
        probe: s.probe.then(|| fixtures::HEALTHZ_REQUEST.to_string()),
        probe_interval: PROBE_INTERVAL,
        server_pid: Some(server.pid()),
    };
    let result = run_load(opts, &spec, &s.name)?;
    let peak_rss_mib = procstat::peak_rss_kib(server.pid())
        .ok()
        .map(|k| k as f64 / 1024.0);
    if let Some(status) = server.exited() {
        bail!(
            "{}: the server exited during the run ({status}); see {}",
            s.name,
            log.display()
        );
    }
    drop(server);
    if result.errors == 0 {
        // Audit lines of a run at full speed are tens of MB: keep logs only when they explain
        // something.
        let _ = std::fs::remove_file(&log);
    }
    let cpu_percent = result
        .server_cpu_secs
        .map(|c| c / result.window_secs * 100.0);
    let per_cpu_second = result
        .server_cpu_secs
        .filter(|c| *c > 0.0)
        .map(|c| result.ok as f64 / c);
    Ok(Row {
        scenario: s.clone(),
        result,
        cpu_percent,
        per_cpu_second,
        peak_rss_mib,
        reference: None,
    })
}

fn sign_rate(opts: &Options, t: &Timing, key: &Path) -> anyhow::Result<Rate> {
    let mut cmd = pinned(&opts.server_cpus, &opts.bench_exe);
    cmd.arg("sign-rate")
        .arg("--key")
        .arg(key)
        .arg("--secs")
        .arg(t.rate.as_secs_f64().to_string());
    run_json(cmd, "sign-rate")
}

fn rates(opts: &Options, t: &Timing, p: &Prepared) -> anyhow::Result<Vec<Rate>> {
    let secs = t.rate.as_secs_f64().to_string();
    let mut out = Vec::new();
    for (_, key) in &p.keys {
        out.push(sign_rate(opts, t, key)?);
    }
    let mut cmd = pinned(&opts.server_cpus, &opts.bench_exe);
    cmd.arg("bcrypt-rate")
        .arg("--cost")
        .arg(BCRYPT_COST.to_string())
        .arg("--secs")
        .arg(&secs);
    out.push(run_json(cmd, "bcrypt-rate")?);
    Ok(out)
}

/// The scenario threshold 4 compares the 10,000-rule policy and the 100,000-user file with.
pub const BASE: &str = "warm ES256 c16";
/// The machine-token scenario, judged against [`BASE`].
pub const MACHINE: &str = "machine tokens ES256 c16 cache off";
/// The shadow-policy scenario, judged against [`BASE`].
pub const SHADOW: &str = "warm ES256 c16 10k-rule shadow policy";
/// The OIDC scenario, judged against [`BASE`].
pub const OIDC: &str = "oidc logins ES256 c16 cached keys";

/// The base scenario once more, as a reference measured next to a variant: its tokens/s.
fn run_base(opts: &Options, t: &Timing, p: &Prepared, limit_body: usize) -> anyhow::Result<f64> {
    let base = scenarios()
        .into_iter()
        .find(|b| b.name == BASE)
        .context("the base scenario")?;
    eprintln!("purser-bench: {BASE} (reference for the next or previous scenario)");
    Ok(run_scenario(opts, t, p, &base, limit_body)?
        .result
        .per_second)
}

/// Runs everything and returns the report (also written to `work/report.json`).
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let load_before = loadavg();
    let t = opts.timing();
    let p = prepare(opts, &t)?;
    eprintln!("purser-bench: measuring the raw rates of one core");
    let rates = rates(opts, &t, &p)?;
    let mut rows = Vec::new();
    let mut limit_body = 1300;
    // The base scenario's figure when it was the last thing measured.
    let mut last_base: Option<f64> = None;
    for s in scenarios() {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| s.name.contains(o.as_str())) {
            continue;
        }
        eprintln!("purser-bench: {}", s.name);
        // Threshold 1 compares with the raw RSA rate: measure it on either side of the run.
        let rsa_key = match s.target {
            Target::Purser {
                alg: Alg::Rs256,
                warm: true,
                ..
            } => p.keys.iter().find(|(a, _)| *a == Alg::Rs256).map(|k| &k.1),
            _ => None,
        };
        // Threshold 4 compares a large policy or user file with the base scenario: run the base
        // on either side of it too (the "after" of one serves as the "before" of the next).
        let scale_variant = matches!(
            s.target,
            Target::Purser { large_users, large_policy, machine_tokens, shadow, oidc, .. }
                if large_users || large_policy || machine_tokens || shadow || oidc
        );
        let base_before = match (scale_variant, last_base.take()) {
            (false, _) => None,
            (true, Some(v)) => Some(v),
            (true, None) => Some(run_base(opts, &t, &p, limit_body)?),
        };
        let before = rsa_key.map(|k| sign_rate(opts, &t, k)).transpose()?;
        let mut row = run_scenario(opts, &t, &p, &s, limit_body)?;
        if let (Some(key), Some(before)) = (rsa_key, before) {
            let after = sign_rate(opts, &t, key)?;
            row.reference = Some(Reference {
                what: after.what,
                before: before.per_second,
                after: after.per_second,
            });
        }
        if let Some(before) = base_before {
            let after = run_base(opts, &t, &p, limit_body)?;
            last_base = Some(after);
            row.reference = Some(Reference {
                what: BASE.into(),
                before,
                after,
            });
        }
        if s.name == "warm ES256 c16" && row.result.body_len > 0 {
            limit_body = row.result.body_len;
        }
        rows.push(row);
    }
    let checks = checks(&rates, &rows, cpu_count(&opts.server_cpus));
    let report = Report {
        machine: machine(),
        server_cpus: opts.server_cpus.clone(),
        load_cpus: opts.load_cpus.clone(),
        smoke: opts.smoke,
        rates,
        rows,
        checks,
        wall_secs: started.elapsed().as_secs_f64(),
        loadavg: (load_before, loadavg()),
    };
    std::fs::write(
        opts.work.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn row<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.scenario.name == name)
}

/// For each connection count with both figures: the warm scenario of `alg` and the HTTP limit.
fn warm_and_limit<'a>(rows: &'a [Row], alg: &str) -> Vec<(usize, &'a Row, &'a Row)> {
    [1, 16, 64]
        .into_iter()
        .filter_map(|c| {
            Some((
                c,
                row(rows, &format!("warm {alg} c{c}"))?,
                row(rows, &format!("http limit c{c}"))?,
            ))
        })
        .collect()
}

fn rate_of(rates: &[Rate], what: &str) -> Option<f64> {
    rates.iter().find(|r| r.what == what).map(|r| r.per_second)
}

/// The acceptance thresholds, evaluated on the figures at hand (skipped when a figure is
/// missing, e.g. in a partial run).
pub fn checks(rates: &[Rate], rows: &[Row], server_cores: usize) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |what: String, holds: bool, detail: String| {
        out.push(Check {
            what,
            holds,
            detail,
        })
    };
    for c in [1, 16, 64] {
        let Some(r) = row(rows, &format!("warm RS256 c{c}")) else {
            continue;
        };
        // The rate measured around the scenario when there is one, else the run's first.
        let (raw, how) = match &r.reference {
            Some(reference) => (
                reference.mean(),
                format!(
                    " (raw rate {:.0}/s before, {:.0}/s after)",
                    reference.before, reference.after
                ),
            ),
            None => match rate_of(rates, "sign RS256") {
                Some(raw) => (raw, String::new()),
                None => continue,
            },
        };
        let ratio = r.result.per_second / raw;
        check(
            format!("1. warm RS256 c{c} >= 80% of raw RSA-2048 signing"),
            ratio >= 0.8,
            format!(
                "{:.0}/s vs {raw:.0}/s = {:.0}%{how}",
                r.result.per_second,
                ratio * 100.0
            ),
        );
    }
    for alg in ["ES256", "EdDSA"] {
        for (c, r, l) in warm_and_limit(rows, alg) {
            let ratio = r.result.per_second / l.result.per_second;
            check(
                format!("2. warm {alg} c{c} >= 50% of the HTTP limit"),
                ratio >= 0.5,
                format!(
                    "{:.0}/s vs {:.0}/s = {:.0}%",
                    r.result.per_second,
                    l.result.per_second,
                    ratio * 100.0
                ),
            );
        }
        if let Some(r) = row(rows, &format!("warm {alg} c64")) {
            check(
                format!("2. warm {alg} c64 p99 < 5 ms"),
                r.result.latency.p99_ms < 5.0,
                format!("p99 {:.2} ms", r.result.latency.p99_ms),
            );
        }
    }
    if let Some(cold) = row(rows, "cold bcrypt-10 ES256 c16") {
        if let Some(raw) = rate_of(rates, &format!("bcrypt verify cost {BCRYPT_COST}")) {
            let cap = raw * server_cores as f64;
            let ratio = cold.result.per_second / cap;
            check(
                "3. cold path >= 90% of bcrypt-10 verifications/s of the server's cores".into(),
                ratio >= 0.9,
                format!(
                    "{:.1}/s vs {cap:.1}/s ({server_cores} core(s)) = {:.0}%",
                    cold.result.per_second,
                    ratio * 100.0
                ),
            );
        }
        if let Some(probe) = &cold.result.probe {
            check(
                "3. /healthz p99 < 10 ms while bcrypt saturates the cores".into(),
                probe.count > 0 && probe.p99_ms < 10.0,
                format!("p99 {:.2} ms over {} probes", probe.p99_ms, probe.count),
            );
        }
    }
    for (name, what, floor) in [
        (
            "warm ES256 c16 10k rules",
            "4. 10,000 rules >= 50% of 10 rules",
            0.5,
        ),
        (
            "warm ES256 c16 100k users",
            "4. 100,000 users >= 90% of 100 users",
            0.9,
        ),
        (
            MACHINE,
            "5. machine-token logins, cache off >= 90% of the warm path",
            0.9,
        ),
        (
            SHADOW,
            "7. warm path with a 10,000-rule shadow policy >= 80% of the same without one",
            0.8,
        ),
        (
            OIDC,
            "9. OIDC logins with cached keys >= 70% of the warm path",
            0.7,
        ),
    ] {
        let Some(r) = row(rows, name) else { continue };
        // The base measured around the scenario when there is one, else the run's base row.
        let (base, how) = match &r.reference {
            Some(reference) if reference.what == BASE => (
                reference.mean(),
                format!(
                    "; {BASE} measured {:.0}/s before, {:.0}/s after",
                    reference.before, reference.after
                ),
            ),
            _ => match row(rows, BASE) {
                Some(b) => (b.result.per_second, String::new()),
                None => continue,
            },
        };
        let ratio = r.result.per_second / base;
        check(
            what.into(),
            ratio >= floor,
            format!(
                "{:.0}% ({:.0}/s vs {base:.0}/s{how})",
                ratio * 100.0,
                r.result.per_second,
            ),
        );
    }
    if let (Some(m), Some(r)) = (
        row(rows, "state memory ES256 c16"),
        row(rows, "state redis ES256 c16"),
    ) {
        let ratio = r.result.per_second / m.result.per_second;
        check(
            "6. warm path with state.backend: redis >= 80% of memory".into(),
            ratio >= 0.8,
            format!(
                "{:.0}/s vs {:.0}/s = {:.0}%",
                r.result.per_second,
                m.result.per_second,
                ratio * 100.0
            ),
        );
    }
    let purser_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.scenario.target, Target::Purser { .. }))
        .collect();
    if !purser_rows.is_empty() {
        let worst = purser_rows
            .iter()
            .filter_map(|r| r.peak_rss_mib.map(|m| (m, &r.scenario.name)))
            .fold((0.0f64, String::new()), |acc, (m, n)| {
                if m > acc.0 {
                    (m, n.clone())
                } else {
                    acc
                }
            });
        check(
            "4. peak RSS < 64 MB in every scenario".into(),
            worst.0 > 0.0 && worst.0 * 1024.0 * 1024.0 < 64e6,
            format!("largest {:.1} MiB ({})", worst.0, worst.1),
        );
    }
    out
}

/// What threshold 2's figures are bounded by: a server that did nothing per request but the
/// minimal endpoint's HTTP exchange and one signature would answer `1 / (1/http + 1/sign)`
/// requests per second. One line per warm ES256/EdDSA scenario with its share of that bound.
pub fn bounds(rates: &[Rate], rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for alg in ["ES256", "EdDSA"] {
        let Some(sign) = rate_of(rates, &format!("sign {alg}")) else {
            continue;
        };
        for (c, r, l) in warm_and_limit(rows, alg) {
            let http = l.result.per_second;
            let bound = 1.0 / (1.0 / http + 1.0 / sign);
            out.push(format!(
                "warm {alg} c{c}: {:.0}/s = {:.0}% of {bound:.0}/s, the most a server doing only the HTTP exchange ({http:.0}/s) and the signature ({sign:.0}/s) could answer; that bound is {:.0}% of the HTTP limit",
                r.result.per_second,
                100.0 * r.result.per_second / bound,
                100.0 * bound / http
            ));
        }
    }
    out
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The report as Markdown: rates, the scenario table, the checks.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "machine: {}", r.machine);
    let _ = writeln!(
        s,
        "server on CPU {}, load generator on CPU {}{}; run took {:.0} s\n",
        r.server_cpus,
        r.load_cpus,
        if r.smoke {
            " (SMOKE RUN: figures meaningless)"
        } else {
            ""
        },
        r.wall_secs
    );
    let _ = writeln!(
        s,
        "load average (1, 5, 15 min) before: {}; after: {}\n",
        r.loadavg.0, r.loadavg.1
    );
    let _ = writeln!(
        s,
        "| one core, nothing else | per second | per CPU-second |\n| --- | ---: | ---: |"
    );
    for rate in &r.rates {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} |",
            rate.what,
            rate.per_second,
            fmt_opt(rate.per_cpu_second, 0)
        );
    }
    let _ = writeln!(
        s,
        "\n| scenario | conns | tokens/s | p50 ms | p99 ms | server CPU % | tokens/CPU-s | peak RSS MiB | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in &r.rows {
        let res = &row.result;
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
            row.scenario.name,
            row.scenario.connections,
            res.per_second,
            res.latency.p50_ms,
            res.latency.p99_ms,
            fmt_opt(row.cpu_percent, 0),
            fmt_opt(row.per_cpu_second, 0),
            fmt_opt(row.peak_rss_mib, 1),
            res.errors
        );
        if let Some(p) = &res.probe {
            let _ = writeln!(
                s,
                "| ... /healthz every 10 ms meanwhile | 1 | - | {:.2} | {:.2} | | | | |",
                p.p50_ms, p.p99_ms
            );
        }
    }
    let bounds = bounds(&r.rates, &r.rows);
    if !bounds.is_empty() {
        let _ = writeln!(s);
        for b in bounds {
            let _ = writeln!(s, "- BOUND {b}");
        }
    }
    let _ = writeln!(s);
    for c in &r.checks {
        let _ = writeln!(
            s,
            "- {} {}: {}",
            if c.holds { "HOLDS" } else { "FAILS" },
            c.what,
            c.detail
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("1"), 1);
        assert_eq!(cpu_count("0,2"), 2);
        assert_eq!(cpu_count("2-3,5"), 3);
        assert_eq!(cpu_count("x"), 0);
    }

    #[test]
    fn scenario_names_are_unique_and_cover_the_issue() {
        let all = scenarios();
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for needed in [
            "warm RS256 c64",
            "warm EdDSA c1",
            "http limit c16",
            "cold bcrypt-10 ES256 c16",
            "warm ES256 c16 10k rules",
            "warm ES256 c16 100k users",
            "warm ES256 c16 16 scopes",
            "state memory ES256 c16",
            "state redis ES256 c16",
            SHADOW,
        ] {
            assert!(names.contains(&needed), "{needed}");
        }
    }

    fn row_of(name: &str, per_second: f64, p99: f64) -> Row {
        let s = scenarios().into_iter().find(|s| s.name == name).unwrap();
        Row {
            scenario: s,
            result: LoadResult {
                ok: 1,
                per_second,
                latency: crate::load::Latency {
                    count: 1,
                    p50_ms: p99 / 2.0,
                    p99_ms: p99,
                    max_ms: p99,
                },
                ..Default::default()
            },
            cpu_percent: Some(99.0),
            per_cpu_second: Some(per_second / 0.99),
            peak_rss_mib: Some(20.0),
            reference: None,
        }
    }

    #[test]
    fn checks_compare_with_the_right_references() {
        let rates = vec![Rate {
            what: "sign RS256".into(),
            count: 1,
            secs: 1.0,
            per_second: 1000.0,
            per_cpu_second: None,
        }];
        let mut around = row_of("warm RS256 c1", 850.0, 3.0);
        // Judged against the rate measured around it (mean 1,100/s), not the first one.
        around.reference = Some(Reference {
            what: "sign RS256".into(),
            before: 1_150.0,
            after: 1_050.0,
        });
        let rows = vec![
            around,
            row_of("warm RS256 c16", 850.0, 30.0),
            row_of("warm RS256 c64", 700.0, 90.0),
            row_of("warm ES256 c64", 10_000.0, 6.0),
            row_of("http limit c64", 30_000.0, 1.0),
            row_of("warm ES256 c16", 10_000.0, 2.0),
            row_of("warm ES256 c16 10k rules", 9_000.0, 2.0),
        ];
        let c = checks(&rates, &rows, 1);
        let find = |w: &str| c.iter().find(|c| c.what.starts_with(w)).unwrap();
        assert!(!find("1. warm RS256 c1 ").holds);
        assert!(find("1. warm RS256 c1 ")
            .detail
            .contains("vs 1100/s = 77% (raw rate 1150/s before, 1050/s after)"));
        assert!(find("1. warm RS256 c16").holds);
        assert!(!find("1. warm RS256 c64").holds);
        assert!(!find("2. warm ES256 c64 >= 50%").holds);
        assert!(!find("2. warm ES256 c64 p99").holds);
        assert!(find("4. 10,000 rules").holds);
        assert!(find("4. peak RSS").holds);
        assert!(c.iter().all(|c| !c.what.contains("100,000 users")));

        // A 100,000-user figure of 8,800/s: 88% of the base row, 94% of the base measured
        // around it. The one measured around it decides.
        let mut users = row_of("warm ES256 c16 100k users", 8_800.0, 2.0);
        users.reference = Some(Reference {
            what: BASE.into(),
            before: 9_200.0,
            after: 9_600.0,
        });
        let mut with_users = rows.clone();
        with_users.push(users);
        let c2 = checks(&rates, &with_users, 1);
        let users_check = c2
            .iter()
            .find(|c| c.what.starts_with("4. 100,000 users"))
            .unwrap();
        assert!(users_check.holds, "{}", users_check.detail);
        assert_eq!(
            users_check.detail,
            "94% (8800/s vs 9400/s; warm ES256 c16 measured 9200/s before, 9600/s after)"
        );
        with_users.last_mut().unwrap().reference = None;
        assert!(
            !checks(&rates, &with_users, 1)
                .iter()
                .find(|c| c.what.starts_with("4. 100,000 users"))
                .unwrap()
                .holds
        );

        let text = render(&Report {
            machine: "m".into(),
            server_cpus: "1".into(),
            load_cpus: "0".into(),
            smoke: false,
            rates,
            rows,
            checks: c,
            wall_secs: 1.0,
            loadavg: ("0.1 0.2 0.3".into(), "1.0 0.5 0.4".into()),
        });
        assert!(
            text.contains("| warm RS256 c16 | 16 | 850 | 15.00 | 30.00 | 99 | 859 | 20.0 | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("- FAILS 2. warm ES256 c64 p99 < 5 ms: p99 6.00 ms"),
            "{text}"
        );
        // No ES256 signing rate in this report: no bound.
        assert!(!text.contains("BOUND"), "{text}");
    }

    #[test]
    fn bounds_combine_the_http_limit_and_the_signing_rate() {
        let rates = vec![Rate {
            what: "sign ES256".into(),
            count: 1,
            secs: 1.0,
            per_second: 30_000.0,
            per_cpu_second: None,
        }];
        let rows = vec![
            row_of("warm ES256 c16", 18_000.0, 2.0),
            row_of("http limit c16", 120_000.0, 1.0),
        ];
        // 1 / (1/120000 + 1/30000) = 24000/s; 18000 is 75% of it; 24000 is 20% of 120000.
        assert_eq!(
            bounds(&rates, &rows),
            vec!["warm ES256 c16: 18000/s = 75% of 24000/s, the most a server doing only the HTTP exchange (120000/s) and the signature (30000/s) could answer; that bound is 20% of the HTTP limit".to_string()]
        );
    }
}
