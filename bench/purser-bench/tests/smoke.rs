//! A smoke run of the whole benchmark: every scenario for a fraction of a second, against the
//! built-in copy of `purser serve` (a debug build; the figures mean nothing). It keeps the
//! benchmark from rotting: fixtures the server must accept, the load generator's protocol, the
//! rates, the HTTP-limit endpoint, pinning, /proc sampling and the report.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::process::Command;

use purser_bench::driver::{scenarios, Report, Target};

#[test]
fn every_scenario_runs_and_every_answer_is_a_token() {
    let work = tempfile::tempdir().unwrap();
    let json = work.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_purser-bench"))
        .args(["run", "--smoke", "--work"])
        .arg(work.path().join("run"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("purser-bench runs (taskset, from util-linux, is needed)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let report: Report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report.smoke);

    // Every scenario ran, without a single failed request.
    let names: Vec<&str> = report
        .rows
        .iter()
        .map(|r| r.scenario.name.as_str())
        .collect();
    for s in scenarios() {
        assert!(
            names.contains(&s.name.as_str()),
            "{} missing from {names:?}",
            s.name
        );
    }
    // The cache under htpasswd edits: the load before, during and after the edits.
    for name in [
        "cached 2000 users c16 no edits (before)",
        "cached 2000 users c16 one user added per second",
        "cached 2000 users c16 no edits (after)",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for row in &report.rows {
        let r = &row.result;
        assert_eq!(r.errors, 0, "{}: {:?}", row.scenario.name, r.first_error);
        assert!(
            row.peak_rss_mib.is_some_and(|m| m > 0.0),
            "{}",
            row.scenario.name
        );
        assert!(r.server_cpu_secs.is_some(), "{}", row.scenario.name);
        match row.scenario.target {
            // A cold run at bcrypt cost 10 may finish no request in a smoke window.
            Target::Purser { warm: false, .. } => {}
            _ => assert!(
                r.ok > 0 && r.latency.count == r.ok,
                "{}: {r:?}",
                row.scenario.name
            ),
        }
        if row.scenario.probe {
            let p = r.probe.as_ref().expect("probe figures");
            assert!(p.count > 0, "{}: no /healthz answer", row.scenario.name);
        }
    }
    // The replay of audit records ran on both logs, and decisions changed between the two
    // policies.
    for what in ["plain", "gzipped"] {
        let rate = report
            .rates
            .iter()
            .find(|r| r.what == format!("replay {what} audit records"))
            .unwrap_or_else(|| panic!("no replay figure for the {what} log"));
        assert_eq!(rate.count, 5_000);
    }
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.what.starts_with("8. replay") && c.holds && c.detail.contains("peak RSS")),
        "{stdout}"
    );
    // OIDC logins are cold by design (never cached) but must all be answered.
    let oidc = report
        .rows
        .iter()
        .find(|r| r.scenario.name == purser_bench::driver::OIDC)
        .unwrap();
    assert!(oidc.result.ok > 0, "{:?}", oidc.result);

    // A purser answer carries the token twice: well over the bare JSON fields.
    let es = report
        .rows
        .iter()
        .find(|r| r.scenario.name == "warm ES256 c16")
        .unwrap();
    assert!(es.result.body_len > 400, "{}", es.result.body_len);

    // The limits of one core were measured for each algorithm and for bcrypt.
    let whats: Vec<&str> = report.rates.iter().map(|r| r.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "sign RS256",
            "sign ES256",
            "sign EdDSA",
            "bcrypt verify cost 10",
            "replay plain audit records",
            "replay gzipped audit records"
        ]
    );
    assert!(report
        .rates
        .iter()
        .all(|r| r.count > 0 && r.per_second > 0.0));

    // The table and every check are printed.
    assert!(
        stdout.contains("| scenario | conns | tokens/s | p50 ms | p99 ms |"),
        "{stdout}"
    );
    assert!(!report.checks.is_empty());
    for c in &report.checks {
        assert!(stdout.contains(&c.what), "{} not printed", c.what);
    }
}
