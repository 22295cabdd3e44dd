//! An OIDC issuer's keys over time, against a real OpenID provider (`oidc-provider` from npm,
//! one for this binary): its keys rotate and a token signed by the new key is accepted after
//! one refetch; a hundred tokens with invented key ids cost at most one fetch; the issuer
//! stopped, the other backends keep working, OIDC logins answer 503 once the keys are stale and
//! come back with the issuer, without a restart of purser.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use purser_testkit::oidc::{OidcClient, OidcProvider, OIDC_WAIT};
use purser_testkit::*;
use serde_json::{json, Value};

const AUDIENCE: &str = "registry.example.com";

fn config(p: &OidcProvider, timing: Value) -> Value {
    let mut c = base_config();
    set_path(&mut c, "authn.order", json!(["static", "oidc"]));
    // Hundreds of refused tokens from one address on purpose: no address lock.
    set_path(&mut c, "limits.failed_logins.per_address_max", json!(0));
    let mut oidc = json!({
        "issuers": [{
            "issuer": p.issuer(),
            "audience": [AUDIENCE],
            "account": "ci:${claims.sub}",
            "ca_file": p.ca_file().display().to_string(),
        }],
    });
    for (k, v) in timing.as_object().unwrap() {
        oidc[k] = v.clone();
    }
    set_path(&mut c, "authn.oidc", oidc);
    c
}

fn login(purser: &Purser, token: &str) -> u16 {
    purser
        .token_get(&[("service", SERVICE)], Some(("oidc", token)))
        .status
}

fn fetches(purser: &Purser, p: &OidcProvider, outcome: &str) -> f64 {
    purser.metric(
        "purser_oidc_jwks_fetches_total",
        &[("issuer", &p.issuer()), ("outcome", outcome)],
    )
}

/// `token` with its header replaced by one naming key id `kid` (the signature no longer fits,
/// which does not matter: the key id is looked up first).
fn with_kid(token: &str, kid: &str) -> String {
    let rest = token.split_once('.').unwrap().1;
    let header = json!({ "alg": "RS256", "typ": "at+jwt", "kid": kid });
    format!(
        "{}.{rest}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes())
    )
}

#[test]
fn keys_rotate_invented_kids_are_rate_limited_and_an_outage_is_survived() {
    let mut p = OidcProvider::start(&[OidcClient::new(
        "ci",
        AUDIENCE,
        json!({ "repository": "acme/app" }),
    )]);

    // --- rotation and the refetch rate limit: a purser that refreshes only on demand.
    const MIN_INTERVAL: Duration = Duration::from_secs(5);
    let purser = Purser::start(
        config(
            &p,
            json!({ "jwks_refresh": "1h", "jwks_min_interval": "5s", "jwks_max_age": "2h" }),
        ),
        &[],
    );
    let t1 = p.token("ci");
    assert_eq!(login(&purser, &t1), 200, "{}", purser.log_tail());
    let jwks_at_start = p.requests("/jwks");
    assert_eq!(fetches(&purser, &p, "success"), 1.0, "one fetch at start");
    assert_eq!(jwks_at_start, 1, "one JWKS request at start");

    // Wait (bounded) until the last fetch is older than the rate-limit interval, so that the
    // burst may fetch once; then a hundred tokens with invented key ids: at most one fetch.
    let age = || purser.metric("purser_oidc_jwks_age_seconds", &[("issuer", &p.issuer())]);
    wait_until(
        OIDC_WAIT,
        "keys older than the refetch interval",
        || age() >= MIN_INTERVAL.as_secs_f64(),
        || purser.log_tail(),
    );
    let before = fetches(&purser, &p, "success");
    let jwks_before = p.requests("/jwks");
    let started = Instant::now();
    for _ in 0..100 {
        let status = login(&purser, &with_kid(&t1, &random_hex(8)));
        assert_eq!(status, 401);
    }
    let elapsed = started.elapsed();
    let burst = fetches(&purser, &p, "success") - before;
    println!("100 invented key ids in {elapsed:?}: {burst} fetches");
    assert!(
        elapsed < MIN_INTERVAL,
        "the burst must fit in one interval: {elapsed:?}"
    );
    assert_eq!(burst, 1.0, "one fetch for a hundred invented kids");
    assert_eq!(
        p.requests("/jwks") - jwks_before,
        1,
        "the provider saw one JWKS request"
    );

    // The issuer rotates: a new key, first, the old one still published.
    p.add_key("k2");
    p.restart();
    let t2 = p.token("ci");
    assert_eq!(Jwt::decode(&t2).header["kid"], "k2");
    let before = fetches(&purser, &p, "success");
    wait_until(
        OIDC_WAIT,
        "a token of the new key accepted",
        || login(&purser, &t2) == 200,
        || purser.log_tail(),
    );
    assert_eq!(
        fetches(&purser, &p, "success") - before,
        1.0,
        "accepted after one refetch"
    );
    assert_eq!(login(&purser, &t1), 200, "the old key is still published");

    // --- the outage: a purser that refreshes every second and drops keys after three.
    let purser = Purser::start(
        config(
            &p,
            json!({ "jwks_refresh": "1s", "jwks_min_interval": "1s", "jwks_max_age": "3s" }),
        ),
        &[],
    );
    let token = p.token("ci");
    assert_eq!(login(&purser, &token), 200);
    p.stop();
    wait_until(
        OIDC_WAIT,
        "OIDC logins answering 503 once the keys are stale",
        || login(&purser, &token) == 503,
        || purser.log_tail(),
    );
    let r = purser.token_get(&[("service", SERVICE)], Some(("oidc", &token)));
    assert!(r.header("Retry-After").is_some(), "{:?}", r.headers);
    // The static users are served all along; /readyz stays 200 and says what is degraded.
    let static_login = purser.token_get(&[("service", SERVICE)], Some(ALICE));
    assert_eq!(static_login.status, 200, "{}", static_login.text());
    let ready = Http::get(&format!("{}/readyz", purser.base_url()))
        .send()
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains(&p.issuer()), "{}", ready.text());
    assert!(fetches(&purser, &p, "failure") >= 1.0);
    wait_until(
        OIDC_WAIT,
        "the age metric showing the stale keys",
        || purser.metric("purser_oidc_jwks_age_seconds", &[("issuer", &p.issuer())]) >= 3.0,
        || purser.log_tail(),
    );

    p.restart();
    wait_until(
        OIDC_WAIT,
        "OIDC logins back with the issuer",
        || login(&purser, &token) == 200,
        || purser.log_tail(),
    );
    let ready = Http::get(&format!("{}/readyz", purser.base_url()))
        .send()
        .unwrap();
    assert!(!ready.text().contains(&p.issuer()), "{}", ready.text());
}
