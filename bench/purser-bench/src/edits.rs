//! The credential cache under htpasswd edits: 2,000 users at bcrypt cost 10, all cached, and
//! an unrelated user added to the file every second. The same load runs without edits before
//! and after (the reference), then with them; threshold 5 asks for at least 90% of the
//! reference, and for no backend check at all while the edits land (the added users never log
//! in, so every login stays a cache hit).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::driver::{
    fetch, free_addr, pinned, run_load, wait_ready, Alg, Check, Options, Reference, Report, Row,
    Running, Scenario, Target, Timing, BCRYPT_COST,
};
use crate::fixtures::{self, ActiveUsers, ServerFiles};
use crate::load::LoadSpec;
use crate::procstat;

/// The scenario's name, as `--only` matches it.
pub const NAME: &str = "cached 2000 users c16 htpasswd edits";
const CONNECTIONS: usize = 16;

struct Sizes {
    users: usize,
    window: Duration,
}

fn sizes(opts: &Options) -> Sizes {
    if opts.smoke {
        Sizes {
            users: 40,
            window: Duration::from_secs(3),
        }
    } else {
        Sizes {
            users: 2000,
            window: Duration::from_secs(30),
        }
    }
}

/// The htpasswd file the server reads: the active users, then the users added so far.
fn write_users(path: &Path, active: &ActiveUsers, added: &[String]) -> std::io::Result<()> {
    let mut text = String::new();
    for ((name, _), hash) in active.users.iter().zip(&active.hashes) {
        text.push_str(&format!("{name}:{hash}\n"));
    }
    for (i, hash) in added.iter().enumerate() {
        text.push_str(&format!("added{i:03}:{hash}\n"));
    }
    // Editors save by rename: the watcher sees one complete file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The sum of every series of `name` in a Prometheus text answer.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    attempts: f64,
    cache_hits: f64,
    backend_checks: f64,
    reloads: f64,
}

fn counts(metrics: SocketAddr) -> anyhow::Result<Counts> {
    let (status, body) = fetch(
        metrics,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    Ok(Counts {
        attempts: metric_sum(&text, "purser_authn_attempts_total"),
        cache_hits: metric_sum(&text, "purser_authn_cache_hits_total"),
        backend_checks: metric_sum(&text, "purser_authn_duration_seconds_count"),
        reloads: metric_sum(
            &text,
            "purser_reloads_total{outcome=\"success\",source=\"htpasswd\"}",
        ),
    })
}

/// Waits (at most 20 s) until the server's last successful htpasswd reload is later than the
/// file's last write.
fn wait_reloaded(metrics: SocketAddr, users: &Path) -> anyhow::Result<()> {
    let written = std::fs::metadata(users)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = fetch(
            metrics,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )?;
        let text = String::from_utf8_lossy(&body);
        let loaded = metric_sum(
            &text,
            "purser_reload_last_success_timestamp_seconds{source=\"htpasswd\"}",
        );
        if status == 200 && loaded > written {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the last htpasswd edit was not reloaded within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the scenario when `--only` selects it (or selects nothing), with its own key and
/// policy, and adds its rows and checks to `report` (and to `work/report.json`).
pub fn add_to(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    if !(opts.only.is_empty() || opts.only.iter().any(|o| NAME.contains(o.as_str()))) {
        return Ok(());
    }
    eprintln!("purser-bench: {NAME}");
    let started = Instant::now();
    let w = opts.work.join("edits");
    std::fs::create_dir_all(&w)?;
    let status = std::process::Command::new(&opts.server.program)
        .args(&opts.server.prefix)
        .args(["keygen", "--alg", "es256", "--out"])
        .arg(&w)
        .stdout(Stdio::null())
        .status()
        .context("cannot run keygen")?;
    if !status.success() {
        bail!("keygen --alg es256 failed: {status}");
    }
    let policy = w.join("policy.yaml");
    std::fs::write(&policy, fixtures::policy(false))?;
    let key = w.join(purser_token::KEY_FILE_NAME);
    let (rows, checks) = run(opts, &opts.timing(), &key, &policy)?;
    report.rows.extend(rows);
    report.checks.extend(checks);
    report.wall_secs += started.elapsed().as_secs_f64();
    std::fs::write(
        opts.work.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(())
}

/// Runs the scenario: the rows (no edits before, with edits, no edits after) and the checks.
fn run(
    opts: &Options,
    t: &Timing,
    key: &Path,
    policy: &Path,
) -> anyhow::Result<(Vec<Row>, Vec<Check>)> {
    let sizes = sizes(opts);
    let w = opts.work.join("edits");
    std::fs::create_dir_all(&w)?;
    eprintln!(
        "purser-bench: hashing {} passwords at bcrypt cost {BCRYPT_COST}",
        sizes.users
    );
    let active = ActiveUsers::generate(sizes.users, BCRYPT_COST)?;
    let edits = sizes.window.as_secs() as usize + t.warmup.as_secs() as usize + 2;
    let extra = ActiveUsers::generate(edits, BCRYPT_COST)?.hashes;
    let users = w.join("users.htpasswd");
    let groups = w.join("users.htgroup");
    write_users(&users, &active, &[])?;
    fixtures::write_htgroup(&groups, &active)?;

    let addr = free_addr()?;
    let metrics = free_addr()?;
    let listen = addr.to_string();
    let config = fixtures::server_config(&ServerFiles {
        listen: &listen,
        key_file: key,
        htpasswd: &users,
        htgroup: &groups,
        policy,
        cache_ttl: "10m",
        tokens: None,
        redis_url: None,
        oidc: None,
    })
    .replace(
        "metrics:\n  listen: \"\"",
        &format!("metrics:\n  listen: \"{metrics}\""),
    );
    let config_path = w.join("purser.yaml");
    std::fs::write(&config_path, config)?;
    let log = w.join("purser.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = pinned(&opts.server_cpus, &opts.server.program);
    cmd.args(&opts.server.prefix)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut server = Running {
        child: cmd.spawn().context("cannot start the server")?,
        what: "purser".into(),
    };
    wait_ready(&mut server, addr, "/readyz", &log)?;
    eprintln!(
        "purser-bench: priming: {} logins at cost {BCRYPT_COST}",
        sizes.users
    );
    for req in fixtures::priming_requests(&active) {
        let (status, _) = fetch(addr, &req)?;
        if status != 200 {
            bail!("{NAME}: priming answered {status}; see {}", log.display());
        }
    }
    let requests = fixtures::token_requests(&active, 1, sizes.users);
    let spec = LoadSpec {
        addr,
        connections: CONNECTIONS,
        warmup: t.warmup,
        duration: sizes.window,
        requests,
        probe: None,
        probe_interval: Duration::from_millis(10),
        server_pid: Some(server.pid()),
    };
    let scenario = |name: &str| Scenario {
        name: name.into(),
        target: Target::Purser {
            alg: Alg::Es256,
            warm: true,
            large_users: false,
            large_policy: false,
            scopes: 1,
            machine_tokens: false,
            redis: false,
            shadow: false,
            oidc: false,
        },
        connections: CONNECTIONS,
        probe: false,
    };
    let row = |name: &str, result: crate::load::LoadResult| {
        let cpu_percent = result
            .server_cpu_secs
            .map(|c| c / result.window_secs * 100.0);
        let per_cpu_second = result
            .server_cpu_secs
            .filter(|c| *c > 0.0)
            .map(|c| result.ok as f64 / c);
        Row {
            scenario: scenario(name),
            result,
            cpu_percent,
            per_cpu_second,
            peak_rss_mib: procstat::peak_rss_kib(server.pid())
                .ok()
                .map(|k| k as f64 / 1024.0),
            reference: None,
        }
    };

    let before = run_load(opts, &spec, "edits-before")?;
    let before_row = row("cached 2000 users c16 no edits (before)", before);

    // One unrelated user added every second, for the warmup and the whole window.
    let c0 = counts(metrics)?;
    let stop = Arc::new(AtomicBool::new(false));
    let editor = {
        let (stop, users, active) = (stop.clone(), users.clone(), active.clone());
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let started = Instant::now();
            let mut added = Vec::new();
            while !stop.load(Ordering::Acquire) && added.len() < extra.len() {
                added.push(extra[added.len()].clone());
                write_users(&users, &active, &added)?;
                let next = Duration::from_secs(added.len() as u64);
                if let Some(wait) = next.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(added.len())
        })
    };
    let during = run_load(opts, &spec, "edits-during");
    stop.store(true, Ordering::Release);
    let added = editor
        .join()
        .map_err(|_| anyhow::anyhow!("the editing thread panicked"))??;
    let during = during?;
    // The last edit must have been loaded before the counters are read.
    wait_reloaded(metrics, &users)?;
    let c1 = counts(metrics)?;
    let mut during_row = row("cached 2000 users c16 one user added per second", during);

    let after = run_load(opts, &spec, "edits-after")?;
    let after_row = row("cached 2000 users c16 no edits (after)", after);
    drop(server);

    let reference = Reference {
        what: "cached 2000 users c16 no edits".into(),
        before: before_row.result.per_second,
        after: after_row.result.per_second,
    };
    let ratio = during_row.result.per_second / reference.mean();
    let checks_during = c1.backend_checks - c0.backend_checks;
    let attempts = c1.attempts - c0.attempts;
    let hits = c1.cache_hits - c0.cache_hits;
    let reloads = c1.reloads - c0.reloads;
    let checks = vec![
        Check {
            what: "5. one unrelated htpasswd edit per second: >= 90% of the same load without edits"
                .into(),
            holds: ratio >= 0.9,
            detail: format!(
                "{:.0}/s vs {:.0}/s before and {:.0}/s after = {:.0}%",
                during_row.result.per_second,
                reference.before,
                reference.after,
                ratio * 100.0
            ),
        },
        Check {
            what: "5. during the edits, backend checks only for the edited users (none log in)"
                .into(),
            holds: checks_during == 0.0 && reloads >= (added as f64) / 2.0,
            detail: format!(
                "{added} users added, {reloads:.0} reloads; purser_authn_attempts_total +{attempts:.0}, of which cache hits +{hits:.0}: backend checks +{checks_during:.0}"
            ),
        },
    ];
    during_row.reference = Some(reference);
    Ok((vec![before_row, during_row, after_row], checks))
}
