//! `purser policy replay` over a million audit records: the log is written here in the shape
//! of purser's JSON audit records (the benchmark's users, groups and request mix, one or two
//! scopes a record, a non-audit line now and then), then replayed against the 10,000-rule
//! policy with an edit of it (own namespaces read-only: a sixth of the requests change) under
//! `/usr/bin/time -v`, pinned to the server's CPU: wall time and peak resident memory, plain
//! and gzipped.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::driver::{pinned, Check, Options, Report};
use crate::fixtures::{scope_for, user_name, SERVICE, TEAMS};
use crate::rates::Rate;

/// Records of the full run.
pub const RECORDS: usize = 1_000_000;
/// Users the records come from (as the load's active users).
const USERS: usize = 100;
const TIME: &str = "/usr/bin/time";
/// The edited 10,000-rule policy, in the work folder.
const EDITED: &str = "policy-10000-edited.yaml";
const OWN: &str = "  - name: own namespace\n    match: { account: \"*\", name: \"${account}/**\" }\n    actions: [pull, push, delete]\n";

/// The 10,000-rule policy with own namespaces read-only.
pub fn edited_policy() -> anyhow::Result<String> {
    let large = crate::fixtures::policy(true);
    if !large.contains(OWN) {
        bail!("the large policy has no own-namespace rule to edit");
    }
    Ok(large.replace(OWN, &OWN.replace("[pull, push, delete]", "[pull]")))
}

/// Writes `records` audit records (and a reload line every 100) into `out`; returns the number
/// of scopes.
pub fn write_audit_log(out: impl Write, records: usize) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut scopes = 0u64;
    for i in 0..records {
        if i % 100 == 99 {
            writeln!(
                w,
                r#"{{"timestamp":"2026-11-30T12:00:00.000000Z","level":"INFO","source":"htpasswd","summary":"100 users","message":"loaded","target":"purser_server::reload"}}"#
            )?;
        }
        let u = (i * 13) % USERS;
        let mut groups = vec![format!("team{}", u % TEAMS)];
        if u == 0 {
            groups.push("admins".into());
        }
        if u == USERS - 1 {
            groups.push("contractors".into());
        }
        let n = if i % 4 == 0 { 2 } else { 1 };
        let entries: Vec<serde_json::Value> = (0..n)
            .map(|k| {
                serde_json::json!({
                    "granted": [],
                    "rule": null,
                    "scope": scope_for(u, i + k),
                })
            })
            .collect();
        scopes += n as u64;
        let line = serde_json::json!({
            "timestamp": "2026-11-30T12:00:00.000000Z",
            "level": "INFO",
            "client_ip": format!("10.{}.{}.{}", u % 4, (i / 256) % 256, i % 256),
            "method": "GET",
            "account": user_name(u),
            "backend": "htpasswd",
            "groups": groups,
            "stale": false,
            "service": SERVICE,
            "scopes": entries,
            "outcome": "issued",
            "status": 200,
            "message": "token request",
            "target": "purser::audit",
            "span": {"request_id": format!("{i:016x}"), "name": "request"},
        });
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(scopes)
}

/// What `/usr/bin/time -v` said: wall seconds, peak RSS in MiB.
fn parse_time(stderr: &str) -> Option<(f64, f64)> {
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
    };
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")?;
    let secs = wall.split(':').try_fold(0.0, |acc, part| {
        part.parse::<f64>().ok().map(|v| acc * 60.0 + v)
    })?;
    let rss_kib: f64 = field("Maximum resident set size (kbytes):")?.parse().ok()?;
    Some((secs, rss_kib / 1024.0))
}

fn run_one(
    opts: &Options,
    log: &Path,
    what: &str,
    records: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let w = &opts.work;
    let mut cmd = pinned(&opts.server_cpus, Path::new(TIME));
    cmd.arg("-v")
        .arg(&opts.server.program)
        .args(&opts.server.prefix)
        .args(["policy", "replay", "--format", "json", "--policy"])
        .arg(w.join(EDITED))
        .arg("--against")
        .arg(w.join("policy-10000.yaml"))
        .arg(log)
        .stdin(Stdio::null());
    let out = cmd.output().context("cannot run the replay")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 1: decisions changed, as they must between these two policies.
    if out.status.code() != Some(1) {
        bail!("the replay exited with {}: {stderr}", out.status);
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the replay's JSON report")?;
    let (secs, rss) = parse_time(&stderr).context("the output of /usr/bin/time -v")?;
    let replayed = summary["records"].as_u64().unwrap_or(0);
    let scopes = summary["scopes"].as_u64().unwrap_or(0);
    report.rates.push(Rate {
        what: format!("replay {what} audit records"),
        count: replayed,
        secs,
        per_second: replayed as f64 / secs.max(1e-9),
        per_cpu_second: None,
    });
    report.checks.push(Check {
        what: format!("8. replay of {records} audit records ({what}): time and peak memory"),
        holds: replayed == records as u64,
        detail: format!(
            "{replayed} records ({scopes} scopes) in {secs:.2} s, peak RSS {rss:.1} MiB; {} decisions changed in {} groups ({} past the group bound), {} other lines",
            summary["changed"],
            summary["groups"].as_array().map_or(0, Vec::len),
            summary["ungrouped"],
            summary["other_lines"],
        ),
    });
    Ok(())
}

/// Writes the log, replays it plain and gzipped, and adds the figures to the report.
pub fn add_to(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    if !opts.only.is_empty() && !opts.only.iter().any(|o| "replay".contains(o.as_str())) {
        return Ok(());
    }
    if !Path::new(TIME).exists() {
        bail!("{TIME} is needed for the replay figures (Debian: time)");
    }
    let records = if opts.smoke { 5_000 } else { RECORDS };
    std::fs::write(opts.work.join(EDITED), edited_policy()?)?;
    let log = opts.work.join("audit.log");
    eprintln!("purser-bench: writing {records} audit records");
    let started = Instant::now();
    write_audit_log(std::fs::File::create(&log)?, records)?;
    let gz = opts.work.join("audit.log.gz");
    {
        let mut enc =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz)?, flate2::Compression::fast());
        std::io::copy(&mut std::fs::File::open(&log)?, &mut enc)?;
        enc.finish()?;
    }
    eprintln!(
        "purser-bench: replaying them ({:.1} s to write)",
        started.elapsed().as_secs_f64()
    );
    let result = run_one(opts, &log, "plain", records, report)
        .and_then(|()| run_one(opts, &gz, "gzipped", records, report));
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&gz);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_output_is_read() {
        let text = "\tCommand being timed: \"purser\"\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50\n\tMaximum resident set size (kbytes): 20480\n";
        assert_eq!(parse_time(text), Some((62.5, 20.0)));
    }

    #[test]
    fn records_read_as_purser_writes_them() {
        let mut out = Vec::new();
        let scopes = write_audit_log(&mut out, 200).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 202);
        let audit: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["target"] == "purser::audit")
            .collect();
        assert_eq!(audit.len(), 200);
        assert_eq!(scopes, 250);
        assert_eq!(audit[0]["scopes"].as_array().unwrap().len(), 2);
        assert!(audit[1]["scopes"][0]["scope"]
            .as_str()
            .unwrap()
            .starts_with("repository:"));
    }
}
