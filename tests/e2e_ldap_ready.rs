//! `/readyz` follows the directory: with a real OpenLDAP server stopped and started again, and
//! no login in between, readiness turns 503 within seconds and back to 200 as soon after.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::time::{Duration, Instant};

use purser_testkit::slapd::Slapd;
use purser_testkit::*;
use serde_json::json;

/// How soon `/readyz` must follow the directory: the backend reuses a probe's answer for 2 s,
/// and a probe of a stopped directory takes at most the LDAP timeout (2 s below); the rest is
/// slack for a loaded machine.
const FOLLOW_BOUND: Duration = Duration::from_secs(10);

fn readyz(p: &Purser) -> HttpResponse {
    Http::get(&format!("{}/readyz", p.base_url()))
        .send()
        .expect("GET /readyz")
}

/// Polls `/readyz` until it answers `status`; returns how long that took.
fn ready_turns(p: &Purser, status: u16, what: &str) -> Duration {
    let started = Instant::now();
    wait_until(
        FOLLOW_BOUND,
        what,
        || readyz(p).status == status,
        || format!("last /readyz: {}\n{}", readyz(p).text(), p.log_tail()),
    );
    started.elapsed()
}

#[test]
fn readyz_follows_the_directory_down_and_up_without_any_login() {
    let mut d = Slapd::start();
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["static", "ldap"]));
    set_path(
        &mut c,
        "authn.ldap",
        merged(
            d.search_bind(),
            json!({ "timeout": "2s",
                "pool_size": 2,
            }),
        ),
    );
    let mut p = Purser::start(c, &[]);
    let up = ready_turns(&p, 200, "/readyz 200 with the directory up");
    println!("/readyz 200 after {up:?}");

    d.stop();
    let down = ready_turns(&p, 503, "/readyz 503 after the directory stopped");
    let r = readyz(&p);
    assert!(
        r.text().contains("ldap"),
        "the reason names the backend: {}",
        r.text()
    );
    println!(
        "/readyz 503 {down:?} after the directory stopped: {}",
        r.text()
    );
    // It stays unready while the directory is away (the cached answer is renewed, not kept).
    for _ in 0..3 {
        assert_eq!(readyz(&p).status, 503);
    }

    d.start_again();
    let back = ready_turns(&p, 200, "/readyz 200 after the directory came back");
    println!("/readyz 200 {back:?} after the directory came back");
    assert!(p.is_running(), "{}", p.log_tail());
}
