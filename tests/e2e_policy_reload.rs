//! Live edits of the policy file while token requests keep flowing: a good edit is in force
//! within two seconds, a broken one leaves the previous policy serving and shows in the log and
//! the metrics, fixing it applies it; by file events and by SIGHUP; edits in place and by rename.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use purser_testkit::policy::*;
use purser_testkit::*;

/// alice owns alice/**; nothing on shared/**.
const V0: &str = r#"rules:
  - name: alice owns alice
    match: { account: alice, name: "alice/**" }
    actions: [pull, push, delete]
"#;

/// V0 plus a grant on a new repository.
const V1: &str = r#"rules:
  - name: alice owns alice
    match: { account: alice, name: "alice/**" }
    actions: [pull, push, delete]
  - name: shared for alice
    match: { account: alice, name: "shared/**" }
    actions: [pull, push]
"#;

/// Three rules, shared/** narrowed to pull.
const V2: &str = r#"rules:
  - name: alice owns alice
    match: { account: alice, name: "alice/**" }
    actions: [pull, push, delete]
  - name: shared read for alice
    match: { account: alice, name: "shared/**" }
    actions: [pull]
  - name: public read
    match: { name: "public/**" }
    actions: [pull]
"#;

/// A broken edit: its text, and what the log must say (after `path:`).
struct Broken {
    what: &'static str,
    text: &'static str,
    /// The line the problem is reported at.
    line: usize,
    /// What the message must contain after `path:line: `.
    says: &'static str,
}

/// Each of these would revoke the grant on shared/** if it were applied.
const BROKEN: [Broken; 3] = [
    Broken {
        what: "YAML syntax error",
        text: r#"rules:
  - name: alice owns alice
    match: { account: alice, name: "alice/**"
    actions: [pull, push, delete]
"#,
        line: 4,
        says: "YAML syntax error",
    },
    Broken {
        what: "unknown field",
        text: r#"rules:
  - name: alice owns alice
    match: { acount: alice, name: "alice/**" }
    actions: [pull, push, delete]
"#,
        line: 3,
        says: r#"unknown match field "acount" (did you mean "account"?)"#,
    },
    Broken {
        what: "invalid regex",
        text: r#"rules:
  - name: alice owns alice
    match: { account: alice, name: "/alice/(app|web/" }
    actions: [pull, push, delete]
"#,
        line: 3,
        says: "match.name: invalid regex",
    },
];

const MINE: &str = "repository:alice/app:pull,push";
const SHARED: &str = "repository:shared/app:pull,push";

fn shared(access: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    access
        .get("repository:shared/app")
        .cloned()
        .unwrap_or_default()
}

fn actions(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Token requests for alice on her own repository and on shared/app, in a loop: every answer
/// must be a 200 that still grants her own repository (no edit, good or broken, locks her out).
fn hammer(p: &Purser) -> Hammer {
    Hammer::start(
        p.token_url(),
        ALICE,
        vec![MINE.to_string(), SHARED.to_string()],
        |access| {
            let mine = access
                .get("repository:alice/app")
                .cloned()
                .unwrap_or_default();
            if mine != ["pull", "push"] {
                return Err(format!("alice/app granted {mine:?}, expected [pull, push]"));
            }
            let s = shared(access);
            let allowed: [&[&str]; 3] = [&[], &["pull", "push"], &["pull"]];
            if !allowed.iter().any(|a| *a == s.as_slice()) {
                return Err(format!("shared/app granted {s:?}"));
            }
            Ok(())
        },
    )
}

/// The policy state visible in the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Gauges {
    success: f64,
    failure: f64,
    last_success: f64,
    rules: f64,
}

fn gauges(p: &Purser) -> Gauges {
    Gauges {
        success: policy_reloads(p, "success"),
        failure: policy_reloads(p, "failure"),
        last_success: p.metric(
            "purser_reload_last_success_timestamp_seconds",
            &[("source", "policy")],
        ),
        rules: p.metric("purser_policy_rules", &[]),
    }
}

/// Applies a good edit with `write` (or `signal` after it) and checks it is in force within
/// the bound, with the metrics updated.
fn apply_good(
    p: &Purser,
    h: &Hammer,
    write: impl FnOnce(),
    signal: bool,
    want_shared: &[&str],
    rules: usize,
    how: &str,
) {
    let before = gauges(p);
    let since = Instant::now();
    write();
    if signal {
        p.sighup();
    }
    let want = actions(want_shared);
    let took = h.wait_for(
        since,
        EVENT_TIMEOUT,
        &format!("edit ({how}) in force: shared/app granted {want:?}"),
        |a| shared(a) == want,
        || p.log_tail(),
    );
    assert!(
        took <= APPLY_BOUND,
        "edit ({how}) took {took:?} to apply, more than {APPLY_BOUND:?}\n{}",
        p.log_tail()
    );
    wait_until(
        EVENT_TIMEOUT,
        &format!("success of the reload ({how}) counted"),
        || {
            let g = gauges(p);
            g.success > before.success && g.rules == rules as f64
        },
        || format!("{:?} -> {:?}\n{}", before, gauges(p), p.log_tail()),
    );
    let after = gauges(p);
    assert!(
        after.last_success > before.last_success,
        "last success timestamp did not move ({how}): {before:?} -> {after:?}"
    );
    assert_eq!(after.failure, before.failure, "no failure counted ({how})");
}

/// Applies a broken edit and checks it is refused: counted, logged with file, line and field,
/// and the previous policy (shared/app: `in_force`) still deciding.
fn refuse_broken(
    p: &Purser,
    h: &Hammer,
    policy: &Path,
    b: &Broken,
    write: impl FnOnce(&str),
    signal: bool,
    in_force: &[&str],
) {
    let before = gauges(p);
    let log_offset = p.log_text().len();
    write(b.text);
    if signal {
        p.sighup();
    }
    wait_until(
        EVENT_TIMEOUT,
        &format!("failure of the reload ({}) counted", b.what),
        || policy_reloads(p, "failure") > before.failure,
        || p.log_tail(),
    );
    let after = gauges(p);
    assert_eq!(after.success, before.success, "{}: no success", b.what);
    assert_eq!(
        after.last_success, before.last_success,
        "{}: the last success timestamp stays",
        b.what
    );
    assert_eq!(
        after.rules, before.rules,
        "{}: the rule count is the one in force",
        b.what
    );
    let log = p.log_text()[log_offset..].to_string();
    let expected = format!("{}:{}: {}", policy.display(), b.line, b.says);
    assert!(
        log.contains(&expected),
        "{}: the log should say {expected:?}; it says:\n{log}",
        b.what
    );
    assert!(
        log.contains("the previous version stays in force"),
        "{}: the log should say the previous policy stays; it says:\n{log}",
        b.what
    );
    // Requests sent after the refusal still see the previous policy.
    let seen = h.next();
    assert_eq!(
        shared(&seen),
        actions(in_force),
        "{}: previous policy",
        b.what
    );
    assert_eq!(
        granted(p, Some(ALICE), SHARED),
        actions(in_force),
        "{}: previous policy (fresh request)",
        b.what
    );
}

fn finish(h: Hammer, p: &Purser) {
    let (count, failures) = h.stop();
    assert!(
        failures.is_empty(),
        "{} of {count} token requests failed during the edits:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        p.log_tail()
    );
    assert!(count > 0, "the loop sent no request");
}

#[test]
fn policy_edits_apply_live_in_place_and_by_rename_and_broken_edits_keep_the_previous_policy() {
    let p = Purser::start(base_config(), &[("policy.yaml", V0)]);
    let policy = p.dir().join("policy.yaml");
    assert_eq!(gauges(&p).rules, 1.0);
    assert!(gauges(&p).last_success > 0.0);
    assert_eq!(granted(&p, Some(ALICE), SHARED), actions(&[]));
    let h = hammer(&p);

    apply_good(
        &p,
        &h,
        || write_by_rename(&policy, V1),
        false,
        &["pull", "push"],
        2,
        "rename granting shared/**",
    );
    // Every broken edit, alternating between rename and in place (`rename_first` picks the
    // first), each refused with `still` granted throughout.
    let refuse_all = |rename_first: bool, still: &[&str]| {
        for (i, b) in BROKEN.iter().enumerate() {
            let by_rename = (i % 2 == 0) == rename_first;
            refuse_broken(
                &p,
                &h,
                &policy,
                b,
                |text| {
                    if by_rename {
                        write_by_rename(&policy, text)
                    } else {
                        write_in_place(&policy, text)
                    }
                },
                false,
                still,
            );
        }
    };
    refuse_all(false, &["pull", "push"]);
    apply_good(
        &p,
        &h,
        || write_in_place(&policy, V2),
        false,
        &["pull"],
        3,
        "in-place fix",
    );
    // The same broken edits the other way round, then a fix by rename.
    refuse_all(true, &["pull"]);
    apply_good(
        &p,
        &h,
        || write_by_rename(&policy, V0),
        false,
        &[],
        1,
        "rename revoking shared/**",
    );
    finish(h, &p);
}

/// Size of every policy version in the SIGHUP test: equal sizes (and a restored modification
/// time) keep the metadata poll from noticing an edit.
const PADDED: usize = 1024;

#[test]
fn sighup_applies_an_edit_no_watcher_saw_and_refuses_broken_ones() {
    let p = Purser::start(base_config(), &[("policy.yaml", &padded(V0, PADDED))]);
    let policy = p.dir().join("policy.yaml");
    // From here on the watched name is a link into a folder purser does not watch: edits made
    // there, keeping size and time, are seen by nobody but a SIGHUP.
    let live = p.dir().join("live");
    std::fs::create_dir(&live).expect("mkdir live");
    let target = live.join("policy.yaml");
    std::fs::write(&target, padded(V0, PADDED)).expect("write live policy");
    let before = policy_reloads(&p, "success");
    let link_tmp = p.dir().join(".policy.yaml.link");
    std::os::unix::fs::symlink("live/policy.yaml", &link_tmp).expect("symlink");
    std::fs::rename(&link_tmp, &policy).expect("rename link over policy");
    wait_until(
        EVENT_TIMEOUT,
        "reload after the policy became a link",
        || policy_reloads(&p, "success") > before,
        || p.log_tail(),
    );

    let h = hammer(&p);
    let success_before = policy_reloads(&p, "success");
    let log_offset = p.log_text().len();
    apply_good(
        &p,
        &h,
        || write_unnoticed(&target, &padded(V1, PADDED)),
        true,
        &["pull", "push"],
        2,
        "SIGHUP granting shared/**",
    );
    assert_eq!(
        policy_reloads(&p, "success"),
        success_before + 1.0,
        "the SIGHUP reload is counted once"
    );
    let log = p.log_text()[log_offset..].to_string();
    let hup = log.find("SIGHUP received").unwrap_or_else(|| {
        panic!("the log should record the SIGHUP:\n{log}");
    });
    assert!(
        log[hup..].contains("loaded"),
        "the reload is logged after the SIGHUP:\n{log}"
    );

    for b in &BROKEN {
        refuse_broken(
            &p,
            &h,
            &policy,
            b,
            |text| write_unnoticed(&target, &padded(text, PADDED)),
            true,
            &["pull", "push"],
        );
    }
    apply_good(
        &p,
        &h,
        || write_unnoticed(&target, &padded(V2, PADDED)),
        true,
        &["pull"],
        3,
        "SIGHUP fix",
    );
    finish(h, &p);
}
