//! End to end, the credential cache under the three events that used to undo it: an htpasswd
//! edit (only the edited users are checked again), a burst of identical cold logins (one
//! backend check: one bcrypt, or one bind counted by a real slapd), and a directory outage
//! (`authn.cache_stale_if_unavailable`: users who logged in before keep getting tokens, marked
//! stale in the audit record; nobody else does). Each test starts its own processes.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use purser_testkit::slapd::{self, Slapd};
use purser_testkit::*;
use serde_json::{json, Value};

/// Bound for waits that are not themselves under test (a reload to land, a directory to return).
const SETTLE: Duration = Duration::from_secs(30);

fn metric(p: &Purser, key: &str) -> f64 {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    parse_metrics(&r.text()).get(key).copied().unwrap_or(0.0)
}

/// The checks the backend really did: `purser_authn_duration_seconds` times only those.
fn checks(p: &Purser, backend: &str) -> f64 {
    metric(
        p,
        &format!(r#"purser_authn_duration_seconds_count{{backend="{backend}"}}"#),
    )
}

fn cache_hits(p: &Purser, backend: &str) -> f64 {
    metric(
        p,
        &format!(r#"purser_authn_cache_hits_total{{backend="{backend}"}}"#),
    )
}

fn status(p: &Purser, user: &str, password: &str) -> u16 {
    p.token_get(&[("service", SERVICE)], Some((user, password)))
        .status
}

/// Sends every login at once (threads released together) and returns the statuses in order.
fn burst(p: &Purser, logins: &[(String, String)]) -> Vec<u16> {
    let url = p.token_url();
    let barrier = Arc::new(Barrier::new(logins.len()));
    let threads: Vec<_> = logins
        .iter()
        .cloned()
        .map(|(user, password)| {
            let (url, barrier) = (url.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                Http::get(&url)
                    .query(&[("service", SERVICE)])
                    .basic(&user, &password)
                    .send()
                    .expect("token request")
                    .status
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn same(user: &str, password: &str, n: usize) -> Vec<(String, String)> {
    vec![(user.to_owned(), password.to_owned()); n]
}

/// Half right, half wrong, interleaved.
fn right_and_wrong(user: &str, right: &str) -> Vec<(String, String)> {
    (0..64)
        .map(|i| {
            let pw = if i % 2 == 0 { right } else { "wrong-password" };
            (user.to_owned(), pw.to_owned())
        })
        .collect()
}

fn assert_right_and_wrong(statuses: &[u16]) {
    for (i, s) in statuses.iter().enumerate() {
        let want = if i % 2 == 0 { 200 } else { 401 };
        assert_eq!(*s, want, "login {i} of the mixed burst: {statuses:?}");
    }
}

fn htpasswd_line(user: &str, password: &str, cost: u32) -> String {
    let hash = bcrypt::hash(password, cost)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    format!("{user}:{hash}\n")
}

fn htpasswd_config() -> Value {
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["htpasswd"]));
    set_path(&mut c, "authn.htpasswd.file", json!("users.htpasswd"));
    set_path(&mut c, "authn.htpasswd.groups_file", json!("users.htgroup"));
    set_path(&mut c, "log.format", json!("json"));
    c
}

fn last_audit(p: &Purser) -> Value {
    p.audit_records().pop().expect("an audit record")
}

#[test]
fn an_unrelated_htpasswd_edit_keeps_the_other_users_cached_and_a_changed_password_is_refused_at_once(
) {
    let users = htpasswd_line("carol", "carol-pw", 4) + &htpasswd_line("dave", "dave-pw", 4);
    let p = Purser::start(
        htpasswd_config(),
        &[
            ("users.htpasswd", &users),
            ("users.htgroup", "devs: carol dave\n"),
        ],
    );
    let file = p.dir().join("users.htpasswd");
    let reloads = || {
        metric(
            &p,
            r#"purser_reloads_total{outcome="success",source="htpasswd"}"#,
        )
    };
    assert_eq!(status(&p, "carol", "carol-pw"), 200, "{}", p.log_tail());
    assert_eq!(status(&p, "dave", "dave-pw"), 200);
    assert_eq!(checks(&p, "htpasswd"), 2.0);

    // An unrelated user added, and dave's password changed, in one edit.
    let before = reloads();
    // carol's line stays byte for byte.
    let carol_line = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("carol:"))
        .unwrap()
        .to_owned();
    fs::write(
        &file,
        format!(
            "{carol_line}\n{}{}",
            htpasswd_line("dave", "dave-new", 4),
            htpasswd_line("erin", "erin-pw", 4)
        ),
    )
    .unwrap();
    wait_until(
        SETTLE,
        "the htpasswd edit reloaded",
        || reloads() > before,
        || p.log_tail(),
    );

    let hits = cache_hits(&p, "htpasswd");
    assert_eq!(status(&p, "carol", "carol-pw"), 200);
    assert_eq!(
        cache_hits(&p, "htpasswd"),
        hits + 1.0,
        "carol's cached login was dropped by an edit that did not touch her"
    );
    assert_eq!(checks(&p, "htpasswd"), 2.0);
    // dave's old password is refused at once, by a fresh check.
    assert_eq!(status(&p, "dave", "dave-pw"), 401);
    assert_eq!(status(&p, "dave", "dave-new"), 200);
    assert_eq!(status(&p, "erin", "erin-pw"), 200);
    assert_eq!(checks(&p, "htpasswd"), 5.0);

    // A group edit touches only the users whose groups changed.
    let before = reloads();
    let group_reloads = || {
        metric(
            &p,
            r#"purser_reloads_total{outcome="success",source="htgroup"}"#,
        )
    };
    let groups_before = group_reloads();
    fs::write(
        p.dir().join("users.htgroup"),
        "devs: carol dave\nops: dave\n",
    )
    .unwrap();
    wait_until(
        SETTLE,
        "the htgroup edit reloaded",
        || group_reloads() > groups_before,
        || p.log_tail(),
    );
    assert_eq!(reloads(), before);
    assert_eq!(status(&p, "carol", "carol-pw"), 200);
    assert_eq!(checks(&p, "htpasswd"), 5.0, "carol's groups did not change");
    assert_eq!(status(&p, "dave", "dave-new"), 200);
    assert_eq!(checks(&p, "htpasswd"), 6.0, "dave's groups changed");
    assert_eq!(last_audit(&p)["groups"], json!(["devs", "ops"]));
}

#[test]
fn a_burst_of_64_cold_logins_is_one_bcrypt_and_right_and_wrong_passwords_are_one_each() {
    // Cost 12: a check long enough for every request of the burst to arrive during it.
    let users = htpasswd_line("fleet", "fleet-pw", 12) + &htpasswd_line("mixed", "mixed-pw", 12);
    let p = Purser::start(
        htpasswd_config(),
        &[("users.htpasswd", &users), ("users.htgroup", "")],
    );
    let statuses = burst(&p, &same("fleet", "fleet-pw", 64));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(checks(&p, "htpasswd"), 1.0, "{}", p.log_tail());
    let shared = metric(
        &p,
        r#"purser_authn_shared_answers_total{backend="htpasswd"}"#,
    );
    assert_eq!(shared + cache_hits(&p, "htpasswd"), 63.0);
    println!("64 concurrent cold logins: 1 bcrypt, {shared} shared answers");

    let statuses = burst(&p, &right_and_wrong("mixed", "mixed-pw"));
    assert_right_and_wrong(&statuses);
    assert_eq!(checks(&p, "htpasswd"), 3.0, "{}", p.log_tail());
    // The cache never remembers a wrong password; the failed-login limiter remembers that this
    // one failed (by a keyed digest) and answers it 401 without another check.
    assert_eq!(status(&p, "mixed", "wrong-password"), 401);
    assert_eq!(checks(&p, "htpasswd"), 3.0);
    // Another wrong password is checked.
    assert_eq!(status(&p, "mixed", "another-wrong-password"), 401);
    assert_eq!(checks(&p, "htpasswd"), 4.0);
}

/// A TCP forwarder that holds every chunk from the server for `delay`: a directory slow enough
/// that all the requests of a burst arrive while the first check is still at it.
fn slow_link(to: String, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&to) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    thread::sleep(delay);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

fn ldap_config(url: &str) -> Value {
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["ldap"]));
    set_path(&mut c, "log.format", json!("json"));
    set_path(
        &mut c,
        "authn.ldap",
        json!({
            "urls": [url],
            "bind_dn": slapd::SERVICE_DN,
            "bind_password": slapd::SERVICE_PASSWORD,
            "user_base": slapd::PEOPLE,
            "user_filter": "(uid={username})",
            "group_base": slapd::GROUPS,
            "group_filter": "(member={dn})",
            "group_name_attribute": "cn",
            "timeout": "3s",
            "pool_size": 4,
        }),
    );
    c
}

#[test]
fn a_burst_of_64_cold_ldap_logins_is_one_bind_at_the_directory() {
    let d = Slapd::start();
    let url = d.url();
    let addr = url.trim_start_matches("ldap://").to_owned();
    let port = slow_link(addr, Duration::from_millis(150));
    let p = Purser::start(ldap_config(&format!("ldap://127.0.0.1:{port}")), &[]);

    let (user, pw) = ("user01", slapd::password_of("user01"));
    let dn = slapd::user_dn(user);
    let binds = d.binds_as(&dn);
    let statuses = burst(&p, &same(user, &pw, 64));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        d.binds_as(&dn) - binds,
        1,
        "the directory saw more than one bind for one burst"
    );
    assert_eq!(checks(&p, "ldap"), 1.0);

    let (user, pw) = ("user02", slapd::password_of("user02"));
    let dn = slapd::user_dn(user);
    let binds = d.binds_as(&dn);
    let statuses = burst(&p, &right_and_wrong(user, &pw));
    assert_right_and_wrong(&statuses);
    assert_eq!(
        d.binds_as(&dn) - binds,
        2,
        "one bind for the right password and one for the wrong one"
    );
}

fn stale_count(p: &Purser) -> f64 {
    metric(p, r#"purser_authn_stale_answers_total{backend="ldap"}"#)
}

#[test]
fn with_stale_answers_on_known_users_keep_getting_tokens_while_slapd_is_down() {
    let mut d = Slapd::start();
    // cache_ttl 0s: every login before the outage is a real check, and the entries are kept
    // for the outage only.
    let mut stale_on = ldap_config(&d.url());
    set_path(&mut stale_on, "authn.cache_ttl", json!("0s"));
    set_path(
        &mut stale_on,
        "authn.cache_stale_if_unavailable",
        json!("5m"),
    );
    let p = Purser::start(stale_on, &[]);
    let mut default = ldap_config(&d.url());
    set_path(&mut default, "authn.cache_ttl", json!("0s"));
    let q = Purser::start(default, &[]);

    let (alice, alice_pw) = ("user01", slapd::password_of("user01"));
    let (bob, bob_pw) = ("user02", slapd::password_of("user02"));
    for server in [&p, &q] {
        assert_eq!(
            status(server, alice, &alice_pw),
            200,
            "{}",
            server.log_tail()
        );
    }
    let groups_before = last_audit(&p)["groups"].clone();
    assert_eq!(last_audit(&p)["stale"], false);

    d.stop();
    let r = p.token_get(&[("service", SERVICE)], Some((alice, &alice_pw)));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    let audit = last_audit(&p);
    assert_eq!(audit["stale"], true, "{audit}");
    assert_eq!(audit["account"], alice);
    assert_eq!(audit["groups"], groups_before);
    assert_eq!(stale_count(&p), 1.0);
    // Someone never seen: 503, as before.
    assert_eq!(status(&p, bob, &bob_pw), 503);
    // A wrong password: never a token.
    let wrong = status(&p, alice, "wrong-password");
    assert!(wrong == 503 || wrong == 401, "wrong password got {wrong}");
    assert_eq!(stale_count(&p), 1.0);
    // With the default (0s) nothing changes: the directory is down, so 503.
    assert_eq!(status(&q, alice, &alice_pw), 503);
    assert_eq!(
        metric(&q, r#"purser_authn_stale_answers_total{backend="ldap"}"#),
        0.0
    );

    // The directory returns: fresh checks resume (a bind at the directory, not stale).
    d.start_again();
    let dn = slapd::user_dn(alice);
    let binds = d.binds_as(&dn);
    wait_until(
        SETTLE,
        "a fresh LDAP login after the directory came back",
        || status(&p, alice, &alice_pw) == 200 && last_audit(&p)["stale"] == false,
        || p.log_tail(),
    );
    assert!(
        d.binds_as(&dn) > binds,
        "no bind after the directory came back"
    );
    assert_eq!(status(&p, bob, &bob_pw), 200);
    assert_eq!(status(&p, alice, "wrong-password"), 401);
    assert!(p
        .log_text()
        .contains("login accepted from the credential cache (stale)"));
}
