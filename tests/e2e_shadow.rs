//! The shadow policy beside the live one, `purser policy replay` and `purser policy promote`,
//! with real skopeo traffic through the distribution registry.
//!
//! What the shadow and the replay should find is computed independently, with
//! `purser policy explain` on each policy for every request the audit log records, never by
//! copying what the server reported.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use purser_testkit::policy::*;
use purser_testkit::*;
use serde_json::{json, Value};

/// The live policy of these tests.
const LIVE: &str = r#"rules:
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: bob reads shared
    match: { account: bob, name: "shared/**" }
    actions: [pull]
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push, delete]
  - name: shared for everyone
    match: { account: "*", name: "shared/**" }
    actions: [pull, push]
  - name: public read, anonymous too
    match: { name: "public/**" }
    actions: [pull]
"#;

/// The live policy with one rule, "shared for everyone", moved to the top: it now takes
/// bob's requests on shared/ (more) and the administrators' (less: it grants no `*`).
const MOVED: &str = r#"rules:
  - name: shared for everyone
    match: { account: "*", name: "shared/**" }
    actions: [pull, push]
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: bob reads shared
    match: { account: bob, name: "shared/**" }
    actions: [pull]
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push, delete]
  - name: public read, anonymous too
    match: { name: "public/**" }
    actions: [pull]
"#;

const SHADOW_METRIC: &str = "purser_policy_shadow_decisions_total";

fn config() -> Value {
    let mut c = base_config();
    set_path(&mut c, "log.format", json!("json"));
    set_path(&mut c, "authz.shadow_policy_file", json!("shadow.yaml"));
    c
}

fn shadow_count(p: &Purser, outcome: &str) -> f64 {
    p.metric(SHADOW_METRIC, &[("outcome", outcome)])
}

fn shadow_reloads(p: &Purser, outcome: &str) -> f64 {
    p.metric(
        "purser_reloads_total",
        &[("source", "shadow_policy"), ("outcome", outcome)],
    )
}

/// A folder with `purser.yaml` files for `purser policy explain`, one per policy.
struct ExplainConfigs {
    dir: tempfile::TempDir,
}

impl ExplainConfigs {
    fn new(policies: &[(&str, &str)]) -> ExplainConfigs {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in policies {
            std::fs::write(dir.path().join(format!("{name}.yaml")), text).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-config.yaml")),
                format!("token:\n  service: [\"{SERVICE}\"]\nauthz:\n  policy_file: {name}.yaml\n"),
            )
            .unwrap();
        }
        ExplainConfigs { dir }
    }

    fn policy(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.yaml"))
    }

    /// `purser policy explain` of one recorded request with policy `name`: per scope, the
    /// granted actions (as a set) and the deciding rule's name.
    fn explain(&self, name: &str, record: &Value) -> Vec<(BTreeSet<String>, Option<String>)> {
        let config = self.dir.path().join(format!("{name}-config.yaml"));
        let config = config.display().to_string();
        let account = record["account"].as_str().unwrap().to_string();
        let ip = record["client_ip"].as_str().unwrap().to_string();
        let scopes: Vec<String> = record["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["scope"].as_str().unwrap().to_string())
            .collect();
        let mut args: Vec<&str> = vec![
            "policy",
            "explain",
            "--config",
            &config,
            "--account",
            &account,
            "--ip",
            &ip,
        ];
        for g in record["groups"].as_array().unwrap() {
            args.extend(["--group", g.as_str().unwrap()]);
        }
        args.extend(scopes.iter().map(String::as_str));
        let out = run_purser(&args, "");
        assert!(
            out.status.success(),
            "explain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_explain(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|l| (l.granted.into_iter().collect(), l.rule.map(|r| r.1)))
            .collect()
    }
}

/// One requested scope of the recorded traffic, decided by explain with both policies.
#[derive(Clone, Debug)]
struct Decided {
    account: String,
    scope: String,
    live: (BTreeSet<String>, Option<String>),
    shadow: (BTreeSet<String>, Option<String>),
}

impl Decided {
    fn outcome(&self) -> &'static str {
        let (l, s) = (&self.live.0, &self.shadow.0);
        match (s.is_superset(l), l.is_superset(s)) {
            (true, true) => "same",
            (true, false) => "more",
            (false, true) => "less",
            (false, false) => "different",
        }
    }
}

/// What the skopeo traffic left: the JSON log, the audit records, the shadow metric, and
/// every requested scope decided by explain with both policies.
struct Traffic {
    log: String,
    records: Vec<Value>,
    metric: BTreeMap<&'static str, f64>,
    decided: Vec<Decided>,
    explain: ExplainConfigs,
}

/// Runs the traffic once for the tests of this binary (the registry starts once).
fn traffic() -> &'static Traffic {
    static T: OnceLock<Traffic> = OnceLock::new();
    T.get_or_init(run_traffic)
}

fn run_traffic() -> Traffic {
    let s = Stack::start_with(
        config(),
        &[("policy.yaml", LIVE), ("shadow.yaml", MOVED)],
        None,
    );
    let image = OciImage::build(1);
    s.push_ok(&image, "shared/app:1", Creds::of(ALICE));
    s.push_ok(&image, "alice/app:1", Creds::of(ALICE));
    s.push_ok(&image, "public/base:1", Creds::of(ADMIN));
    // The live policy lets bob read shared/, not write it: refused, as it always was, though
    // the shadow would allow it.
    let out = s
        .skopeo
        .push(&image, &s.registry, "shared/bob:1", Creds::of(BOB));
    assert!(!out.ok, "bob pushed to shared/ under the live policy");
    assert!(!s.exists("shared/bob:1"));
    s.pull_identical(&image, "shared/app:1", Creds::of(BOB));
    s.push_ok(&image, "bob/tools:1", Creds::of(BOB));
    s.pull_identical(&image, "public/base:1", Creds::None);
    // Administrators delete under the live policy; the shadow would refuse them.
    s.push_ok(&image, "shared/old:1", Creds::of(ALICE));
    let out = s
        .skopeo
        .delete(&s.registry.reference("shared/old:1"), Creds::of(ADMIN));
    assert!(
        out.ok,
        "admin could not delete: {}\n{}",
        out.stderr,
        s.logs()
    );
    assert!(
        !s.exists("shared/old:1"),
        "the live policy's delete did not happen"
    );

    let p = &s.purser;
    let records: Vec<Value> = p
        .audit_records()
        .into_iter()
        .filter(|r| r["outcome"] == "issued")
        .filter(|r| r["scopes"].as_array().is_some_and(|s| !s.is_empty()))
        .collect();
    assert!(records.len() >= 8, "too few token requests: {records:#?}");
    let mut metric = BTreeMap::new();
    for o in ["same", "more", "less", "different"] {
        metric.insert(o, shadow_count(p, o));
    }
    let explain = ExplainConfigs::new(&[("live", LIVE), ("shadow", MOVED)]);
    let mut decided = Vec::new();
    for r in &records {
        let live = explain.explain("live", r);
        let shadow = explain.explain("shadow", r);
        for ((entry, live), shadow) in r["scopes"].as_array().unwrap().iter().zip(live).zip(shadow)
        {
            decided.push(Decided {
                account: r["account"].as_str().unwrap().to_string(),
                scope: entry["scope"].as_str().unwrap().to_string(),
                live,
                shadow,
            });
        }
    }
    Traffic {
        log: p.log_text(),
        records,
        metric,
        decided,
        explain,
    }
}

fn set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn rule_name(v: &Value) -> Option<String> {
    v.get("name").and_then(Value::as_str).map(str::to_string)
}

#[test]
fn skopeo_is_answered_by_the_live_policy_and_the_shadow_names_exactly_the_moved_rules_scopes() {
    let t = traffic();
    // Every answer is the live policy's.
    let mut i = 0;
    for r in &t.records {
        assert_eq!(r["service"], SERVICE, "{r}");
        for entry in r["scopes"].as_array().unwrap() {
            let d = &t.decided[i];
            i += 1;
            assert_eq!(set(&entry["granted"]), d.live.0, "{r}");
            assert_eq!(rule_name(&entry["rule"]), d.live.1, "{r}");
        }
    }
    // The audit records' shadow fields hold exactly the scopes explain says the two policies
    // decide differently, each with both sides.
    let mut expected = BTreeSet::new();
    for d in t.decided.iter().filter(|d| d.outcome() != "same") {
        expected.insert((
            d.account.clone(),
            d.scope.clone(),
            d.outcome().to_string(),
            d.live.clone(),
            d.shadow.clone(),
        ));
    }
    let mut seen = BTreeSet::new();
    for r in &t.records {
        let Some(diffs) = r.get("shadow") else {
            continue;
        };
        for d in diffs.as_array().unwrap() {
            seen.insert((
                r["account"].as_str().unwrap().to_string(),
                d["scope"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
                (set(&d["live"]["granted"]), rule_name(&d["live"]["rule"])),
                (
                    set(&d["shadow"]["granted"]),
                    rule_name(&d["shadow"]["rule"]),
                ),
            ));
        }
    }
    assert_eq!(seen, expected);
    let outcomes: BTreeSet<&str> = expected.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        outcomes,
        BTreeSet::from(["less", "more"]),
        "the traffic must show both kinds of change: {expected:#?}"
    );
    assert!(expected
        .iter()
        .any(|e| e.0 == "bob" && e.1.contains("shared/bob")));
    assert!(expected.iter().any(|e| e.0 == "admin" && e.2 == "less"));
    // The metric counts every decided scope by its outcome.
    for o in ["same", "more", "less", "different"] {
        let want = t.decided.iter().filter(|d| d.outcome() == o).count() as f64;
        assert_eq!(t.metric[o], want, "{SHADOW_METRIC}{{outcome={o:?}}}");
    }
}

/// The traffic's log in a folder of its own, with one record cut short and one text line.
fn logs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = traffic();
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.log");
    std::fs::write(&clean, &t.log).unwrap();
    let last = t
        .log
        .lines()
        .rfind(|l| l.contains("purser::audit"))
        .unwrap();
    let dirty = dir.path().join("dirty.log");
    std::fs::write(
        &dirty,
        format!("{}{}\nnot json at all\n", t.log, &last[..last.len() / 2]),
    )
    .unwrap();
    (dir, clean, dirty)
}

fn replay(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["policy", "replay", "--format", "json"];
    all.extend(args);
    let out = run_purser(&all, "");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_of_the_traffic_lists_exactly_the_changed_decisions() {
    let t = traffic();
    let (_dir, clean, dirty) = logs();
    let live = t.explain.policy("live").display().to_string();
    let moved = t.explain.policy("shadow").display().to_string();
    let clean = clean.display().to_string();
    let dirty = dirty.display().to_string();

    // Expected groups, from explain: (account, old, new) -> count.
    type Side = (BTreeSet<String>, Option<String>);
    let mut expected: BTreeMap<(String, Side, Side), u64> = BTreeMap::new();
    for d in t.decided.iter().filter(|d| d.outcome() != "same") {
        *expected
            .entry((d.account.clone(), d.live.clone(), d.shadow.clone()))
            .or_default() += 1;
    }
    assert!(!expected.is_empty());
    let groups_of = |report: &Value| -> BTreeMap<(String, Side, Side), u64> {
        let mut out = BTreeMap::new();
        for g in report["groups"].as_array().unwrap() {
            let key = (
                g["account"].as_str().unwrap().to_string(),
                (set(&g["old"]["granted"]), rule_name(&g["old"]["rule"])),
                (set(&g["new"]["granted"]), rule_name(&g["new"]["rule"])),
            );
            *out.entry(key).or_default() += g["count"].as_u64().unwrap();
        }
        out
    };

    for against in [vec!["--against", live.as_str()], vec![]] {
        let mut args = vec!["--policy", moved.as_str()];
        args.extend(&against);
        args.push(dirty.as_str());
        let (code, report, stderr) = replay(&args);
        assert_eq!(code, 1, "{against:?}: {report:#}\n{stderr}");
        assert_eq!(groups_of(&report), expected, "{against:?}: {report:#}");
        assert_eq!(
            report["changed"].as_u64().unwrap(),
            expected.values().sum::<u64>()
        );
        assert_eq!(report["records"].as_u64().unwrap(), t.records.len() as u64);
        assert_eq!(report["skipped_lines"], 2, "{report:#}");
    }

    // The same policy changes nothing: exit 0.
    for against in [vec!["--against", live.as_str()], vec![]] {
        let mut args = vec!["--policy", live.as_str()];
        args.extend(&against);
        args.push(clean.as_str());
        let (code, report, stderr) = replay(&args);
        assert_eq!(code, 0, "{report:#}\n{stderr}");
        assert_eq!(report["changed"], 0);
        assert_eq!(report["skipped_lines"], 0);
    }

    // A gzipped log reads as the plain one.
    let status = std::process::Command::new("gzip")
        .args(["-k", "-f", &clean])
        .status()
        .expect("gzip");
    assert!(status.success());
    let gz = format!("{clean}.gz");
    let (code, zipped, _) = replay(&["--policy", &moved, &gz]);
    let (_, plain, _) = replay(&["--policy", &moved, &clean]);
    assert_eq!(code, 1);
    assert_eq!(zipped, plain);

    // Text output names the accounts, the rules and the actions.
    let out = run_purser(&["policy", "replay", "--policy", &moved, &clean], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("account \"bob\", repository shared/"),
        "{text}"
    );
    assert!(
        text.contains("now pull,push (rule 0 \"shared for everyone\")"),
        "{text}"
    );

    // Bad input: exit 2.
    let missing = format!("{clean}.missing");
    assert_eq!(replay(&["--policy", &moved, &missing]).0, 2);
    let broken = t.explain.dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "rules:\n  - { match: { acount: x }, actions: [] }\n",
    )
    .unwrap();
    let (code, _, stderr) = replay(&["--policy", broken.to_str().unwrap(), &clean]);
    assert_eq!(code, 2);
    assert!(stderr.contains("acount"), "{stderr}");
}

/// A purser without a registry, for the reload and promotion tests.
fn start(shadow: &str) -> Purser {
    Purser::start(config(), &[("policy.yaml", LIVE), ("shadow.yaml", shadow)])
}

const BOB_SHARED: &str = "repository:shared/x:pull,push";

#[test]
fn a_broken_shadow_file_is_reported_and_the_live_decisions_do_not_change() {
    let p = start(MOVED);
    let shadow = p.dir().join("shadow.yaml");
    assert_eq!(granted(&p, Some(BOB), BOB_SHARED), ["pull"]);
    assert_eq!(shadow_count(&p, "more"), 1.0);
    assert_eq!(shadow_reloads(&p, "success"), 1.0);
    assert_eq!(p.metric("purser_policy_shadow_rules", &[]), 5.0);

    write_by_rename(
        &shadow,
        "rules:\n  - { match: { acount: bob }, actions: [] }\n",
    );
    wait_until(
        EVENT_TIMEOUT,
        "the broken shadow file to be counted",
        || shadow_reloads(&p, "failure") >= 1.0,
        || p.log_tail(),
    );
    let logged = p.log_text();
    assert!(
        logged.lines().any(|l| l.contains("\"ERROR\"")
            && l.contains("shadow_policy")
            && l.contains("acount")),
        "no error line for the shadow file:\n{logged}"
    );
    // check-config reports it with its key.
    let config = p.dir().join("purser.yaml");
    let out = run_purser(&["check-config", "--config", config.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authz.shadow_policy_file") && stderr.contains("acount"),
        "{stderr}"
    );
    // The live policy decides as before, the policy's own reloads saw nothing, the server is
    // ready, and the last good shadow still compares.
    assert_eq!(granted(&p, Some(BOB), BOB_SHARED), ["pull"]);
    assert_eq!(granted(&p, Some(ADMIN), "repository:shared/x:*"), ["*"]);
    assert_eq!(policy_reloads(&p, "failure"), 0.0);
    assert_eq!(
        Http::get(&format!("{}/readyz", p.base_url()))
            .send()
            .unwrap()
            .status,
        200
    );
    assert_eq!(shadow_count(&p, "more"), 2.0);
    assert_eq!(shadow_count(&p, "less"), 1.0);

    // A shadow file broken from the start: the server starts, decides with the live policy,
    // and has no shadow.
    let p = start("rules: [\n");
    assert_eq!(shadow_reloads(&p, "failure"), 1.0);
    assert_eq!(p.metric("purser_policy_shadow_rules", &[]), 0.0);
    assert_eq!(granted(&p, Some(BOB), BOB_SHARED), ["pull"]);
    assert_eq!(shadow_count(&p, "same") + shadow_count(&p, "more"), 0.0);
    assert_eq!(
        Http::get(&format!("{}/readyz", p.base_url()))
            .send()
            .unwrap()
            .status,
        200
    );
    // Fixed, it is picked up.
    write_by_rename(&p.dir().join("shadow.yaml"), MOVED);
    wait_until(
        EVENT_TIMEOUT,
        "the fixed shadow file to load",
        || shadow_reloads(&p, "success") >= 1.0,
        || p.log_tail(),
    );
    assert_eq!(granted(&p, Some(BOB), BOB_SHARED), ["pull"]);
    assert_eq!(shadow_count(&p, "more"), 1.0);
}

fn promote(p: &Purser) -> std::process::Output {
    let config = p.dir().join("purser.yaml");
    run_purser(
        &["policy", "promote", "--config", config.to_str().unwrap()],
        "",
    )
}

#[test]
fn promote_makes_the_shadow_the_policy_after_checking_it() {
    let p = start(MOVED);
    let dir: &Path = p.dir();
    assert_eq!(granted(&p, Some(BOB), BOB_SHARED), ["pull"]);

    // A broken shadow is refused and nothing changes.
    std::fs::write(
        dir.join("shadow.yaml"),
        "rules:\n  - { match: { acount: bob }, actions: [] }\n",
    )
    .unwrap();
    let out = promote(&p);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("acount"));
    assert_eq!(
        std::fs::read_to_string(dir.join("policy.yaml")).unwrap(),
        LIVE
    );

    std::fs::write(dir.join("shadow.yaml"), MOVED).unwrap();
    let out = promote(&p);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("policy.yaml")).unwrap(),
        MOVED
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("policy.yaml.previous")).unwrap(),
        LIVE
    );
    // The server loads it: bob now writes shared/, and the shadow agrees with the policy.
    wait_until(
        EVENT_TIMEOUT,
        "the promoted policy in force",
        || granted(&p, Some(BOB), BOB_SHARED) == ["pull", "push"],
        || p.log_tail(),
    );
    let more = shadow_count(&p, "more");
    assert_eq!(granted(&p, Some(BOB), BOB_SHARED), ["pull", "push"]);
    assert_eq!(shadow_count(&p, "more"), more);
}
