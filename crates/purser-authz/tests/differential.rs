//! The indexed decision equals a plain first-match scan on a large random policy.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fmt::Write;
use std::net::IpAddr;

use purser_authz::Policy;
use purser_core::{Identity, RequestContext, ResourceScope};

/// A small deterministic generator (splitmix64), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

fn random_actions(rng: &mut Rng) -> Vec<&'static str> {
    ACTIONS.iter().copied().filter(|_| rng.chance(45)).collect()
}

fn random_name_pattern(rng: &mut Rng) -> String {
    let k = rng.below(300);
    let m = rng.below(10);
    match rng.below(12) {
        0 => format!("ns{k}/app{m}"),
        1 => format!("ns{k}/*"),
        2 => format!("ns{k}/**"),
        3 => format!("ns{k}/app?"),
        4 => format!("ns{k}/a*/x"),
        5 => format!("/ns{k}/app[0-4]/"),
        6 => "${account}/**".to_string(),
        7 => format!("users{}/${{account}}/*", k % 5),
        8 => "teams/${group}/**".to_string(),
        9 => format!("**/app{m}"),
        10 => format!("ns{k}/**/x"),
        _ => format!("ns{k}/app{m}/**"),
    }
}

fn random_policy(rng: &mut Rng, n: usize) -> String {
    let mut text = String::from("rules:\n");
    for i in 0..n {
        let mut fields: Vec<String> = Vec::new();
        // Most rules name repositories; some constrain only the caller.
        if rng.chance(97) {
            fields.push(format!("name: {:?}", random_name_pattern(rng)));
        } else {
            // A rule for one caller of one group, whatever the repository.
            fields.push(format!(
                "account: u{}, groups: [g{}]",
                rng.below(40),
                rng.below(40)
            ));
        }
        let caller_rule = fields[0].starts_with("account");
        if rng.chance(25) && !caller_rule {
            fields.push(format!("groups: [g{}, \"h*\"]", rng.below(40)));
        }
        if rng.chance(15) && !caller_rule {
            let a = match rng.below(4) {
                0 => "\"\"".to_string(),
                1 => "\"*\"".to_string(),
                2 => format!("u{}", rng.below(40)),
                _ => format!("\"u{}*\"", rng.below(4)),
            };
            fields.push(format!("account: {a}"));
        }
        if rng.chance(15) {
            fields.push(format!(
                "type: {}",
                ["repository", "registry", "repo*"][rng.below(3) as usize]
            ));
        }
        if rng.chance(10) {
            fields.push(format!(
                "service: {}",
                ["registry.local", "staging", "\"*.local\""][rng.below(3) as usize]
            ));
        }
        if rng.chance(8) {
            fields.push(format!(
                "ip: [\"10.{}.0.0/16\", \"fd00::/8\"]",
                rng.below(4)
            ));
        }
        let actions: Vec<String> = if rng.chance(5) {
            Vec::new()
        } else {
            random_actions(rng)
                .iter()
                .map(|a| format!("{a:?}"))
                .collect()
        };
        writeln!(
            text,
            "  - {{ name: \"r{i}\", match: {{ {} }}, actions: [{}] }}",
            fields.join(", "),
            actions.join(", ")
        )
        .unwrap();
    }
    text
}

fn random_request(rng: &mut Rng) -> (Identity, RequestContext, ResourceScope) {
    let account = if rng.chance(15) {
        String::new()
    } else {
        format!("u{}", rng.below(45))
    };
    let groups: Vec<String> = (0..rng.below(3))
        .map(|_| {
            if rng.chance(20) {
                format!("h{}", rng.below(5))
            } else {
                format!("g{}", rng.below(45))
            }
        })
        .collect();
    let k = rng.below(320);
    let m = rng.below(12);
    let name = match rng.below(9) {
        0 => format!("ns{k}/app{m}"),
        1 => format!("ns{k}/a{m}/x"),
        2 => format!("ns{k}/app{m}/deeper/still"),
        3 => format!("{}/thing", if account.is_empty() { "u1" } else { &account }),
        4 => format!(
            "users{}/{}/x",
            k % 5,
            if account.is_empty() { "u2" } else { &account }
        ),
        5 => format!("teams/g{}/a/b", rng.below(45)),
        6 => format!("ns{k}/x/y/x"),
        7 => format!("deep/app{m}"),
        _ => format!("ns{k}/app{}", rng.below(5)),
    };
    let rtype = ["repository", "repository", "registry"][rng.below(3) as usize];
    let mut actions = random_actions(rng);
    if actions.is_empty() {
        actions.push("pull");
    }
    let scope: ResourceScope = format!("{rtype}:{name}:{}", actions.join(","))
        .parse()
        .unwrap();
    let client_ip: Option<IpAddr> = match rng.below(4) {
        0 => None,
        1 => Some(format!("10.{}.3.4", rng.below(6)).parse().unwrap()),
        2 => Some("fd00::1".parse().unwrap()),
        _ => Some("192.0.2.1".parse().unwrap()),
    };
    let service = ["registry.local", "staging", "other"][rng.below(3) as usize].to_string();
    (
        Identity::new(account, groups),
        RequestContext { service, client_ip },
        scope,
    )
}

#[test]
fn ten_thousand_rules_decide_like_a_linear_scan() {
    let mut rng = Rng(0x0005_eed0_fa11);
    let text = random_policy(&mut rng, 10_000);
    let policy = Policy::parse(&text, "random.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.rule_count(), 10_000);

    let mut matched = 0;
    let mut granted = 0;
    for _ in 0..600 {
        let (who, ctx, scope) = random_request(&mut rng);
        let fast = policy.authorize(&who, &ctx, &scope);
        let slow = policy.authorize_linear(&who, &ctx, &scope);
        assert_eq!(fast, slow, "who {who:?} ctx {ctx:?} scope {scope}");
        matched += usize::from(fast.rule.is_some());
        granted += usize::from(!fast.actions.is_empty());
    }
    // The cases must exercise real decisions, not only "no rule matched".
    assert!(
        matched > 200,
        "only {matched} of 600 requests matched a rule"
    );
    assert!(
        granted > 100,
        "only {granted} of 600 requests were granted something"
    );
    assert!(
        matched < 600,
        "every request matched: the policy is too broad to test the index"
    );
}
