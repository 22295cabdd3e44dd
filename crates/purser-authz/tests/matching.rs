//! The decision, rule by rule, against the interface's example policy and focused policies.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::net::IpAddr;
use std::sync::Arc;

use purser_authz::{render_explanation, Policy, PolicyAuthorizer, Verdict};
use purser_core::{Authorizer, Grant, Identity, Reloadable, RequestContext, ResourceScope};

const SPEC_POLICY: &str = r#"
rules:                                   # first match wins
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]                       # "*": every requested action
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push, delete]
  - name: team repos
    match: { groups: [developers], type: repository, name: "team/**" }
    actions: [pull, push]
  - name: nothing for contractors
    match: { groups: [contractors] }
    actions: []                          # explicit deny: stop here, grant nothing
  - name: public read, anonymous too
    match: { name: "public/**" }
    actions: [pull]
"#;

fn policy(text: &str) -> Policy {
    Policy::parse(text, "policy.yaml").unwrap_or_else(|e| panic!("policy should parse:\n{e}"))
}

fn user(account: &str, groups: &[&str]) -> Identity {
    Identity::new(account, groups.iter().map(|g| g.to_string()).collect())
}

fn scope(s: &str) -> ResourceScope {
    s.parse().unwrap()
}

fn ctx() -> RequestContext {
    RequestContext {
        service: "registry.local".into(),
        client_ip: None,
    }
}

fn ctx_ip(ip: &str) -> RequestContext {
    RequestContext {
        service: "registry.local".into(),
        client_ip: Some(ip.parse::<IpAddr>().unwrap()),
    }
}

/// (granted actions, deciding rule index)
fn decide(p: &Policy, who: &Identity, c: &RequestContext, s: &str) -> (Vec<String>, Option<usize>) {
    let g = p.authorize(who, c, &scope(s));
    let linear = p.authorize_linear(who, c, &scope(s));
    assert_eq!(g, linear, "index and linear scan disagree on {s}");
    (g.actions, g.rule.map(|r| r.index))
}

fn acts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn spec_admins_get_everything_requested() {
    let p = policy(SPEC_POLICY);
    let root = user("root", &["admins"]);
    assert_eq!(
        decide(&p, &root, &ctx(), "repository:any/thing:pull,push,delete"),
        (acts(&["pull", "push", "delete"]), Some(0))
    );
    assert_eq!(
        decide(&p, &root, &ctx(), "registry:catalog:*"),
        (acts(&["*"]), Some(0))
    );
}

#[test]
fn spec_own_namespace() {
    let p = policy(SPEC_POLICY);
    let alice = user("alice", &[]);
    assert_eq!(
        decide(&p, &alice, &ctx(), "repository:alice/app:pull,push,delete"),
        (acts(&["pull", "push", "delete"]), Some(1))
    );
    assert_eq!(
        decide(&p, &alice, &ctx(), "repository:alice/deep/er/app:push"),
        (acts(&["push"]), Some(1))
    );
    // Someone else's namespace, and a name that only starts like hers.
    assert_eq!(
        decide(&p, &alice, &ctx(), "repository:bob/app:pull"),
        (vec![], None)
    );
    assert_eq!(
        decide(&p, &alice, &ctx(), "repository:alicex/app:pull"),
        (vec![], None)
    );
    // "*" in actions of the request is not granted by a rule without "*".
    assert_eq!(
        decide(&p, &alice, &ctx(), "repository:alice/app:*"),
        (vec![], Some(1))
    );
}

#[test]
fn spec_team_repos_need_the_group_and_the_type() {
    let p = policy(SPEC_POLICY);
    let dev = user("dana", &["developers"]);
    assert_eq!(
        decide(&p, &dev, &ctx(), "repository:team/app:pull,push,delete"),
        (acts(&["pull", "push"]), Some(2))
    );
    assert_eq!(
        decide(
            &p,
            &user("erin", &["designers"]),
            &ctx(),
            "repository:team/app:pull"
        ),
        (vec![], None)
    );
    // Another resource type under the same name.
    assert_eq!(
        decide(&p, &dev, &ctx(), "registry:team/app:pull"),
        (vec![], None)
    );
}

#[test]
fn spec_contractors_are_denied_even_public_read() {
    let p = policy(SPEC_POLICY);
    let c = user("carl", &["contractors"]);
    assert_eq!(
        decide(&p, &c, &ctx(), "repository:public/base:pull"),
        (vec![], Some(3))
    );
    // ... but their own namespace comes first.
    assert_eq!(
        decide(&p, &c, &ctx(), "repository:carl/x:pull"),
        (acts(&["pull"]), Some(1))
    );
}

#[test]
fn spec_public_read_for_everyone_including_anonymous() {
    let p = policy(SPEC_POLICY);
    let anon = Identity::anonymous();
    assert_eq!(
        decide(&p, &anon, &ctx(), "repository:public/base:pull,push"),
        (acts(&["pull"]), Some(4))
    );
    assert_eq!(
        decide(&p, &anon, &ctx(), "repository:secret/app:pull"),
        (vec![], None)
    );
    // `${account}` never matches the anonymous caller, even for a name starting with "/"-less "".
    assert_eq!(
        decide(&p, &anon, &ctx(), "repository:x/app:pull"),
        (vec![], None)
    );
}

#[test]
fn glob_star_double_star_and_question_mark() {
    let p = policy(
        r#"
rules:
  - { name: one, match: { name: "one/*" }, actions: [pull] }
  - { name: deep, match: { name: "deep/**" }, actions: [pull] }
  - { name: q, match: { name: "q/app?" }, actions: [pull] }
  - { name: mid, match: { name: "m/**/leaf" }, actions: [pull] }
"#,
    );
    let a = user("a", &[]);
    let who = |s| decide(&p, &a, &ctx(), s).1;
    assert_eq!(who("repository:one/app:pull"), Some(0));
    assert_eq!(who("repository:one/app/sub:pull"), None);
    assert_eq!(who("repository:deep/app/sub/x:pull"), Some(1));
    assert_eq!(who("repository:q/app1:pull"), Some(2));
    assert_eq!(who("repository:q/app12:pull"), None);
    assert_eq!(who("repository:q/app:pull"), None);
    assert_eq!(who("repository:m/leaf:pull"), Some(3));
    assert_eq!(who("repository:m/a/b/leaf:pull"), Some(3));
    assert_eq!(who("repository:m/a/b/leafy:pull"), None);
}

#[test]
fn regex_is_matched_against_the_whole_value() {
    let p = policy(
        r#"
rules:
  - { match: { name: "/team-[0-9]+/app/" }, actions: [pull] }
  - { match: { account: "/ci-.*/" }, actions: [push] }
"#,
    );
    let a = user("a", &[]);
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:team-42/app:pull").1,
        Some(0)
    );
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:x/team-42/app:pull").1,
        None
    );
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:team-42/app2:pull").1,
        None
    );
    let ci = user("ci-bot", &[]);
    assert_eq!(
        decide(&p, &ci, &ctx(), "repository:z:push").0,
        acts(&["push"])
    );
    assert_eq!(
        decide(&p, &user("my-ci-bot", &[]), &ctx(), "repository:z:push").1,
        None
    );
}

#[test]
fn placeholders_are_matched_literally() {
    let p = policy(
        r#"
rules:
  - { name: mine, match: { name: "${account}/**" }, actions: [pull, push] }
  - { name: team, match: { name: "teams/${group}/*" }, actions: [pull] }
"#,
    );
    // A dot in the account is not a regex wildcard.
    let dotted = user("a.b", &[]);
    assert_eq!(
        decide(&p, &dotted, &ctx(), "repository:a.b/x:push").1,
        Some(0)
    );
    assert_eq!(decide(&p, &dotted, &ctx(), "repository:aXb/x:push").1, None);
    // A star in the account is not a glob.
    let star = user("a*", &[]);
    assert_eq!(decide(&p, &star, &ctx(), "repository:abc/x:pull").1, None);
    // Any one of the caller's groups fills ${group}.
    let g = user("u", &["red", "blue"]);
    assert_eq!(
        decide(&p, &g, &ctx(), "repository:teams/blue/app:pull").1,
        Some(1)
    );
    assert_eq!(
        decide(&p, &g, &ctx(), "repository:teams/green/app:pull").1,
        None
    );
    // A group holding a glob character is literal too.
    let wild = user("u", &["*"]);
    assert_eq!(
        decide(&p, &wild, &ctx(), "repository:teams/blue/app:pull").1,
        None
    );
    // Anonymous never matches ${account}.
    assert_eq!(
        decide(&p, &Identity::anonymous(), &ctx(), "repository:x:pull").1,
        None
    );
}

#[test]
fn anonymous_account_matching() {
    let p = policy(
        r#"
rules:
  - { name: anon, match: { account: "" }, actions: [pull] }
  - { name: named, match: { account: "*" }, actions: [pull, push] }
"#,
    );
    assert_eq!(
        decide(&p, &Identity::anonymous(), &ctx(), "repository:x:pull,push"),
        (acts(&["pull"]), Some(0))
    );
    assert_eq!(
        decide(&p, &user("bob", &[]), &ctx(), "repository:x:pull,push"),
        (acts(&["pull", "push"]), Some(1))
    );
    // A glob other than "" never matches anonymous, even one that could match the empty string.
    let q = policy("rules:\n  - { match: { account: \"**\" }, actions: [pull] }\n");
    assert_eq!(
        decide(&q, &Identity::anonymous(), &ctx(), "repository:x:pull").1,
        None
    );
    assert_eq!(
        decide(&q, &user("b", &[]), &ctx(), "repository:x:pull").1,
        Some(0)
    );
}

#[test]
fn first_match_wins_and_explicit_deny_stops() {
    let p = policy(
        r#"
rules:
  - { name: narrow, match: { name: "app" }, actions: [pull] }
  - { name: deny, match: { name: "blocked" }, actions: [] }
  - { name: broad, match: {}, actions: ["*"] }
"#,
    );
    let a = user("a", &[]);
    // The broad rule would grant push, but the narrow one comes first.
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:app:pull,push"),
        (acts(&["pull"]), Some(0))
    );
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:blocked:pull"),
        (vec![], Some(1))
    );
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:other:pull,push"),
        (acts(&["pull", "push"]), Some(2))
    );
}

#[test]
fn star_action_both_ways() {
    let p = policy(
        r#"
rules:
  - { match: { name: "all" }, actions: ["*"] }
  - { match: { name: "some" }, actions: [pull, delete] }
"#,
    );
    let a = user("a", &[]);
    // "*" in the rule grants every requested action, including a requested "*".
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:all:push,pull").0,
        acts(&["push", "pull"])
    );
    assert_eq!(decide(&p, &a, &ctx(), "repository:all:*").0, acts(&["*"]));
    // A requested "*" (catalog, skopeo delete) needs "*" in the rule.
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:some:*").0,
        Vec::<String>::new()
    );
    // Granted actions keep the requested order and never exceed the request.
    assert_eq!(
        decide(&p, &a, &ctx(), "repository:some:delete,push,pull").0,
        acts(&["delete", "pull"])
    );
}

#[test]
fn ip_cidrs() {
    let p = policy(
        r#"
rules:
  - { name: office, match: { ip: ["10.0.0.0/8", "fd00::/8", "192.0.2.7"] }, actions: [push] }
"#,
    );
    let a = user("a", &[]);
    let s = "repository:x:push";
    assert_eq!(decide(&p, &a, &ctx_ip("10.1.2.3"), s).1, Some(0));
    assert_eq!(decide(&p, &a, &ctx_ip("::ffff:10.1.2.3"), s).1, Some(0));
    assert_eq!(decide(&p, &a, &ctx_ip("fd12::1"), s).1, Some(0));
    assert_eq!(decide(&p, &a, &ctx_ip("192.0.2.7"), s).1, Some(0));
    assert_eq!(decide(&p, &a, &ctx_ip("192.0.2.8"), s).1, None);
    assert_eq!(decide(&p, &a, &ctx_ip("11.0.0.1"), s).1, None);
    // No client address: an ip rule never matches.
    assert_eq!(decide(&p, &a, &ctx(), s).1, None);
}

#[test]
fn ipv4_mapped_ranges_match_either_spelling_of_the_client() {
    // The same deny rule written three ways; each must stop 10.1.2.3 however it arrives.
    for range in [
        "10.0.0.0/8",
        "::ffff:10.0.0.0/104",
        "::ffff:a00:0/104",
        "::ffff:10.1.2.3/104",
    ] {
        let p = policy(&format!(
            r#"
rules:
  - {{ name: no lab, match: {{ ip: ["{range}"] }}, actions: [] }}
  - {{ name: everyone, actions: [pull] }}
"#
        ));
        let a = user("a", &[]);
        let s = "repository:x:pull";
        for client in ["10.1.2.3", "::ffff:10.1.2.3"] {
            assert_eq!(
                decide(&p, &a, &ctx_ip(client), s),
                (vec![], Some(0)),
                "{range} denies {client}"
            );
        }
        for client in ["11.1.2.3", "::ffff:11.1.2.3", "fd00::1"] {
            assert_eq!(
                decide(&p, &a, &ctx_ip(client), s),
                (vec!["pull".to_string()], Some(1)),
                "{range} lets {client} through"
            );
        }
    }
}

#[test]
fn ipv6_ranges_around_the_mapped_space_hold_ipv4_clients() {
    let p = policy(
        r#"
rules:
  - { name: v6 wide, match: { ip: ["::ffff:0:0/95"] }, actions: [push] }
  - { name: v6 all, match: { ip: ["::/0"] }, actions: [pull] }
"#,
    );
    let a = user("a", &[]);
    let s = "repository:x:pull,push";
    for client in ["10.1.2.3", "::ffff:10.1.2.3"] {
        assert_eq!(decide(&p, &a, &ctx_ip(client), s).1, Some(0), "{client}");
    }
    assert_eq!(decide(&p, &a, &ctx_ip("fd00::1"), s).1, Some(1));
}

#[test]
fn an_unknown_client_address_matches_no_ip_rule_deny_rules_included() {
    let p = policy(
        r#"
rules:
  - { name: blocked, match: { ip: ["0.0.0.0/0", "::/0"] }, actions: [] }
  - { name: office, match: { ip: ["127.0.0.0/8"] }, actions: [pull, push] }
  - { name: everyone, actions: [pull] }
"#,
    );
    let a = user("a", &[]);
    let s = "repository:x:pull,push";
    // client_ip None is what the server passes for a proxy's entry that is not an address.
    assert_eq!(
        decide(&p, &a, &ctx(), s),
        (vec!["pull".to_string()], Some(2))
    );
    assert_eq!(decide(&p, &a, &ctx_ip("127.0.0.1"), s).1, Some(0));
}

#[test]
fn service_and_type() {
    let p = policy(
        r#"
rules:
  - { match: { service: "staging.*", type: registry }, actions: ["*"] }
  - { match: { service: "registry.local", type: "repo*" }, actions: [pull] }
"#,
    );
    let a = user("a", &[]);
    let staging = RequestContext {
        service: "staging.example".into(),
        client_ip: None,
    };
    assert_eq!(decide(&p, &a, &staging, "registry:catalog:*").1, Some(0));
    assert_eq!(decide(&p, &a, &ctx(), "registry:catalog:*").1, None);
    assert_eq!(decide(&p, &a, &ctx(), "repository:x:pull").1, Some(1));
    assert_eq!(decide(&p, &a, &staging, "repository:x:pull").1, None);
}

#[test]
fn empty_policies_grant_nothing() {
    for text in ["", "# nothing\n", "rules: []\n", "rules:\n"] {
        let p = policy(text);
        assert_eq!(p.rule_count(), 0);
        assert_eq!(
            p.authorize(&user("a", &["admins"]), &ctx(), &scope("repository:x:pull")),
            Grant::none()
        );
    }
}

#[test]
fn explain_renders_one_line_per_scope() {
    let p = policy(SPEC_POLICY);
    let scopes = vec![
        scope("repository:team/app:pull,push"),
        scope("repository:team/app:pull,delete"),
        scope("repository:public/x:pull"),
        scope("repository:secret/x:pull"),
    ];
    let dev = user("dana", &["developers"]);
    let ex = p.explain(&dev, &ctx(), &scopes);
    assert_eq!(
        ex.iter().map(|e| e.verdict).collect::<Vec<_>>(),
        vec![
            Verdict::Full,
            Verdict::Partial,
            Verdict::Full,
            Verdict::Unmatched
        ]
    );
    assert_eq!(
        render_explanation(&ex),
        "repository:team/app:pull,push -> pull,push (rule 2 \"team repos\")\n\
         repository:team/app:pull,delete -> pull (rule 2 \"team repos\": allows only pull,push)\n\
         repository:public/x:pull -> pull (rule 4 \"public read, anonymous too\")\n\
         repository:secret/x:pull -> nothing (no rule matched)\n"
    );
    let c = user("carl", &["contractors"]);
    let ex = p.explain(&c, &ctx(), &[scope("repository:team/app:pull")]);
    assert_eq!(ex[0].verdict, Verdict::Denied);
    assert_eq!(
        render_explanation(&ex),
        "repository:team/app:pull -> nothing (rule 3 \"nothing for contractors\": explicit deny)\n"
    );
}

#[test]
fn default_rule_names_follow_the_index() {
    let p = policy("rules:\n  - { actions: [pull] }\n");
    let g = p.authorize(&user("a", &[]), &ctx(), &scope("repository:x:pull"));
    assert_eq!(g.rule.unwrap().name, "rule 0");
}

#[test]
fn authorizer_reads_the_current_policy_each_call() {
    let holder = Arc::new(Reloadable::new(policy("rules: []")));
    let authz = PolicyAuthorizer::new(holder.clone());
    let a = user("a", &[]);
    let s = scope("repository:x:pull");
    assert!(authz.authorize(&a, &ctx(), &s).actions.is_empty());
    holder.store(policy("rules:\n  - { name: all, actions: [pull] }\n"));
    assert_eq!(authz.authorize(&a, &ctx(), &s).actions, acts(&["pull"]));
}
