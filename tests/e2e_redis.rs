//! The failed-login limit shared through a real redis-server (`state.backend: redis`) by
//! several purser replicas, requests spread round-robin, and the fair lockout: one stale
//! password counts once, users behind one NAT do not lock each other out, the owner's trusted
//! address gets in while a guesser has locked the account, and Redis stopped under load (kept
//! serving with `on_error: local`, 503 with `closed`, shared counting back after a restart).
//! Every test ends by checking that no key in Redis lacks an expiry. Client addresses are
//! simulated with `X-Forwarded-For` from a trusted proxy (the test, on 127.0.0.1).

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use purser_testkit::redis::RedisServer;
use purser_testkit::*;
use serde_json::{json, Value};

const MAX: usize = 5;

fn config(state: Value, lockout: &str) -> Value {
    let mut c = base_config();
    set_path(
        &mut c,
        "limits.failed_logins",
        json!({ "max": MAX, "window": "60s", "lockout": lockout }),
    );
    set_path(&mut c, "server.trusted_proxies", json!(["127.0.0.1/32"]));
    set_path(&mut c, "state", state);
    c
}

fn redis_state(redis: &RedisServer, on_error: &str) -> Value {
    json!({ "backend": "redis", "redis": { "url": redis.url(), "on_error": on_error } })
}

/// Three replicas on one Redis.
fn replicas(redis: &RedisServer, lockout: &str) -> Vec<Purser> {
    (0..3)
        .map(|_| Purser::start(config(redis_state(redis, "local"), lockout), &[]))
        .collect()
}

/// A token request as `user` from the simulated client address `ip`.
fn attempt_at(url: &str, user: &str, password: &str, ip: &str) -> HttpResponse {
    Http::get(url)
        .query(&[("service", SERVICE), ("scope", "repository:public/x:pull")])
        .basic(user, password)
        .header("X-Forwarded-For", ip)
        .send()
        .expect("token request")
}

fn attempt(p: &Purser, user: &str, password: &str, ip: &str) -> HttpResponse {
    attempt_at(&p.token_url(), user, password, ip)
}

/// The sum of every sample of the metric family `name`.
fn metric_sum(p: &Purser, name: &str, filter: &str) -> f64 {
    let r = Http::get(&p.metrics_url()).send().expect("metrics");
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            if !(labels.is_empty() || labels.starts_with('{')) || !labels.contains(filter) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

fn checks(ps: &[Purser]) -> f64 {
    ps.iter()
        .map(|p| metric_sum(p, "purser_authn_attempts_total", ""))
        .sum()
}

fn lockouts(ps: &[Purser], scope: &str) -> f64 {
    ps.iter()
        .map(|p| metric_sum(p, "purser_lockouts_total", &format!("scope=\"{scope}\"")))
        .sum()
}

fn assert_locked(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.text());
    assert!(r.header("Retry-After").is_some(), "{what}: no Retry-After");
}

fn assert_every_key_expires(redis: &RedisServer) {
    let keys = redis.keys();
    assert!(!keys.is_empty(), "nothing was written to Redis");
    let forever = redis.keys_without_expiry();
    assert!(forever.is_empty(), "keys without expiry: {forever:?}");
}

#[test]
fn three_replicas_lock_the_account_after_exactly_max_distinct_wrong_passwords_in_total() {
    let redis = RedisServer::start();
    let ps = replicas(&redis, "3s");
    // Round-robin, each guess from its own address: only the account's count can lock. Every
    // one of the first MAX is checked (an early lock would be a double count)...
    for i in 0..MAX {
        let r = attempt(
            &ps[i % 3],
            ALICE.0,
            &format!("wrong-{i}"),
            &format!("10.0.0.{}", i + 1),
        );
        assert_eq!(r.status, 401, "guess {} on replica {}", i + 1, i % 3);
    }
    // ...and the lock that follows is seen by all three, even with the right password.
    for (n, p) in ps.iter().enumerate() {
        assert_locked(
            &attempt(p, ALICE.0, ALICE.1, "10.9.9.9"),
            &format!("alice on replica {n}"),
        );
    }
    assert_eq!(lockouts(&ps, "account"), 1.0);
    assert_eq!(checks(&ps), MAX as f64, "locked requests cost no check");
    // Account names are hashed into keys.
    let keys = redis.keys();
    assert!(keys.iter().all(|k| !k.contains("alice")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("purser:al:")), "{keys:?}");

    // The lock expires for all three.
    wait_until(
        Duration::from_secs(30),
        "the lock to end on replica 0",
        || attempt(&ps[0], ALICE.0, ALICE.1, "10.9.9.8").status == 200,
        || ps[0].log_tail(),
    );
    for (n, p) in ps.iter().enumerate() {
        let r = attempt(p, ALICE.0, ALICE.1, "10.9.9.9");
        assert_eq!(r.status, 200, "alice on replica {n} after the lock");
    }
    assert_every_key_expires(&redis);
}

fn stale_password(ps: &[Purser]) {
    let start = Instant::now();
    for i in 0..1000 {
        let r = attempt(&ps[i % ps.len()], BOB.0, "last-years-secret", "10.1.0.1");
        assert_eq!(r.status, 401, "repeat {i}: {}", r.text());
    }
    // One check per window at most (the run may straddle a window's end).
    let windows = 1 + start.elapsed().as_secs() / 60;
    let n = checks(ps);
    assert!(
        n >= 1.0 && n <= windows as f64,
        "{n} password checks for one stale password in {windows} window(s)"
    );
    // The owner's correct password works at once, from that address and any other.
    assert_eq!(attempt(&ps[0], BOB.0, BOB.1, "10.1.0.1").status, 200);
    assert_eq!(
        attempt(&ps[ps.len() - 1], BOB.0, BOB.1, "10.1.0.2").status,
        200
    );
    assert_eq!(lockouts(ps, "account") + lockouts(ps, "ip"), 0.0);
}

#[test]
fn one_stale_password_sent_a_thousand_times_counts_once_across_replicas() {
    let redis = RedisServer::start();
    let ps = replicas(&redis, "5m");
    stale_password(&ps);
    assert_every_key_expires(&redis);
}

#[test]
fn one_stale_password_sent_a_thousand_times_counts_once_in_memory() {
    let p = Purser::start(config(json!({ "backend": "memory" }), "5m"), &[]);
    stale_password(&[p]);
}

#[test]
fn users_behind_one_nat_do_not_lock_each_other_out_but_two_hundred_guesses_lock_it() {
    let redis = RedisServer::start();
    let ps = replicas(&redis, "5m");
    let nat = "203.0.113.7";
    for i in 0..10 {
        let r = attempt(&ps[i % 3], &format!("user-{i}"), "typo", nat);
        assert_eq!(r.status, 401);
    }
    // With the old shared limit of 10 the address would be locked now.
    assert_eq!(attempt(&ps[0], ALICE.0, ALICE.1, nat).status, 200);
    assert_eq!(attempt(&ps[1], BOB.0, BOB.1, nat).status, 200);

    // 200 distinct guesses: the 100th distinct failure from the address (10 + 90) locks it.
    let mut first_locked = None;
    for i in 0..200 {
        let r = attempt(&ps[i % 3], &format!("guess-{i}"), "123456", nat);
        match (r.status, first_locked) {
            (401, None) => {}
            (429, None) => first_locked = Some(i),
            (429, Some(_)) => {}
            (s, _) => panic!("guess {i}: {s} {}", r.text()),
        }
    }
    assert_eq!(
        first_locked,
        Some(90),
        "the address locks at per_address_max"
    );
    assert_eq!(lockouts(&ps, "ip"), 1.0);
    // Locked for everyone behind it now (a trusted account too), not elsewhere.
    assert_locked(&attempt(&ps[2], ALICE.0, ALICE.1, nat), "alice at the NAT");
    assert_eq!(
        attempt(&ps[2], ALICE.0, ALICE.1, "198.51.100.1").status,
        200
    );
    assert_every_key_expires(&redis);
}

#[test]
fn the_owner_logs_in_from_a_trusted_address_while_a_guesser_has_locked_the_account() {
    let redis = RedisServer::start();
    let ps = replicas(&redis, "5m");
    let home = "192.0.2.10";
    assert_eq!(attempt(&ps[0], ALICE.0, ALICE.1, home).status, 200);
    for i in 0..MAX {
        let r = attempt(
            &ps[(i + 1) % 3],
            ALICE.0,
            &format!("guess-{i}"),
            "198.51.100.66",
        );
        assert_eq!(r.status, 401);
    }
    assert_locked(
        &attempt(&ps[2], ALICE.0, "guess-again", "198.51.100.66"),
        "the guesser",
    );
    assert_locked(
        &attempt(&ps[1], ALICE.0, ALICE.1, "192.0.2.11"),
        "alice from an address she never used",
    );
    for (n, p) in ps.iter().enumerate() {
        let r = attempt(p, ALICE.0, ALICE.1, home);
        assert_eq!(
            r.status,
            200,
            "alice from home on replica {n}: {}",
            r.text()
        );
    }
    assert_every_key_expires(&redis);
}

/// Requests against `url` until `stop`, as alice (right password) and bob (wrong ones, new
/// each time): the statuses seen.
/// A loop of logins (alice's right password, and a stream of typos) until `stop`, counting its
/// requests in `done`; returns each answer's status and whether it had `Retry-After`.
fn request_loop(
    url: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<(u16, bool)>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::Acquire) && i < 20_000 {
            let r = if i % 2 == 0 {
                attempt_at(&url, ALICE.0, ALICE.1, "10.7.0.1")
            } else {
                attempt_at(&url, "loop-user", &format!("typo-{i}"), "10.7.0.2")
            };
            seen.push((r.status, r.header("Retry-After").is_some()));
            done.fetch_add(1, Ordering::AcqRel);
            i += 1;
        }
        seen
    })
}

/// Waits (bounded) until both loops have answered `n` more requests.
fn loops_advance(loops: &[&Arc<AtomicUsize>], n: usize, what: &str) {
    let from: Vec<usize> = loops.iter().map(|c| c.load(Ordering::Acquire)).collect();
    wait_until(
        Duration::from_secs(20),
        what,
        || {
            loops
                .iter()
                .zip(&from)
                .all(|(c, f)| c.load(Ordering::Acquire) >= f + n)
        },
        String::new,
    );
}

#[test]
fn redis_stopped_under_a_request_loop_local_keeps_serving_closed_refuses_and_both_resume() {
    let mut redis = RedisServer::start();
    let local = Purser::start(config(redis_state(&redis, "local"), "5m"), &[]);
    let closed = Purser::start(config(redis_state(&redis, "closed"), "5m"), &[]);
    assert_eq!(attempt(&local, ALICE.0, ALICE.1, "10.7.0.1").status, 200);
    assert_eq!(attempt(&closed, ALICE.0, ALICE.1, "10.7.0.1").status, 200);
    assert_eq!(metric_sum(&local, "purser_state_backend_up", ""), 1.0);

    let stop = Arc::new(AtomicBool::new(false));
    let (done, done_closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let looping = request_loop(local.token_url(), stop.clone(), done.clone());
    let looping_closed = request_loop(closed.token_url(), stop.clone(), done_closed.clone());
    let both = [&done, &done_closed];
    loops_advance(&both, 20, "the request loops to run before Redis stops");
    redis.stop();

    // local: serving, counting in the replica; says so once, in metrics and /readyz.
    wait_until(
        Duration::from_secs(10),
        "purser_state_backend_up to fall to 0",
        || metric_sum(&local, "purser_state_backend_up", "") == 0.0,
        || local.log_tail(),
    );
    assert!(metric_sum(&local, "purser_state_errors_total", "") >= 1.0);
    let ready = Http::get(&format!("{}/readyz", local.base_url()))
        .send()
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains("Redis"), "{}", ready.text());
    for i in 0..MAX {
        let r = attempt(
            &local,
            "outage",
            &format!("guess-{i}"),
            &format!("10.8.0.{i}"),
        );
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert_locked(
        &attempt(&local, "outage", "guess-x", "10.8.0.99"),
        "counted locally during the outage",
    );
    // closed: password logins are refused with 503 and Retry-After.
    let r = attempt(&closed, ALICE.0, ALICE.1, "10.7.0.1");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    loops_advance(&both, 20, "the request loops to run during the outage");

    redis.start_again();
    wait_until(
        Duration::from_secs(20),
        "local's /readyz to say ready again",
        || {
            Http::get(&format!("{}/readyz", local.base_url()))
                .send()
                .is_ok_and(|r| r.status == 200 && r.text() == "ready\n")
        },
        || local.log_tail(),
    );
    wait_until(
        Duration::from_secs(20),
        "closed to let alice in again",
        || attempt(&closed, ALICE.0, ALICE.1, "10.7.0.1").status == 200,
        || closed.log_tail(),
    );
    loops_advance(&both, 20, "the request loops to run after Redis is back");
    stop.store(true, Ordering::Release);
    let seen = looping.join().unwrap();
    let seen_closed = looping_closed.join().unwrap();

    assert!(seen.len() > 20, "only {} requests in the loop", seen.len());
    let errors: Vec<_> = seen.iter().filter(|(s, _)| *s >= 500).collect();
    assert!(errors.is_empty(), "on_error: local answered {errors:?}");
    let refused: Vec<_> = seen_closed.iter().filter(|(s, _)| *s >= 500).collect();
    assert!(!refused.is_empty(), "on_error: closed never refused");
    assert!(
        refused.iter().all(|(s, retry)| *s == 503 && *retry),
        "closed: {refused:?}"
    );
    assert!(seen_closed.iter().any(|(s, _)| *s == 200));

    // Once per change of state, in each direction.
    let log = local.log_text();
    assert_eq!(log.matches("does not answer: counting").count(), 1, "{log}");
    assert_eq!(log.matches("answers again").count(), 1, "{log}");
    assert_eq!(metric_sum(&local, "purser_state_backend_up", ""), 1.0);

    // Shared counting resumed without a restart: failures through one replica lock the
    // account on the other.
    for i in 0..MAX {
        let r = attempt(
            &local,
            "after",
            &format!("guess-{i}"),
            &format!("10.9.0.{i}"),
        );
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert_locked(
        &attempt(&closed, "after", "guess-x", "10.9.0.99"),
        "the lock counted through the other replica",
    );
    assert_every_key_expires(&redis);
}
