//! `purser policy test` case files: parsing, running, and the failure report.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_authz::{run_cases, CaseFile, Policy};

const POLICY: &str = r#"
rules:
  - name: team repos
    match: { groups: [developers], name: "team/**" }
    actions: [pull]
  - name: nothing for contractors
    match: { groups: [contractors] }
    actions: []
  - name: office push
    match: { ip: ["10.0.0.0/8"], service: "internal" }
    actions: [push]
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "policy.yaml").unwrap()
}

#[test]
fn the_interface_example_parses_and_passes() {
    let text = r#"
cases:
  - { account: alice, groups: [developers], scope: "repository:team/app:pull", expect: [pull] }
  - { account: "", scope: "repository:secret/app:pull", expect: [] }
"#;
    let cases = CaseFile::parse(text, "cases.yaml").unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases.cases()[1].account, "");
    assert!(run_cases(&policy(), &cases, "registry.local").is_empty());
}

#[test]
fn failures_render_a_readable_diff() {
    let text = r#"cases:
  - { account: alice, groups: [developers], scope: "repository:team/app:pull,push", expect: [push, pull] }
  - account: carl
    groups: [contractors]
    scope: "repository:team/app:pull"
    expect: [pull]
  - { account: "", scope: "repository:x:pull", expect: [pull] }
  - { account: bob, scope: "repository:x:push", ip: "10.1.1.1", service: internal, expect: [push] }
  - { account: bob, scope: "repository:x:push", ip: "11.1.1.1", service: internal, expect: [push] }
"#;
    let cases = CaseFile::parse(text, "cases.yaml").unwrap();
    let failures = run_cases(&policy(), &cases, "registry.local");
    let lines: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        lines,
        vec![
            "cases.yaml:2: case 0: account \"alice\", groups [developers], scope repository:team/app:pull,push: expected [push, pull], got [pull] (rule 0 \"team repos\")",
            "cases.yaml:3: case 1: account \"carl\", groups [contractors], scope repository:team/app:pull: expected [pull], got [] (rule 1 \"nothing for contractors\": explicit deny)",
            "cases.yaml:7: case 2: account \"\" (anonymous), scope repository:x:pull: expected [pull], got [] (no rule matched)",
            "cases.yaml:9: case 4: account \"bob\", ip 11.1.1.1, service \"internal\", scope repository:x:push: expected [push], got [] (no rule matched)",
        ]
    );
}

#[test]
fn expectations_compare_as_sets() {
    let text = "cases:\n  - { account: a, groups: [developers], scope: \"repository:team/x:pull\", expect: [pull, pull] }\n";
    let cases = CaseFile::parse(text, "cases.yaml").unwrap();
    assert!(run_cases(&policy(), &cases, "registry.local").is_empty());
}

#[test]
fn case_file_problems_are_all_reported_with_lines() {
    let text = r#"cases:
  - { acount: a, scope: "repository:x:pull", expect: [] }
  - { account: a, scope: "repository:x", expect: [] }
  - { account: a, scope: "repository:x:pull repository:y:pull", expect: [] }
  - { account: a, scope: "repository:x:pull", ip: "10.0.0.0/8", expect: [] }
  - { account: a, scope: "repository:x:pull" }
"#;
    let err = CaseFile::parse(text, "cases.yaml").unwrap_err();
    let lines: Vec<String> = err.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert_eq!(
        lines[0],
        "cases.yaml:2: unknown case field \"acount\" (did you mean \"account\"?)"
    );
    assert_eq!(
        lines[1],
        "cases.yaml:2: case 0 is missing the field \"account\""
    );
    assert!(
        lines[2].starts_with("cases.yaml:3: scope: malformed scope"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("cases.yaml:4: scope: one scope per case"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].starts_with("cases.yaml:5: ip: expected one IP address"),
        "{}",
        lines[4]
    );
    assert_eq!(
        lines[5],
        "cases.yaml:6: case 4 is missing the field \"expect\""
    );
}

#[test]
fn empty_case_file_has_no_cases() {
    assert!(CaseFile::parse("", "cases.yaml").unwrap().is_empty());
    assert!(CaseFile::parse("cases: []", "cases.yaml")
        .unwrap()
        .is_empty());
}

#[test]
fn cases_match_ipv4_mapped_ranges_as_the_server_does() {
    let policy = Policy::parse(
        r#"
rules:
  - { name: no lab, match: { ip: ["::ffff:10.0.0.0/104"] }, actions: [] }
  - { name: everyone, actions: [pull] }
"#,
        "policy.yaml",
    )
    .unwrap();
    let text = r#"cases:
  - { account: a, scope: "repository:x:pull", ip: "10.1.2.3", expect: [] }
  - { account: a, scope: "repository:x:pull", ip: "::ffff:10.1.2.3", expect: [] }
  - { account: a, scope: "repository:x:pull", ip: "11.1.2.3", expect: [pull] }
"#;
    let cases = CaseFile::parse(text, "cases.yaml").unwrap();
    let failures: Vec<String> = run_cases(&policy, &cases, "registry.local")
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
