//! The policy and case-file readers answer every input with a policy or errors, never a panic.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use proptest::prelude::*;
use purser_authz::{CaseFile, Policy};

/// YAML-ish fragments, so that inputs get past the syntax check often.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("rules:\n".to_string()),
        Just("  - ".to_string()),
        Just("name: ".to_string()),
        Just("match: ".to_string()),
        Just("{ account: \"*\", name: \"${account}/**\" }".to_string()),
        Just("actions: [pull, \"*\"]".to_string()),
        Just("ip: [10.0.0.0/8]".to_string()),
        Just("groups: [a]".to_string()),
        Just("\n    ".to_string()),
        Just("\n".to_string()),
        "[a-z/*?${}\\[\\]:,\" -]{0,12}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn policy_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = Policy::parse(&text, "p.yaml");
        let _ = CaseFile::parse(&text, "c.yaml");
    }

    #[test]
    fn policy_parser_never_panics_on_yaml_like_text(text in yamlish()) {
        match Policy::parse(&text, "p.yaml") {
            Ok(p) => { let _ = p.rule_count(); }
            Err(e) => prop_assert!(!e.is_empty() && e.to_string().starts_with("p.yaml")),
        }
        let _ = CaseFile::parse(&text, "c.yaml");
    }
}
