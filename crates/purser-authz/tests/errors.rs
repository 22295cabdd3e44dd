//! Every problem of a policy file is reported at once, each naming `file:line` and the field.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_authz::{Policy, PolicyError, MAX_ERRORS};

fn errors(text: &str) -> Vec<String> {
    match Policy::parse(text, "policy.yaml") {
        Ok(_) => panic!("policy should be refused:\n{text}"),
        Err(e) => {
            let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
            assert_eq!(lines.len(), e.len(), "one line per problem");
            lines
        }
    }
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected exactly one problem, got {e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn unknown_match_field_names_line_and_suggestion() {
    let text = "rules:\n  - name: a\n    match:\n      acount: alice\n    actions: [pull]\n";
    assert_eq!(
        one_error(text),
        "policy.yaml:4: unknown match field \"acount\" (did you mean \"account\"?)"
    );
}

#[test]
fn unknown_field_in_flow_style_and_rule_level() {
    let text = "rules:\n  - { name: a, actions: [pull] }\n  - { name: b, match: { grups: [x] }, action: [pull] }\n";
    let e = errors(text);
    assert!(
        e.contains(
            &"policy.yaml:3: unknown rule field \"action\" (did you mean \"actions\"?)".to_string()
        ),
        "{e:#?}"
    );
    assert!(
        e.contains(
            &"policy.yaml:3: unknown match field \"grups\" (did you mean \"groups\"?)".to_string()
        ),
        "{e:#?}"
    );
    // `action` is unknown, so `actions` is missing too.
    assert!(
        e.iter().any(
            |l| l.starts_with("policy.yaml:3: rule 1 (\"b\") is missing the field \"actions\"")
        ),
        "{e:#?}"
    );
}

#[test]
fn far_off_keys_list_the_known_ones() {
    let e = one_error("version: 2\nrules: []\n");
    assert_eq!(
        e,
        "policy.yaml:1: unknown top-level field \"version\" (expected one of: rules)"
    );
}

#[test]
fn bad_regex_names_line_and_field() {
    let text = "rules:\n  - name: a\n    match: { name: \"/team/[a-/\" }\n    actions: [pull]\n";
    let e = one_error(text);
    assert!(
        e.starts_with("policy.yaml:3: match.name: invalid regex:"),
        "{e}"
    );
}

#[test]
fn bad_cidr_names_the_list_item_line() {
    let text = "rules:\n  - name: office\n    match:\n      ip:\n        - 10.0.0.0/8\n        - 10.0.0.0/33\n    actions: [pull]\n";
    let e = one_error(text);
    assert!(
        e.starts_with("policy.yaml:6: match.ip: \"10.0.0.0/33\" is not a CIDR"),
        "{e}"
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let text = "rules:\n  - name: a\n    match: { name: \"x\"\n    actions: [pull]\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].starts_with("policy.yaml:"), "{}", e[0]);
    assert!(e[0].contains("YAML syntax error"), "{}", e[0]);
    let err = Policy::parse(text, "policy.yaml").unwrap_err();
    let line = err.iter().next().unwrap().line().unwrap();
    assert!((3..=5).contains(&line), "line {line}");
}

#[test]
fn unquoted_star_gets_a_hint() {
    let text = "rules:\n  - match: { account: * }\n    actions: [pull]\n";
    let e = one_error(text);
    assert!(e.starts_with("policy.yaml:2: YAML syntax error"), "{e}");
    assert!(e.contains("write \"*\" in quotes"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"rules:
  - name: one
    match: { acount: x }
    actions: [pull]
  - name: two
    match: { name: "/(/" }
    actions: [pull]
  - name: three
    match: { ip: [nonsense] }
    actions: [Pull]
  - name: four
    match: { type: repository, name: "a/***" }
    actions: [pull]
  - name: five
    match: { groups: admins }
  - "not a rule"
  - name: seven
    match: { service: "${account}" }
    actions: [pull]
"#;
    let e = errors(text);
    let lines: Vec<&str> = e.iter().map(|l| l.split(": ").next().unwrap()).collect();
    assert_eq!(
        lines,
        vec![
            "policy.yaml:3",  // acount
            "policy.yaml:6",  // bad regex
            "policy.yaml:9",  // bad ip
            "policy.yaml:10", // Pull
            "policy.yaml:12", // ***
            "policy.yaml:14", // missing actions (rule line)
            "policy.yaml:15", // groups not a list
            "policy.yaml:16", // not a mapping
            "policy.yaml:18", // placeholder outside name
        ],
        "{e:#?}"
    );
    assert!(e[3].contains("\"Pull\" is not an action"), "{}", e[3]);
    assert!(e[6].contains("match.groups: expected a list"), "{}", e[6]);
    assert!(e[8].contains("only allowed in `name`"), "{}", e[8]);
}

#[test]
fn values_of_the_wrong_type() {
    let e = errors("rules:\n  - name: 5\n    match: { name: 7 }\n    actions: pull\n");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!(
        e[0],
        "policy.yaml:2: name: expected a string, found a number: put it in quotes"
    );
    assert!(
        e[1].starts_with("policy.yaml:3: match.name: expected a string"),
        "{}",
        e[1]
    );
    assert!(
        e[2].starts_with("policy.yaml:4: actions: expected a list"),
        "{}",
        e[2]
    );
    let e = one_error("- a\n- b\n");
    assert!(
        e.starts_with("policy.yaml:1: policy: expected a mapping with a `rules` list"),
        "{e}"
    );
    let e = one_error("rules: {}\n");
    assert!(
        e.starts_with("policy.yaml:1: rules: expected a list of rules"),
        "{e}"
    );
}

#[test]
fn empty_lists_and_patterns_that_match_nothing_are_refused() {
    let e = errors("rules:\n  - match: { groups: [], ip: [], name: \"\" }\n    actions: [pull]\n");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e.iter().all(|l| l.starts_with("policy.yaml:2: match.")),
        "{e:#?}"
    );
}

#[test]
fn error_reporting_is_bounded() {
    let mut text = String::from("rules:\n");
    for _ in 0..(MAX_ERRORS + 20) {
        text.push_str("  - { match: { nme: x }, actions: [pull] }\n");
    }
    let err = Policy::parse(&text, "policy.yaml").unwrap_err();
    assert_eq!(err.len(), MAX_ERRORS + 1);
    assert!(matches!(
        err.iter().last().unwrap(),
        PolicyError::TooMany { count: 20, .. }
    ));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err =
        Policy::from_file(std::path::Path::new("/nonexistent/purser/policy.yaml")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/purser/policy.yaml: cannot read the file"),
        "{text}"
    );
}

/// The policy goes through the shared bounded reader: a directory (or a FIFO, a device) is
/// refused at once with the file named, and so is a file over the bound.
#[test]
fn non_regular_and_oversized_files_are_refused_naming_them() {
    let dir = std::env::temp_dir();
    let err = Policy::from_file(&dir).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: not a regular file (a directory)",
            dir.display()
        )),
        "{err}"
    );
    let err = Policy::from_file(std::path::Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/dev/zero: not a regular file (a character device)"),
        "{err}"
    );
    let file =
        std::env::temp_dir().join(format!("purser-policy-bound-{}.yaml", std::process::id()));
    std::fs::File::create(&file)
        .unwrap()
        .set_len(purser_authz::MAX_POLICY_BYTES as u64 + 1)
        .unwrap();
    let err = Policy::from_file(&file).unwrap_err().to_string();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        err,
        format!(
            "{}: the file is larger than {} bytes",
            file.display(),
            purser_authz::MAX_POLICY_BYTES
        )
    );
}

#[test]
fn a_full_report_reads_well() {
    let text =
        "rules:\n  - name: one\n    match: { acount: x, name: \"/(/\" }\n    actions: [Pull]\n";
    assert_eq!(
        errors(text),
        vec![
            "policy.yaml:3: unknown match field \"acount\" (did you mean \"account\"?)",
            "policy.yaml:3: match.name: invalid regex: unclosed group",
            "policy.yaml:4: actions: \"Pull\" is not an action: write lowercase words like pull, push, delete, or \"*\"",
        ]
    );
}
