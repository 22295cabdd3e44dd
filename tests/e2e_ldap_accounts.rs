//! End to end with a real OpenLDAP directory: a user name is the directory's account, not the
//! string typed. slapd matches `Carol`, `CAROL`, ` carol` and `ｃａｒｏｌ` to the entry `uid=carol`
//! (uid compares after case folding, Unicode normalisation and space trimming), so the policy, the group lookups, the token's `sub`
//! and the failed-login lockout must all see `carol`. Each test starts its own slapd and purser.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_testkit::slapd::{self, Slapd};
use purser_testkit::*;
use serde_json::{json, Value};

const TEAM: &str = "repository:team/app:pull,push";
const MAX_FAILURES: usize = 3;
const LOCKOUT_SECS: u64 = 300;

/// Only `admin` as a static user (first in the chain, as in production setups), then the
/// directory in search-then-bind mode with `group_filter`.
fn config(d: &Slapd, group_filter: &str) -> Value {
    slapd::config_behind_admin(merged(
        d.search_bind(),
        json!({ "group_base": slapd::GROUPS,
            "group_filter": group_filter,
            "timeout": "3s",
        }),
    ))
}

/// A token request for `scope` as `user`, from the client address `ip` (through the test
/// itself as a trusted proxy).
fn attempt(p: &Purser, user: &str, password: &str, ip: &str, scope: &str) -> HttpResponse {
    Http::get(&p.token_url())
        .query(&[("service", SERVICE), ("scope", scope)])
        .basic(user, password)
        .header("X-Forwarded-For", ip)
        .send()
        .expect("token request")
}

/// The token's `sub` and the actions granted on its one resource; panics unless 200.
fn granted(p: &Purser, user: &str, password: &str) -> (String, Vec<String>) {
    let r = attempt(p, user, password, "10.1.0.1", TEAM);
    assert_eq!(
        r.status,
        200,
        "{user:?}: {} {}\n{}",
        r.status,
        r.text(),
        p.log_tail()
    );
    let claims = Jwt::decode(r.json()["token"].as_str().expect("token")).claims;
    let actions = claims["access"][0]["actions"]
        .as_array()
        .expect("access[0].actions")
        .iter()
        .map(|a| a.as_str().expect("action").to_string())
        .collect();
    (claims["sub"].as_str().expect("sub").to_string(), actions)
}

#[test]
fn ldap_user_name_spellings_get_the_policy_of_the_directory_account() {
    let d = Slapd::start();
    let policy = r#"rules:
  - name: blocked accounts
    match: { account: carol }
    actions: []
  - name: bob reads team
    match: { account: bob, name: "team/**" }
    actions: [pull]
  - name: everyone works on team
    match: { account: "*", name: "team/**" }
    actions: [pull, push]
"#;
    let p = Purser::start(config(&d, "(member={dn})"), &[("policy.yaml", policy)]);
    let carol_pw = slapd::password_of("carol");
    let bob_pw = slapd::password_of("bob");
    let alice_pw = slapd::password_of("alice");

    // The rule that the deny and the pull-only rule shadow does grant push.
    assert_eq!(
        granted(&p, "alice", &alice_pw),
        ("alice".into(), vec!["pull".into(), "push".into()])
    );
    for name in ["carol", "Carol", "CAROL", " carol", "carol ", "ｃａｒｏｌ"] {
        assert_eq!(
            granted(&p, name, &carol_pw),
            ("carol".into(), vec![]),
            "{name:?} is the directory's carol, denied everything"
        );
    }
    for name in ["bob", "BOB", "Bob"] {
        assert_eq!(
            granted(&p, name, &bob_pw),
            ("bob".into(), vec!["pull".into()]),
            "{name:?} is the directory's bob, limited to pull"
        );
    }
    // Unicode: the directory folds case and compatibility forms, and composes (`zoë` with a
    // combining diaeresis).
    let zoe_pw = slapd::password_of("zoë");
    for name in ["ZOË", "zoe\u{0308}", "ZOE\u{0308}"] {
        assert_eq!(
            granted(&p, name, &zoe_pw),
            ("zoë".into(), vec!["pull".into(), "push".into()]),
            "{name:?} is the directory's zoë"
        );
    }
    let log = p.log_text();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("purser::audit"))
        .collect();
    assert!(
        !audit
            .iter()
            .any(|l| l.contains("account=\"CAROL\"") || l.contains("account=\"BOB\"")),
        "an audit record names the typed spelling, not the account:\n{}",
        audit.join("\n")
    );
}

#[test]
fn ldap_posix_group_deny_applies_to_every_spelling_of_the_member() {
    let d = Slapd::start();
    let policy = r#"rules:
  - name: contractors blocked
    match: { groups: [contractors] }
    actions: []
  - name: everyone works on team
    match: { account: "*", name: "team/**" }
    actions: [pull, push]
"#;
    // memberUid holds names, matched exactly: the filter must get the directory's spelling.
    let p = Purser::start(
        config(&d, "(memberUid={username})"),
        &[("policy.yaml", policy)],
    );
    let bob_pw = slapd::password_of("bob");
    assert_eq!(
        granted(&p, "alice", &slapd::password_of("alice")),
        ("alice".into(), vec!["pull".into(), "push".into()])
    );
    for name in ["bob", "BOB", "Bob", " bob"] {
        assert_eq!(
            granted(&p, name, &bob_pw),
            ("bob".into(), vec![]),
            "{name:?} is the directory's bob, a contractor"
        );
    }
}

#[test]
fn ldap_lockout_and_tokens_follow_the_directory_account() {
    let d = Slapd::start();
    let mut c = config(&d, "(member={dn})");
    set_path(
        &mut c,
        "limits.failed_logins",
        json!({ "max": MAX_FAILURES, "window": "60s", "lockout": format!("{LOCKOUT_SECS}s") }),
    );
    set_path(&mut c, "server.trusted_proxies", json!(["127.0.0.1/32"]));
    let p = Purser::start(c, &[]);
    let alice_pw = slapd::password_of("alice");

    // The token, and the refresh token's account, are the directory's `alice`.
    let r = Http::get(&p.token_url())
        .query(&[
            ("service", SERVICE),
            ("scope", "repository:alice/app:pull"),
            ("offline_token", "true"),
        ])
        .basic("ALICE", &alice_pw)
        .header("X-Forwarded-For", "10.2.0.1")
        .send()
        .expect("token request");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    let body = r.json();
    let sub = Jwt::decode(body["token"].as_str().expect("token")).claims["sub"].clone();
    assert_eq!(sub, json!("alice"), "ALICE's token");
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("service", SERVICE),
            ("scope", "repository:alice/app:pull"),
        ])
        .header("X-Forwarded-For", "10.2.0.1")
        .send()
        .expect("refresh grant");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    let sub =
        Jwt::decode(r.json()["access_token"].as_str().expect("access_token")).claims["sub"].clone();
    assert_eq!(sub, json!("alice"), "the refreshed token of ALICE's login");

    // Wrong passwords as `alice`, each from its own address (no address is locked), lock the
    // account; `ALICE` with the right password (and a cached login) is that account: 429.
    for i in 0..MAX_FAILURES {
        let r = attempt(
            &p,
            "alice",
            &format!("wrong-{i}"),
            &format!("10.3.0.{i}"),
            TEAM,
        );
        assert_eq!(r.status, 401, "wrong password {i}: {}", r.text());
    }
    for (name, ip) in [
        ("ALICE", "10.3.1.1"),
        ("Alice", "10.3.1.2"),
        ("alice", "10.3.1.3"),
    ] {
        let r = attempt(&p, name, &alice_pw, ip, TEAM);
        assert_eq!(r.status, 429, "{name:?} while alice is locked");
        assert!(r.header("Retry-After").is_some(), "429 without Retry-After");
    }

    // Wrong passwords typed in other spellings count against the directory's account too.
    let user01_pw = slapd::password_of("user01");
    for (i, name) in ["USER01", "User01", " user01"].iter().enumerate() {
        let r = attempt(&p, name, "wrong", &format!("10.4.0.{i}"), TEAM);
        assert_eq!(r.status, 401, "{name:?}, wrong password: {}", r.text());
    }
    let r = attempt(&p, "user01", &user01_pw, "10.4.1.1", TEAM);
    assert_eq!(
        r.status, 429,
        "user01 after failures as USER01, User01 and \" user01\""
    );

    // Others are unaffected.
    let (sub, _) = granted(&p, "user02", &slapd::password_of("user02"));
    assert_eq!(sub, "user02");
}
