//! Failed-login limiting through a running purser (`limits.failed_logins`): per account across
//! addresses, per address across accounts, 429 with `Retry-After`, no password hashing while
//! locked, and other callers unaffected. Client addresses are simulated with `X-Forwarded-For`
//! from a trusted proxy (the test itself, on 127.0.0.1). Each guess is a distinct wrong
//! password (the same one again counts once: tests/e2e_redis.rs), and the address limit is set
//! to the account's here.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_testkit::*;
use serde_json::{json, Value};

const MAX: usize = 5;
const LOCKOUT_SECS: u64 = 300;

fn config() -> Value {
    let mut c = base_config();
    set_path(
        &mut c,
        "limits.failed_logins",
        json!({
            "max": MAX,
            "per_address_max": MAX,
            "window": "60s",
            "lockout": format!("{LOCKOUT_SECS}s")
        }),
    );
    set_path(&mut c, "server.trusted_proxies", json!(["127.0.0.1/32"]));
    c
}

/// A token request as `user` from the simulated client address `ip`.
fn attempt(p: &Purser, user: &str, password: &str, ip: &str) -> HttpResponse {
    Http::get(&p.token_url())
        .query(&[("service", SERVICE), ("scope", "repository:public/x:pull")])
        .basic(user, password)
        .header("X-Forwarded-For", ip)
        .send()
        .expect("token request")
}

/// The sum of every sample of the metric family `name`.
fn metric_sum(p: &Purser, name: &str) -> f64 {
    metric_samples(p, name).iter().map(|(_, v)| v).sum()
}

/// The samples of `name` as (label text, value).
fn metric_samples(p: &Purser, name: &str) -> Vec<(String, f64)> {
    let r = Http::get(&p.metrics_url()).send().expect("metrics");
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn lockouts(p: &Purser, scope: &str) -> f64 {
    metric_samples(p, "purser_lockouts_total")
        .iter()
        .filter(|(l, _)| l.contains(&format!("scope=\"{scope}\"")))
        .map(|(_, v)| v)
        .sum()
}

fn assert_locked(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.text());
    let retry: u64 = r
        .header("Retry-After")
        .unwrap_or_else(|| panic!("{what}: 429 without Retry-After"))
        .trim()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(
        retry > 0 && retry <= LOCKOUT_SECS,
        "{what}: Retry-After {retry} outside 1..={LOCKOUT_SECS}"
    );
}

#[test]
fn fifty_wrong_passwords_for_one_account_from_many_addresses_lock_the_account() {
    let p = Purser::start(config(), &[]);
    for i in 0..50 {
        let ip = format!("10.0.0.{}", i % 10 + 1);
        let r = attempt(&p, ALICE.0, &format!("wrong-{i}"), &ip);
        if i < MAX {
            assert_eq!(r.status, 401, "failure {} must still be checked", i + 1);
        } else {
            assert_locked(&r, &format!("attempt {} for alice from {ip}", i + 1));
        }
        if i == MAX {
            // From here on every request is refused before any backend is asked.
            assert_eq!(metric_sum(&p, "purser_authn_attempts_total"), MAX as f64);
        }
    }
    assert_eq!(
        metric_sum(&p, "purser_authn_attempts_total"),
        MAX as f64,
        "locked-out requests must cost no password check"
    );
    assert_eq!(lockouts(&p, "account"), 1.0);
    assert_eq!(lockouts(&p, "ip"), 0.0, "no address reached the limit");

    // The account stays locked even with its right password, from a fresh address...
    assert_locked(
        &attempt(&p, ALICE.0, ALICE.1, "10.9.9.9"),
        "alice, right password",
    );
    // ...while another account from another address is untouched.
    let r = attempt(&p, BOB.0, BOB.1, "10.0.0.1");
    assert_eq!(
        r.status,
        200,
        "bob from an address alice's attacker used: {}",
        r.text()
    );
    let r = attempt(&p, ADMIN.0, ADMIN.1, "192.0.2.50");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn many_accounts_from_one_address_lock_the_address() {
    let p = Purser::start(config(), &[]);
    let attacker = "203.0.113.7";
    for i in 0..50 {
        let user = format!("guess-{i}");
        let r = attempt(&p, &user, "wrong", attacker);
        if i < MAX {
            assert_eq!(r.status, 401, "failure {} must still be checked", i + 1);
        } else {
            assert_locked(&r, &format!("attempt {} from {attacker}", i + 1));
        }
    }
    assert_eq!(
        metric_sum(&p, "purser_authn_attempts_total"),
        MAX as f64,
        "locked-out requests must cost no password check"
    );
    assert_eq!(lockouts(&p, "ip"), 1.0);
    assert_eq!(lockouts(&p, "account"), 0.0);

    // The locked address cannot log in even as a real user with the right password.
    assert_locked(
        &attempt(&p, ALICE.0, ALICE.1, attacker),
        "alice from the attacker",
    );
    // The right password from another address for another account still works.
    let r = attempt(&p, BOB.0, BOB.1, "198.51.100.9");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = attempt(&p, ALICE.0, ALICE.1, "198.51.100.10");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_success_from_one_address_does_not_reset_the_count_of_another() {
    let p = Purser::start(config(), &[]);
    for i in 0..MAX - 1 {
        let r = attempt(&p, BOB.0, &format!("wrong-{i}"), &format!("10.1.1.{i}"));
        assert_eq!(r.status, 401);
    }
    // Bob logs in from elsewhere: the attacker's failures still count.
    assert_eq!(attempt(&p, BOB.0, BOB.1, "10.2.2.2").status, 200);
    assert_eq!(attempt(&p, BOB.0, "wrong-last", "10.1.1.99").status, 401);
    assert_locked(
        &attempt(&p, BOB.0, BOB.1, "10.3.3.3"),
        "bob after the limit, from a new address",
    );
    // The address bob logged in from is trusted by his account: the lock does not stop it.
    assert_eq!(attempt(&p, BOB.0, BOB.1, "10.2.2.2").status, 200);
    assert_eq!(lockouts(&p, "account"), 1.0);
}
