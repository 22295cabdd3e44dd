//! Labels in the policy: `match: { labels: { KEY: GLOB } }` and `${labels.KEY}` in names, with
//! the values matched literally, as `${account}` is.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::BTreeMap;

use purser_authz::{run_cases_with_labels, CaseFile, Policy};
use purser_core::{Identity, RequestContext, ResourceScope};

const POLICY: &str = r#"
rules:
  - name: main branch of acme pushes to its own repository
    match: { labels: { repository: "acme/*", ref: refs/heads/main }, name: "ci/${labels.repository}" }
    actions: [pull, push]
  - name: any acme job reads
    match: { labels: { repository: "acme/*" }, name: "ci/**" }
    actions: [pull]
  - name: by regex
    match: { name: "/re/${labels.repository}/[a-z]+/" }
    actions: [pull]
"#;

fn who(labels: &[(&str, &str)]) -> Identity {
    let mut id = Identity::new("github:x", vec![]);
    id.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    id
}

fn granted(p: &Policy, id: &Identity, scope: &str) -> Vec<String> {
    let scope: ResourceScope = scope.parse().unwrap();
    let ctx = RequestContext {
        service: "registry.local".into(),
        client_ip: None,
    };
    p.authorize(id, &ctx, &scope).actions
}

#[test]
fn labels_match_and_fill_names() {
    let p = Policy::parse(POLICY, "p.yaml").unwrap();
    let main = who(&[("repository", "acme/app"), ("ref", "refs/heads/main")]);
    assert_eq!(
        granted(&p, &main, "repository:ci/acme/app:pull,push"),
        ["pull", "push"]
    );
    // Another repository's name: only the read rule.
    assert_eq!(
        granted(&p, &main, "repository:ci/acme/other:pull,push"),
        ["pull"]
    );
    let branch = who(&[("repository", "acme/app"), ("ref", "refs/heads/dev")]);
    assert_eq!(
        granted(&p, &branch, "repository:ci/acme/app:pull,push"),
        ["pull"]
    );
    // No labels: nothing (a missing label never matches, not even an empty value).
    assert!(granted(&p, &who(&[]), "repository:ci/acme/app:pull").is_empty());
    let other = who(&[("repository", "evil/app"), ("ref", "refs/heads/main")]);
    assert!(granted(&p, &other, "repository:ci/evil/app:pull").is_empty());
}

#[test]
fn label_values_are_literal_in_globs_and_regexes() {
    let p = Policy::parse(POLICY, "p.yaml").unwrap();
    // A value with glob characters matches itself only.
    let star = who(&[("repository", "acme/*"), ("ref", "refs/heads/main")]);
    assert!(granted(&p, &star, "repository:ci/acme/app:push").is_empty());
    // In a regex the value is escaped: "a.b" does not match "aXb".
    let dotted = who(&[("repository", "a.b")]);
    assert_eq!(granted(&p, &dotted, "repository:re/a.b/x:pull"), ["pull"]);
    assert!(granted(&p, &dotted, "repository:re/aXb/x:pull").is_empty());
}

#[test]
fn bad_label_rules_are_refused_with_their_line() {
    for (text, want) in [
        (
            "rules:\n  - { match: { labels: {} }, actions: [pull] }\n",
            "empty mapping",
        ),
        (
            "rules:\n  - { match: { labels: [a] }, actions: [pull] }\n",
            "expected a mapping",
        ),
        (
            "rules:\n  - { match: { labels: { \"a b\": x } }, actions: [pull] }\n",
            "label name",
        ),
        (
            "rules:\n  - { match: { labels: { a: \"${account}\" } }, actions: [pull] }\n",
            "only allowed in `name`",
        ),
        (
            "rules:\n  - { match: { name: \"${labels.}\" }, actions: [pull] }\n",
            "label name",
        ),
        (
            "rules:\n  - { match: { service: \"${labels.a}\" }, actions: [pull] }\n",
            "only allowed in `name`",
        ),
    ] {
        let e = Policy::parse(text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
        assert!(e.contains("p.yaml:2"), "{e}");
    }
}

#[test]
fn cases_carry_labels_and_the_command_line_adds_them() {
    let p = Policy::parse(POLICY, "p.yaml").unwrap();
    let text = r#"
cases:
  - { account: "github:x", labels: { repository: acme/app, ref: refs/heads/main }, scope: "repository:ci/acme/app:push", expect: [push] }
  - { account: "github:x", labels: { ref: refs/heads/main }, scope: "repository:ci/acme/app:push", expect: [push] }
"#;
    let cases = CaseFile::parse(text, "c.yaml").unwrap();
    let none = run_cases_with_labels(&p, &cases, "registry.local", &BTreeMap::new());
    assert_eq!(none.len(), 1, "the second case lacks the repository label");
    assert!(
        none[0].to_string().contains("labels [ref=refs/heads/main]"),
        "{}",
        none[0]
    );
    let extra = BTreeMap::from([("repository".to_string(), "acme/app".to_string())]);
    assert!(run_cases_with_labels(&p, &cases, "registry.local", &extra).is_empty());
}
