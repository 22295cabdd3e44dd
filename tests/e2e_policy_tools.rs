//! `purser policy explain` says what the server does, `purser policy test` passes and fails as
//! promised, `purser check-config` validates the policy, and the examples of docs/policy.md are
//! true of the running code.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use purser_testkit::policy::*;
use purser_testkit::*;
use serde_json::{json, Value};

const EXAMPLES: &str = include_str!("fixtures/policy/examples.yaml");
const EXAMPLES_CASES: &str = "tests/fixtures/policy/examples-cases.yaml";
const FAILING_CASES: &str = "tests/fixtures/policy/failing-cases.yaml";

/// The callers of the table: account, password, groups.
const USERS: &[(&str, &str, &[&str])] = &[
    ("alice", "alice-secret", &["team-web"]),
    ("bob", "bob-secret", &["contractors", "team-web"]),
    ("carol", "carol-secret", &["team-api", "team-web"]),
    ("admin", "admin-secret", &["admins"]),
    ("ci-app", "ci-secret", &["ci"]),
    ("mallory", "mallory-secret", &[]),
];

/// Who asks for what: `None` is anonymous.
fn table() -> Vec<(Option<&'static str>, Vec<&'static str>)> {
    vec![
        (
            Some("alice"),
            vec![
                "repository:alice/app:pull,push,delete",
                "repository:team-web/site:pull,push,delete",
                "repository:public/base:pull,push",
                "repository:secret/db:pull",
                "registry:catalog:*",
                "repository:team-api/server:push",
            ],
        ),
        (
            Some("bob"),
            vec![
                "repository:secret/db:pull",
                "repository:team-web/site:push",
                "repository:bob/tools:pull,push",
                "repository:alice/app:pull",
            ],
        ),
        (
            Some("carol"),
            vec![
                "repository:team-api/server:pull,push",
                "repository:team-web/site:pull,delete",
                "repository:secret/db:pull",
            ],
        ),
        (
            Some("admin"),
            vec![
                "registry:catalog:*",
                "repository:anything/at/all:pull,push,delete",
                "repository:secret/db:*",
            ],
        ),
        (
            Some("ci-app"),
            vec![
                "repository:apps/app:pull,push",
                "repository:apps/other:pull",
                "repository:public/base:pull",
            ],
        ),
        // Scopes on one resource are merged into one request entry: ask separately.
        (Some("ci-app"), vec!["repository:apps/app:delete"]),
        (
            Some("mallory"),
            vec!["repository:mallory/app:pull", "repository:public/base:pull"],
        ),
        (
            None,
            vec!["repository:public/base:pull", "repository:alice/app:pull"],
        ),
        (None, vec!["repository:public/base:push"]),
    ]
}

fn config() -> Value {
    let mut config = base_config();
    let mut users = serde_json::Map::new();
    for (name, pw, groups) in USERS {
        users.insert(
            name.to_string(),
            json!({ "password_hash": bcrypt_hash(pw), "groups": groups }),
        );
    }
    set_path(&mut config, "authn.static.users", Value::Object(users));
    set_path(&mut config, "log.format", json!("json"));
    config
}

fn password_of(account: &str) -> &'static str {
    USERS.iter().find(|u| u.0 == account).expect("user").1
}

fn groups_of(account: &str) -> &'static [&'static str] {
    USERS.iter().find(|u| u.0 == account).map_or(&[], |u| u.2)
}

/// The scopes of an audit record (a JSON text or a JSON array).
fn audit_scopes(record: &Value) -> Vec<Value> {
    match &record["scopes"] {
        Value::String(s) => serde_json::from_str(s).expect("scopes field is JSON"),
        Value::Array(a) => a.clone(),
        other => panic!("audit record without scopes: {other}"),
    }
}

/// Runs `purser policy explain` for the caller and scopes, as the server would see them.
fn explain(config: &Path, account: &str, scopes: &[&str]) -> Vec<ExplainLine> {
    let config = config.display().to_string();
    let mut args = vec![
        "policy",
        "explain",
        "--config",
        &config,
        "--account",
        account,
        "--ip",
        "127.0.0.1",
    ];
    for g in groups_of(account) {
        args.extend(["--group", g]);
    }
    args.extend(scopes);
    let out = run_purser(&args, "");
    assert!(
        out.status.success(),
        "purser policy explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = parse_explain(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines.len(), scopes.len(), "one explain line per scope");
    lines
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Kind {
    Granted,
    Partial,
    Denied,
    Unmatched,
}

#[test]
fn explain_names_the_deciding_rule_and_agrees_with_the_server_on_a_table_of_cases() {
    let p = Purser::start(config(), &[("policy.yaml", EXAMPLES)]);
    let config_file = p.dir().join("purser.yaml");
    let mut kinds = BTreeSet::new();
    let mut compared = 0;
    for (who, scopes) in table() {
        let account = who.unwrap_or("");
        let before = p.audit_records().len();
        let creds = who.map(|a| (a, password_of(a)));
        let server = grants(&p, creds, &scopes, &[]);
        wait_until(
            Duration::from_secs(10),
            "the audit record of the request",
            || p.audit_records().len() > before,
            || p.log_tail(),
        );
        let record = p.audit_records().pop().expect("audit record");
        assert_eq!(record["account"], account, "audit account");
        let audited = audit_scopes(&record);
        assert_eq!(
            audited.len(),
            scopes.len(),
            "one audit entry per scope: {record}"
        );

        let lines = explain(&config_file, account, &scopes);
        for ((scope, line), audit) in scopes.iter().zip(&lines).zip(&audited) {
            let case = format!("{account:?} asking {scope}");
            assert_eq!(line.scope, *scope, "{case}: explain line order");
            let from_token = server.get(&resource_of(scope)).cloned().unwrap_or_default();
            assert_eq!(
                line.granted, from_token,
                "{case}: explain says {:?} ({}), the server granted {from_token:?}",
                line.granted, line.reason
            );
            let audit_rule = audit["rule"].as_object().map(|r| {
                (
                    r["index"].as_u64().expect("index"),
                    r["name"].as_str().expect("name").to_string(),
                )
            });
            assert_eq!(
                line.rule, audit_rule,
                "{case}: explain names {:?}, the server's audit record {audit_rule:?}",
                line.rule
            );
            let requested: Vec<&str> = scope.rsplit_once(':').unwrap().1.split(',').collect();
            let kind = match (&line.rule, line.granted.len()) {
                (None, _) => Kind::Unmatched,
                (Some(_), 0) => Kind::Denied,
                (Some(_), n) if n == requested.len() => Kind::Granted,
                (Some(_), _) => Kind::Partial,
            };
            match kind {
                Kind::Unmatched => assert_eq!(line.reason, "no rule matched", "{case}"),
                Kind::Partial => assert!(
                    line.reason.contains(": allows only "),
                    "{case}: {}",
                    line.reason
                ),
                _ => {}
            }
            kinds.insert(kind);
            compared += 1;
        }
    }
    assert_eq!(
        kinds,
        BTreeSet::from([Kind::Granted, Kind::Partial, Kind::Denied, Kind::Unmatched]),
        "the table covers every kind of decision"
    );
    assert!(compared >= 20, "compared {compared} scopes");

    // Spot checks of the rule each kind names.
    let lines = explain(&config_file, "mallory", &["repository:mallory/app:pull"]);
    assert_eq!(
        lines[0].reason,
        r#"rule 0 "blocked accounts": explicit deny"#
    );
    let lines = explain(
        &config_file,
        "alice",
        &[
            "repository:team-web/site:pull,push,delete",
            "repository:alice/app:push",
        ],
    );
    assert_eq!(
        lines[0].reason,
        r#"rule 6 "team namespaces": allows only pull,push"#
    );
    assert_eq!(lines[1].reason, r#"rule 5 "own namespace""#);
}

/// A folder with a config whose policy is `policy` (as `policy.yaml`).
fn offline_config(policy: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.yaml"), policy).expect("write policy");
    let cfg = dir.path().join("purser.yaml");
    std::fs::write(
        &cfg,
        format!(
            "token:\n  service: [\"{SERVICE}\"]\n  generate_key: true\n  signing_key_file: keys/signing.pem\nauthn:\n  order: [static]\n  static:\n    users: {{}}\nauthz:\n  policy_file: policy.yaml\n"
        ),
    )
    .expect("write config");
    (dir, cfg)
}

fn purser_out(args: &[&str]) -> (i32, String, String) {
    let out = run_purser(args, "");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn policy_test_exits_0_on_passing_cases_and_1_with_a_readable_diff_on_failing_ones() {
    let (_dir, cfg) = offline_config(EXAMPLES);
    let cfg = cfg.display().to_string();

    let (code, stdout, stderr) = purser_out(&["policy", "test", "--config", &cfg, EXAMPLES_CASES]);
    assert_eq!(code, 0, "passing cases: {stdout}{stderr}");
    let cases = std::fs::read_to_string(EXAMPLES_CASES).unwrap();
    let n = cases
        .lines()
        .filter(|l| l.trim_start().starts_with("- {"))
        .count();
    assert!(
        stdout.contains(&format!("{n} passed, 0 failed")),
        "summary of {n} cases: {stdout}"
    );

    let (code, stdout, stderr) = purser_out(&["policy", "test", "--config", &cfg, FAILING_CASES]);
    assert_eq!(code, 1, "failing cases: {stdout}{stderr}");
    let want = [
        format!(
            r#"{FAILING_CASES}:6: case 1: account "alice", groups [team-web], scope repository:team-web/site:pull,push,delete: expected [pull, push, delete], got [pull, push] (rule 6 "team namespaces")"#
        ),
        format!(
            r#"{FAILING_CASES}:8: case 2: account "" (anonymous), scope repository:public/base:pull,push: expected [pull, push], got [pull] (rule 7 "public read")"#
        ),
        format!(
            r#"{FAILING_CASES}:10: case 3: account "mallory", scope repository:mallory/app:pull: expected [pull], got [] (rule 0 "blocked accounts": explicit deny)"#
        ),
        format!(
            r#"{FAILING_CASES}:12: case 4: account "alice", scope repository:secret/db:pull: expected [pull], got [] (no rule matched)"#
        ),
        "1 passed, 4 failed".to_string(),
    ];
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, want, "the failures, one line each, then the summary");

    // A case file that cannot be read, or does not parse, is a failure of the command, said
    // with its file (and line).
    let (code, _, stderr) = purser_out(&["policy", "test", "--config", &cfg, "no-such-cases.yaml"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no-such-cases.yaml"), "{stderr}");
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "cases:\n  - { acount: alice, scope: \"repository:a/b:pull\", expect: [pull] }\n",
    )
    .unwrap();
    let bad_path = bad.path().display().to_string();
    let (code, stdout, stderr) = purser_out(&["policy", "test", "--config", &cfg, &bad_path]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{bad_path}:2: unknown case field \"acount\" (did you mean \"account\"?)"
        )),
        "{stderr}"
    );
}

#[test]
fn policy_tools_and_check_config_report_a_broken_policy_with_file_line_and_field() {
    let broken = "rules:\n  - name: ok\n    match: { name: \"a/**\" }\n    actions: [pull]\n  - name: typo\n    match: { acount: alice }\n    actions: [pull]\n";
    let (dir, cfg) = offline_config(broken);
    let cfg = cfg.display().to_string();
    let policy = dir.path().join("policy.yaml").display().to_string();
    let want = format!(r#"{policy}:6: unknown match field "acount" (did you mean "account"?)"#);

    let (code, stdout, stderr) = purser_out(&["check-config", "--config", &cfg]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("authz.policy_file: {want}")),
        "check-config names the key, file, line and field:\n{stderr}"
    );
    let (code, _, stderr) = purser_out(&[
        "policy",
        "explain",
        "--config",
        &cfg,
        "--account",
        "alice",
        "repository:a/b:pull",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&want), "{stderr}");
    let (code, _, stderr) = purser_out(&["policy", "test", "--config", &cfg, EXAMPLES_CASES]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&want), "{stderr}");

    // The same config with the typo fixed checks clean.
    std::fs::write(
        dir.path().join("policy.yaml"),
        broken.replace("acount", "account"),
    )
    .unwrap();
    let (code, stdout, stderr) = purser_out(&["check-config", "--config", &cfg]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// The fenced YAML blocks of a Markdown text, in order.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.push(current.take().expect("block"));
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    blocks
}

fn first_key(block: &str) -> &str {
    block
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or("")
}

#[test]
fn every_worked_example_in_docs_policy_md_passes_its_cases() {
    let doc = std::fs::read_to_string("docs/policy.md").expect("docs/policy.md");
    let blocks = yaml_blocks(&doc);
    let mut pairs = 0;
    let mut i = 0;
    while i < blocks.len() {
        if first_key(&blocks[i]).starts_with("rules:")
            && blocks
                .get(i + 1)
                .is_some_and(|b| first_key(b).starts_with("cases:"))
        {
            let (dir, cfg) = offline_config(&blocks[i]);
            let cases = dir.path().join("cases.yaml");
            std::fs::write(&cases, &blocks[i + 1]).unwrap();
            let (code, stdout, stderr) = purser_out(&[
                "policy",
                "test",
                "--config",
                &cfg.display().to_string(),
                &cases.display().to_string(),
            ]);
            assert_eq!(
                code,
                0,
                "docs/policy.md example {} fails its cases:\n{}\n{stdout}{stderr}",
                pairs + 1,
                blocks[i]
            );
            assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
            pairs += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    assert!(
        pairs >= 6,
        "docs/policy.md should hold a tested example for each of the six patterns, found {pairs}"
    );
    // The complete policy shown in the docs is the fixture the other tests run.
    assert!(
        blocks.iter().any(|b| b == EXAMPLES),
        "docs/policy.md should show tests/fixtures/policy/examples.yaml verbatim"
    );
    for field in ["account", "groups", "type", "name", "service", "ip"] {
        assert!(
            doc.contains(&format!("`{field}`")),
            "docs/policy.md should document the match field `{field}`"
        );
    }
}

/// A deny rule written with an IPv4-mapped range, and an allow rule with an IPv6 range that
/// holds the mapped space, decide alike for the server, `policy explain --ip`, `policy test`
/// and `check-config`, whichever spelling the client address has.
const MAPPED_POLICY: &str = r#"rules:
  - name: no loopback pushes
    match: { name: "office/**", ip: ["::ffff:127.0.0.0/104"] }
    actions: []
  - name: every IPv6 client
    match: { name: "v6/**", ip: ["::/0"] }
    actions: [pull, push]
  - name: everyone reads
    match: { account: "*" }
    actions: [pull]
"#;

#[test]
fn ipv4_mapped_ranges_decide_alike_in_the_server_explain_and_policy_test() {
    let office = "repository:office/app:pull,push";
    let v6 = "repository:v6/app:pull,push";
    let p = Purser::start(config(), &[("policy.yaml", MAPPED_POLICY)]);
    // The server: the client is 127.0.0.1 (IPv4), the rules are written in IPv6.
    let access = grants(&p, Some(("alice", "alice-secret")), &[office, v6], &[]);
    let got = |r: &str| access.get(r).cloned().unwrap_or_default();
    assert_eq!(
        got("repository:office/app"),
        Vec::<String>::new(),
        "the mapped deny range holds 127.0.0.1"
    );
    assert_eq!(
        got("repository:v6/app"),
        ["pull", "push"],
        "::/0 holds 127.0.0.1"
    );

    let cfg = p.dir().join("purser.yaml").display().to_string();
    for ip in ["127.0.0.1", "::ffff:127.0.0.1"] {
        let (code, stdout, stderr) = purser_out(&[
            "policy",
            "explain",
            "--config",
            &cfg,
            "--account",
            "alice",
            "--ip",
            ip,
            office,
            v6,
        ]);
        assert_eq!(code, 0, "{stderr}");
        let lines = parse_explain(&stdout);
        assert_eq!(
            lines[0].granted,
            Vec::<String>::new(),
            "explain --ip {ip}: {stdout}"
        );
        assert_eq!(
            lines[0].rule,
            Some((0, "no loopback pushes".into())),
            "{stdout}"
        );
        assert_eq!(
            lines[1].granted,
            ["pull", "push"],
            "explain --ip {ip}: {stdout}"
        );
    }
    let (code, stdout, _) = purser_out(&[
        "policy",
        "explain",
        "--config",
        &cfg,
        "--account",
        "alice",
        "--ip",
        "10.1.2.3",
        office,
    ]);
    assert_eq!(code, 0);
    assert_eq!(parse_explain(&stdout)[0].granted, ["pull"], "{stdout}");

    let cases = p.dir().join("mapped-cases.yaml");
    std::fs::write(
        &cases,
        format!(
            "cases:\n  - {{ account: alice, ip: 127.0.0.1, scope: \"{office}\", expect: [] }}\n  - {{ account: alice, ip: \"::ffff:127.0.0.1\", scope: \"{office}\", expect: [] }}\n  - {{ account: alice, ip: 10.1.2.3, scope: \"{office}\", expect: [pull] }}\n  - {{ account: alice, ip: 10.1.2.3, scope: \"{v6}\", expect: [pull, push] }}\n"
        ),
    )
    .unwrap();
    let cases = cases.display().to_string();
    let (code, stdout, stderr) = purser_out(&["policy", "test", "--config", &cfg, &cases]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");

    let (code, _, stderr) = purser_out(&["check-config", "--config", &cfg]);
    assert_eq!(code, 0, "{stderr}");
}
