//! Refresh tokens over real HTTP: a session ends at the first login plus
//! `token.refresh_lifetime` however often it is refreshed (the refresh grant hands back the
//! same refresh token), a password change ends the sessions opened with the old password, and
//! refresh grants go through the failed-login limit.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use purser_testkit::*;
use serde_json::{json, Value};

/// Bound for a live reload to be seen.
const SETTLE: Duration = Duration::from_secs(20);

/// A refresh token from a POST password grant with `access_type=offline`.
fn login_refresh(p: &Purser, user: (&str, &str)) -> String {
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", user.0),
            ("password", user.1),
            ("service", SERVICE),
            ("client_id", "e2e"),
            ("scope", "repository:alice/app:pull"),
            ("access_type", "offline"),
        ])
        .send()
        .expect("password grant");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string()
}

/// A refresh grant as docker sends it, asking for a refresh token back.
fn refresh(p: &Purser, token: &str, from: Option<&str>) -> HttpResponse {
    let mut req = Http::post(&p.token_url()).form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("service", SERVICE),
        ("client_id", "docker"),
        ("scope", "repository:alice/app:pull"),
        ("access_type", "offline"),
    ]);
    if let Some(ip) = from {
        req = req.header("X-Forwarded-For", ip);
    }
    req.send().expect("refresh grant")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn assert_invalid_grant(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    assert_eq!(r.json()["error"], "invalid_grant", "{what}: {}", r.text());
}

#[test]
fn a_refresh_grant_hands_back_the_same_token_and_the_session_ends_on_time() {
    let mut c = base_config();
    set_path(&mut c, "token.refresh_lifetime", json!("4s"));
    let p = Purser::start(c, &[]);
    let rt = login_refresh(&p, ALICE);
    let exp = Jwt::decode(&rt).claims["exp"].as_i64().expect("exp");

    // Refreshed repeatedly, the session keeps its one refresh token and its one end.
    for _ in 0..3 {
        let r = refresh(&p, &rt, None);
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(
            body["refresh_token"].as_str(),
            Some(rt.as_str()),
            "a refresh grant must return the refresh token it was given, not a new one"
        );
        assert!(body["access_token"].is_string(), "{body}");
    }

    // Past the first login plus the refresh lifetime, the session is over.
    wait_until(
        Duration::from_secs(10),
        "the refresh token's end",
        || now_secs() >= exp,
        || p.log_tail(),
    );
    assert_invalid_grant(&refresh(&p, &rt, None), "refresh after the session's end");
    let log = p.log_text();
    assert!(secret_in_log(&log).is_none(), "a secret in the log");
}

fn reloaded_after(p: &Purser, written: f64) -> bool {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    parse_metrics(&r.text())
        .get(r#"purser_reload_last_success_timestamp_seconds{source="htpasswd"}"#)
        .is_some_and(|t| *t > written)
}

#[test]
fn an_htpasswd_password_change_ends_the_sessions_of_the_old_password() {
    let line = htpasswd(&["-n", "-b", "-B", "-C", "4", "grace", "grace-pw-1"]);
    let other = htpasswd(&["-n", "-b", "-B", "-C", "4", "heidi", "heidi-pw"]);
    let users = format!("{}\n{}\n", line.trim_end(), other.trim_end());
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["htpasswd"]));
    set_path(&mut c, "authn.htpasswd.file", json!("users.htpasswd"));
    let p = Purser::start(c, &[("users.htpasswd", &users)]);
    let file = p.dir().join("users.htpasswd").display().to_string();

    let grace = login_refresh(&p, ("grace", "grace-pw-1"));
    let heidi = login_refresh(&p, ("heidi", "heidi-pw"));
    assert_eq!(refresh(&p, &grace, None).status, 200);

    // grace's password changes in the file; heidi's line is untouched.
    htpasswd(&["-b", "-B", "-C", "4", &file, "grace", "grace-pw-2"]);
    let written = fs::metadata(&file)
        .and_then(|m| m.modified())
        .expect("mtime")
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    wait_until(
        SETTLE,
        "the htpasswd reload after the password change",
        || reloaded_after(&p, written),
        || p.log_tail(),
    );
    let r = refresh(&p, &grace, None);
    assert_invalid_grant(&r, "refresh of a session opened with the old password");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("password"),
        "the refusal should say the password changed: {}",
        r.text()
    );
    // Other users' sessions go on; the new password opens a new session.
    assert_eq!(refresh(&p, &heidi, None).status, 200, "{}", p.log_tail());
    let fresh = login_refresh(&p, ("grace", "grace-pw-2"));
    assert_eq!(refresh(&p, &fresh, None).status, 200, "{}", p.log_tail());
}

#[test]
fn a_static_password_change_ends_the_sessions_of_the_old_password() {
    // One config for both runs: base_config() hashes every password anew (new salts).
    let config = base_config();
    let first = Purser::start(config.clone(), &[]);
    let key = fs::read_to_string(first.key_file()).expect("key");
    let cert = fs::read_to_string(first.cert_file()).expect("cert");
    let alice_rt = login_refresh(&first, ALICE);
    let bob_rt = login_refresh(&first, BOB);
    drop(first);

    // The same key, alice's password changed in the static config, bob's as it was.
    let mut changed = config;
    set_path(
        &mut changed,
        "authn.static.users.alice.password_hash",
        Value::String(bcrypt_hash("alice-new-secret")),
    );
    let second = Purser::start(changed, &[(KEY_PATH, &key), ("keys/signing.crt", &cert)]);
    assert_invalid_grant(
        &refresh(&second, &alice_rt, None),
        "alice's session from before her password change",
    );
    assert_eq!(
        refresh(&second, &bob_rt, None).status,
        200,
        "bob's unchanged password must keep his session across the restart: {}",
        second.log_tail()
    );
    let fresh = login_refresh(&second, ("alice", "alice-new-secret"));
    assert_eq!(refresh(&second, &fresh, None).status, 200);
}

#[test]
fn refresh_grants_are_refused_while_the_account_or_address_is_locked() {
    let mut c = base_config();
    set_path(
        &mut c,
        "limits.failed_logins",
        json!({ "max": 3, "per_address_max": 3, "window": "60s", "lockout": "300s" }),
    );
    set_path(&mut c, "server.trusted_proxies", json!(["127.0.0.1/32"]));
    let p = Purser::start(c, &[]);
    let rt = login_refresh(&p, ALICE);
    assert_eq!(refresh(&p, &rt, Some("192.0.2.10")).status, 200);

    // Three wrong passwords for alice from elsewhere lock her account ...
    for i in 0..3 {
        let r = Http::get(&p.token_url())
            .query(&[("service", SERVICE)])
            .basic("alice", &format!("wrong-{i}"))
            .header("X-Forwarded-For", "198.51.100.1")
            .send()
            .expect("token request");
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // ... and her refresh token with it, from an address she never logged in from ...
    let r = refresh(&p, &rt, Some("192.0.2.11"));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    // ... but not from the one her last grant came from: it is trusted by her account.
    assert_eq!(refresh(&p, &rt, Some("192.0.2.10")).status, 200);

    // Invalid refresh tokens count as failed logins of their address.
    let junk = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    for _ in 0..3 {
        assert_invalid_grant(&refresh(&p, junk, Some("203.0.113.5")), "junk");
    }
    let r = refresh(&p, junk, Some("203.0.113.5"));
    assert_eq!(r.status, 429, "{}", r.text());
    // Another address is not affected.
    assert_invalid_grant(&refresh(&p, junk, Some("203.0.113.6")), "junk elsewhere");
}
