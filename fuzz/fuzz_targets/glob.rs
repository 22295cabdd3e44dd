//! The glob matcher, reached through the policy: input lines are an account pattern, a name
//! pattern, an account and a repository name. Compiling and matching never panic, and the indexed
//! decision equals the plain scan of the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purser_authz::Policy;
use purser_core::{Identity, RequestContext, ResourceScope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let (Some(account_pat), Some(name_pat), Some(account), Some(name)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return;
    };
    // JSON strings are YAML double-quoted scalars, so any pattern text reaches the matcher.
    let quote = |s: &str| serde_json::to_string(s).unwrap();
    let policy_text = format!(
        "rules:\n  - name: fuzzed\n    match: {{ account: {}, name: {} }}\n    actions: [pull]\n  - name: literal\n    match: {{ name: {} }}\n    actions: [push]\n",
        quote(account_pat),
        quote(name_pat),
        quote(name),
    );
    let Ok(policy) = Policy::parse(&policy_text, "fuzz.yaml") else {
        return;
    };
    let Ok(scope) = format!("repository:{name}:pull,push").parse::<ResourceScope>() else {
        return;
    };
    let who = Identity::new(account, vec!["dev".to_owned()]);
    let ctx = RequestContext {
        service: "registry".to_owned(),
        client_ip: None,
    };
    let grant = policy.authorize(&who, &ctx, &scope);
    assert_eq!(grant, policy.authorize_linear(&who, &ctx, &scope));
});
