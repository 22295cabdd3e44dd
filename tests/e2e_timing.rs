//! No user enumeration by timing: for each backend (static, htpasswd, LDAP), the response time
//! of a wrong password for an existing user and of any password for an unknown user have the
//! same median, within 10%.
//!
//! This is a statistical comparison, not a performance assertion: the two kinds of request are
//! interleaved (so load from elsewhere on the machine hits both alike), the credential cache is
//! off, and a failed comparison is measured once more before the test fails. bcrypt cost 5 keeps
//! each sample short while the hash still dominates the request.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::time::{Duration, Instant};

use purser_testkit::slapd::{self, Slapd};
use purser_testkit::*;
use serde_json::{json, Value};

const SAMPLES: usize = 40;
const WARMUP: usize = 5;
const TOLERANCE: f64 = 0.10;
const COST: u32 = 5;

fn timed_login(p: &Purser, user: &str, password: &str) -> Duration {
    let started = Instant::now();
    let r = p.token_get(&[("service", SERVICE)], Some((user, password)));
    let took = started.elapsed();
    assert_eq!(r.status, 401, "{user}: {}", r.text());
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// Medians of (existing user, wrong password) and (unknown user) over interleaved samples.
fn measure(p: &Purser, existing: &str, unknown: &str) -> (Duration, Duration) {
    for _ in 0..WARMUP {
        timed_login(p, existing, "wrong-password");
        timed_login(p, unknown, "wrong-password");
    }
    let mut known = Vec::with_capacity(SAMPLES);
    let mut missing = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            known.push(timed_login(p, existing, "wrong-password"));
            missing.push(timed_login(p, unknown, "wrong-password"));
        } else {
            missing.push(timed_login(p, unknown, "wrong-password"));
            known.push(timed_login(p, existing, "wrong-password"));
        }
    }
    (median(known), median(missing))
}

fn relative_gap(a: Duration, b: Duration) -> f64 {
    let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
    (a - b).abs() / a.max(b)
}

/// Measures, and once more when the medians differ by more than the tolerance.
fn assert_indistinguishable(backend: &str, p: &Purser, existing: &str, unknown: &str) {
    let mut tries = Vec::new();
    for _ in 0..2 {
        let (known, missing) = measure(p, existing, unknown);
        let gap = relative_gap(known, missing);
        tries.push(format!(
            "existing user {known:?}, unknown user {missing:?}: gap {:.1}%",
            gap * 100.0
        ));
        if gap <= TOLERANCE {
            eprintln!("{backend}: {}", tries.join("; then "));
            return;
        }
    }
    panic!(
        "{backend}: wrong-password medians differ by more than {:.0}%: {}",
        TOLERANCE * 100.0,
        tries.join("; then ")
    );
}

/// The e2e config without the credential cache or failed-login limiting, and without the
/// static users (each test sets its own backends).
fn config() -> Value {
    let mut c = base_config();
    set_path(&mut c, "authn.cache_ttl", json!("0s"));
    set_path(
        &mut c,
        "limits.failed_logins",
        json!({ "max": 0, "window": "60s", "lockout": "1s" }),
    );
    c["authn"].as_object_mut().expect("authn").remove("static");
    c
}

fn hash(password: &str) -> String {
    bcrypt::hash(password, COST).expect("bcrypt")
}

#[test]
fn static_backend_wrong_password_and_unknown_user_take_the_same_time() {
    let mut c = config();
    set_path(&mut c, "authn.order", json!(["static"]));
    set_path(
        &mut c,
        "authn.static.users",
        json!({
            "alice": { "password_hash": hash("alice-secret"), "groups": [] },
            "bob": { "password_hash": hash("bob-secret"), "groups": [] },
        }),
    );
    let p = Purser::start(c, &[]);
    assert_indistinguishable("static", &p, "alice", "mallory");
}

#[test]
fn htpasswd_backend_wrong_password_and_unknown_user_take_the_same_time() {
    let mut c = config();
    set_path(&mut c, "authn.order", json!(["htpasswd"]));
    set_path(
        &mut c,
        "authn.htpasswd",
        json!({ "file": "users.htpasswd", "groups_file": "" }),
    );
    let file = format!(
        "alice:{}\nbob:{}\n",
        hash("alice-secret"),
        hash("bob-secret")
    );
    let p = Purser::start(c, &[("users.htpasswd", &file)]);
    assert_indistinguishable("htpasswd", &p, "alice", "mallory");
}

#[test]
fn ldap_backend_wrong_password_and_unknown_user_take_the_same_time() {
    let d = Slapd::start();
    let mut c = config();
    set_path(&mut c, "authn.order", json!(["ldap"]));
    set_path(
        &mut c,
        "authn.ldap",
        merged(
            d.search_bind(),
            json!({ "group_base": slapd::GROUPS,
                "group_filter": "(member={dn})",
                "group_name_attribute": "cn",
                "timeout": "5s",
                "pool_size": 4,
            }),
        ),
    );
    let p = Purser::start(c, &[]);
    assert_indistinguishable("ldap", &p, "alice", "mallory");
    // Neither the service account's password nor the guesses reach the (debug) log.
    let log = p.log_text();
    assert!(
        !log.contains(slapd::SERVICE_PASSWORD),
        "the bind password was logged"
    );
    assert!(!log.contains("wrong-password"), "a password was logged");
}
