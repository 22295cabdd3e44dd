//! The token endpoint over real HTTP: the claims of issued tokens, and answers to bad input.
//! Each test starts its own purser.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::collections::BTreeSet;

use purser_testkit::*;
use serde_json::{json, Value};

fn config_with_lifetime(lifetime: &str) -> Value {
    let mut c = base_config();
    set_path(&mut c, "token.lifetime", json!(lifetime));
    c
}

fn get(p: &Purser, creds: (&str, &str), scopes: &[&str]) -> HttpResponse {
    let mut q = vec![("service", SERVICE), ("account", creds.0)];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    p.token_get(&q, Some(creds))
}

fn actions_of(jwt: &Jwt, name: &str) -> BTreeSet<String> {
    jwt.claims["access"]
        .as_array()
        .expect("access is an array")
        .iter()
        .filter(|e| e["name"] == name)
        .flat_map(|e| e["actions"].as_array().expect("actions").clone())
        .map(|a| a.as_str().expect("action string").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn issued_tokens_carry_the_contract_claims() {
    let p = Purser::start(config_with_lifetime("7m"), &[]);
    let cert = p.cert_file();

    let r = get(
        &p,
        ALICE,
        &["repository:alice/app:pull,push", "repository:bob/x:pull"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["token"], body["access_token"], "token == access_token");
    assert_eq!(body["expires_in"], json!(420), "{body}");
    assert!(
        body["issued_at"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token unless asked"
    );

    let jwt = Jwt::decode(body["token"].as_str().expect("token"));
    jwt.verify_with_cert(&cert, ISSUER, SERVICE);
    assert_eq!(jwt.header["typ"], "JWT");
    assert_eq!(jwt.header["alg"], "RS256");
    assert_eq!(jwt.header["kid"], json!(libtrust_kid_openssl(&cert, true)));

    let c = &jwt.claims;
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "alice");
    assert!(c["aud"].is_string(), "aud must be a JSON string: {c}");
    assert_eq!(c["aud"], SERVICE);
    for k in ["exp", "nbf", "iat"] {
        assert!(c[k].is_u64(), "{k} must be an integer: {c}");
    }
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 420);
    assert!(c["nbf"].as_u64().unwrap() <= c["iat"].as_u64().unwrap() + 1);
    let jti = c["jti"].as_str().expect("jti");
    assert!(jti.len() >= 16, "jti too short for 128 bits: {jti}");

    // One entry per requested resource, never more than requested.
    let access = c["access"].as_array().expect("access");
    assert_eq!(access.len(), 2, "{access:?}");
    assert_eq!(actions_of(&jwt, "alice/app"), set(&["pull", "push"]));
    assert_eq!(actions_of(&jwt, "bob/x"), set(&[]));

    // A second token has another jti.
    let again = Jwt::decode(&p.token_for(ALICE, &["repository:alice/app:pull"]));
    assert_ne!(again.claims["jti"], c["jti"]);
    // The policy grants alice pull, push and delete; she asked for pull only.
    assert_eq!(actions_of(&again, "alice/app"), set(&["pull"]));

    // "*" in the policy is every *requested* action, not more.
    let admin = Jwt::decode(&p.token_for(ADMIN, &["repository:any/thing:pull"]));
    assert_eq!(actions_of(&admin, "any/thing"), set(&["pull"]));
    let admin = Jwt::decode(&p.token_for(ADMIN, &["repository:any/thing:*"]));
    assert!(actions_of(&admin, "any/thing").is_subset(&set(&["*"])));

    // The class of repository(plugin) is dropped; a name with host:port is kept whole.
    let odd = Jwt::decode(&p.token_for(
        ADMIN,
        &[
            "repository(plugin):public/p:pull",
            "repository:localhost:5000/public/x:pull",
        ],
    ));
    let access = odd.claims["access"].as_array().unwrap();
    assert!(
        access.contains(&json!({"type": "repository", "name": "public/p", "actions": ["pull"]})),
        "{access:?}"
    );
    assert!(
        access
            .iter()
            .any(|e| e["name"] == "localhost:5000/public/x"),
        "{access:?}"
    );

    // The JWKS lists the signing key under the same kid.
    let jwks = Http::get(&format!("{}/.well-known/jwks.json", p.base_url()))
        .send()
        .unwrap();
    assert_eq!(jwks.status, 200);
    let keys = jwks.json()["keys"].as_array().expect("keys").clone();
    assert!(
        keys.iter()
            .any(|k| k["kid"] == jwt.header["kid"] && k["use"] == "sig"),
        "{keys:?}"
    );

    // Metrics count what happened, on the metrics listener.
    let m = Http::get(&p.metrics_url()).send().expect("metrics");
    assert_eq!(m.status, 200);
    let metrics = parse_metrics(&m.text());
    let issued: f64 = metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with("purser_token_requests_total{")
                && k.contains("method=\"GET\"")
                && k.contains("outcome=\"issued\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert!(
        issued >= 5.0,
        "issued GET requests counted: {issued}\n{}",
        m.text()
    );
}

#[test]
fn anonymous_requests_get_account_empty_and_public_pull_only() {
    let p = Purser::start(base_config(), &[]);
    let r = p.token_get(
        &[
            ("service", SERVICE),
            ("scope", "repository:public/base:pull,push"),
            ("scope", "repository:alice/app:pull"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt = Jwt::decode(r.json()["token"].as_str().unwrap());
    assert_eq!(jwt.claims["sub"], "");
    assert_eq!(actions_of(&jwt, "public/base"), set(&["pull"]));
    assert_eq!(actions_of(&jwt, "alice/app"), set(&[]));
}

#[test]
fn post_grants_answer_oauth2_with_chunked_bodies() {
    let p = Purser::start(base_config(), &[]);
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE.1),
            ("service", SERVICE),
            ("client_id", "e2e"),
            ("scope", "repository:alice/app:pull repository:alice/b:push"),
            ("access_type", "offline"),
        ])
        .chunked()
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let access = Jwt::decode(body["access_token"].as_str().expect("access_token"));
    assert_eq!(actions_of(&access, "alice/app"), set(&["pull"]));
    assert_eq!(actions_of(&access, "alice/b"), set(&["push"]));
    assert!(body["expires_in"].is_u64(), "{body}");
    assert!(body["issued_at"].is_string(), "{body}");
    assert!(body["scope"].is_string(), "{body}");
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh_token with access_type=offline");

    // The refresh grant as containers/image sends it: chunked, no Authorization header.
    let r = Http::post(&p.token_url())
        .form(&[
            ("client_id", "containers/image"),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("scope", "repository:alice/app:pull"),
            ("service", SERVICE),
        ])
        .chunked()
        .send()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let refreshed = Jwt::decode(r.json()["access_token"].as_str().unwrap());
    assert_eq!(refreshed.claims["sub"], "alice");
    assert_eq!(actions_of(&refreshed, "alice/app"), set(&["pull"]));

    // Errors follow RFC 6749 5.2.
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope"),
            ("service", SERVICE),
        ])
        .send()
        .unwrap();
    assert!(r.status == 400 || r.status == 401, "{}", r.status);
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
    let r = Http::post(&p.token_url())
        .form(&[("grant_type", "client_credentials"), ("service", SERVICE)])
        .send()
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "unsupported_grant_type", "{}", r.text());
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "not-a-token"),
            ("service", SERVICE),
        ])
        .send()
        .unwrap();
    assert!(r.status == 400 || r.status == 401, "{}", r.status);
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
}

/// Asserts a 4xx with the contract's `{"errors":[{"code","message"}]}` body.
fn assert_error(r: &HttpResponse, statuses: &[u16], codes: &[&str], what: &str) {
    assert!(
        statuses.contains(&r.status),
        "{what}: status {} body {}",
        r.status,
        r.text()
    );
    let body = r.json();
    let err = &body["errors"][0];
    let code = err["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "{what}: code {code:?} not in {codes:?}: {body}"
    );
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no message: {body}"
    );
}

fn assert_still_serving(p: &Purser, after: &str) {
    let r = get(p, ALICE, &["repository:alice/app:pull"]);
    assert_eq!(
        r.status,
        200,
        "no token after {after}: {}\n{}",
        r.text(),
        p.log_tail()
    );
}

#[test]
fn bad_input_gets_a_4xx_and_the_server_stays_up() {
    let mut p = Purser::start(base_config(), &[]);
    let bad_request = ["DENIED", "UNSUPPORTED"];

    for scope in ["repository", "repository:alice/app"] {
        let r = get(&p, ALICE, &[scope]);
        assert_error(
            &r,
            &[400],
            &bad_request,
            &format!("malformed scope {scope:?}"),
        );
        assert_still_serving(&p, "a malformed scope");
    }

    let r = p.token_get(
        &[
            ("service", "not.my.registry"),
            ("account", "alice"),
            ("scope", "repository:alice/app:pull"),
        ],
        Some(ALICE),
    );
    assert_error(&r, &[400], &bad_request, "unknown service");
    assert_still_serving(&p, "an unknown service");

    let many: Vec<String> = (0..1000)
        .map(|i| format!("repository:alice/r{i}:pull"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = get(&p, ALICE, &refs);
    assert_error(&r, &[400], &bad_request, "1000 scopes");
    assert_still_serving(&p, "1000 scopes");

    let r = p.token_get(
        &[
            ("service", SERVICE),
            ("account", "bob"),
            ("scope", "repository:bob/app:push"),
        ],
        Some(ALICE),
    );
    assert_error(&r, &[400], &bad_request, "account is not the user");
    assert_still_serving(&p, "a foreign account");

    let r = Http::get(&p.token_url())
        .query(&[("service", SERVICE), ("scope", "repository:alice/app:pull")])
        .header("Authorization", "Basic !!!not*base64%%%")
        .send()
        .unwrap();
    // A malformed Basic header is a failed authentication: the challenge, not a 400.
    assert_error(&r, &[401], &["UNAUTHORIZED"], "Basic not base64");
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Basic realm=\"{ISSUER}\"").as_str())
    );
    assert_still_serving(&p, "a Basic header that is not base64");

    let r = get(
        &p,
        ("alice", "Wr0ng-e2e-Pa55"),
        &["repository:alice/app:pull"],
    );
    assert_error(&r, &[401], &["UNAUTHORIZED"], "wrong password");
    let www = r.header("www-authenticate").unwrap_or_default();
    assert_eq!(www, format!("Basic realm=\"{ISSUER}\""));
    let r = get(&p, ("nobody", "x"), &["repository:alice/app:pull"]);
    assert_error(&r, &[401], &["UNAUTHORIZED"], "unknown user");
    assert_still_serving(&p, "wrong credentials");

    // A password with ':' and a non-ASCII user name work.
    let r = get(&p, ZOE, &["repository:public/app:pull"]);
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt = Jwt::decode(r.json()["token"].as_str().unwrap());
    assert_eq!(jwt.claims["sub"], "zoë");

    let log = p.log_text();
    for secret in [ALICE.1, "Wr0ng-e2e-Pa55", ZOE.1] {
        assert!(!log.contains(secret), "a password reached the log");
    }
    assert!(p.is_running());
    let health = Http::get(&format!("{}/healthz", p.base_url()))
        .send()
        .unwrap();
    assert_eq!(health.status, 200);
}

#[test]
fn a_hash_from_purser_hash_password_logs_the_user_in() {
    // As an operator would: `echo PASSWORD | purser hash-password --cost 4`.
    let out = run_purser(&["hash-password", "--cost", "4"], "dave:pw é\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    assert!(hash.starts_with("$2"), "a bcrypt hash: {hash}");
    assert!(
        bcrypt::verify("dave:pw é", &hash).expect("valid bcrypt"),
        "hash of the line without its newline"
    );

    let mut config = base_config();
    set_path(
        &mut config,
        "authn.static.users.dave",
        json!({ "password_hash": hash, "groups": [] }),
    );
    let p = Purser::start(config, &[]);
    let jwt = Jwt::decode(&p.token_for(("dave", "dave:pw é"), &["repository:dave/app:push"]));
    assert_eq!(jwt.claims["sub"], "dave");
    assert_eq!(actions_of(&jwt, "dave/app"), set(&["push"]));
    let r = get(&p, ("dave", "dave:pw"), &[]);
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn every_token_answer_forbids_caching_success_and_error_get_and_post() {
    let p = Purser::start(base_config(), &[]);
    let url = p.token_url();
    let scope = ("scope", "repository:alice/app:pull");
    let answers = [
        ("GET issued", get(&p, ALICE, &["repository:alice/app:pull"])),
        (
            "GET wrong password",
            get(&p, (ALICE.0, "wrong"), &["repository:alice/app:pull"]),
        ),
        ("GET malformed scope", get(&p, ALICE, &["repository"])),
        (
            "GET malformed Basic",
            Http::get(&url)
                .query(&[("service", SERVICE), scope])
                .header("Authorization", "Basic !!!")
                .send()
                .unwrap(),
        ),
        (
            "POST issued",
            Http::post(&url)
                .form(&[
                    ("grant_type", "password"),
                    ("service", SERVICE),
                    ("username", ALICE.0),
                    ("password", ALICE.1),
                    ("scope", "repository:alice/app:pull"),
                ])
                .send()
                .unwrap(),
        ),
        (
            "POST wrong password",
            Http::post(&url)
                .form(&[
                    ("grant_type", "password"),
                    ("service", SERVICE),
                    ("username", ALICE.0),
                    ("password", "wrong"),
                ])
                .send()
                .unwrap(),
        ),
        (
            "POST unsupported grant",
            Http::post(&url)
                .form(&[("grant_type", "client_credentials"), ("service", SERVICE)])
                .send()
                .unwrap(),
        ),
        (
            "POST bad refresh token",
            Http::post(&url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("service", SERVICE),
                    ("refresh_token", "not.a.token"),
                ])
                .send()
                .unwrap(),
        ),
        (
            "PUT (method not allowed)",
            Http::new("PUT", &url).send().unwrap(),
        ),
    ];
    let mut statuses = BTreeSet::new();
    for (what, r) in &answers {
        statuses.insert(r.status);
        assert_eq!(
            r.header("cache-control"),
            Some("no-store"),
            "{what}: {}",
            r.status
        );
        assert_eq!(
            r.header("pragma"),
            Some("no-cache"),
            "{what}: {} (RFC 6749 5.1)",
            r.status
        );
    }
    assert_eq!(
        statuses,
        BTreeSet::from([200, 400, 401, 405]),
        "successes and errors"
    );
}

#[test]
fn malformed_basic_credentials_are_a_401_challenge_that_counts_against_no_one() {
    let mut config = base_config();
    // One failure would lock an account or an address, were any counted.
    set_path(
        &mut config,
        "limits.failed_logins",
        json!({ "max": 1, "window": "60s", "lockout": "5m" }),
    );
    // Debug level: the refusal is logged (without the header's content).
    set_path(&mut config, "log.level", json!("debug"));
    set_path(&mut config, "authn.anonymous", json!(false));
    let p = Purser::start(config, &[]);
    let url = p.token_url();
    let marker = "alice-marker-9f3";
    let b64 = |raw: &[u8]| data_encoding::BASE64.encode(raw);
    let malformed: Vec<(&str, Vec<String>)> = vec![
        ("not base64", vec![format!("Basic !!!{marker}%%%")]),
        (
            "no colon",
            vec![format!("Basic {}", b64(marker.as_bytes()))],
        ),
        ("another scheme", vec![format!("Bearer {marker}")]),
        (
            "not UTF-8 inside",
            vec![format!("Basic {}", b64(b"alice:\xff\xfe-alice-marker-9f3"))],
        ),
        (
            "a NUL byte",
            vec![format!("Basic {}", b64(b"alice\0:alice-marker-9f3"))],
        ),
        (
            "two Authorization headers",
            vec![
                format!("Basic {}", b64(format!("alice:{marker}").as_bytes())),
                format!("Basic {}", b64(format!("bob:{marker}").as_bytes())),
            ],
        ),
    ];
    let check = |what: &str, r: &HttpResponse| {
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(
            r.header("www-authenticate"),
            Some(format!("Basic realm=\"{ISSUER}\"").as_str()),
            "{what}"
        );
        let body = r.json();
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{what}: {body}");
        assert!(
            !r.text().contains(marker),
            "{what}: the header is echoed: {}",
            r.text()
        );
    };
    for (what, values) in &malformed {
        // Each shape three times: more than the limit of one failure.
        for _ in 0..3 {
            let mut get_req = Http::get(&url)
                .query(&[("service", SERVICE), ("scope", "repository:alice/app:pull")]);
            let mut post_req = Http::post(&url)
                .form(&[("service", SERVICE), ("scope", "repository:alice/app:pull")]);
            for v in values {
                get_req = get_req.header("Authorization", v);
                post_req = post_req.header("Authorization", v);
            }
            check(&format!("GET, {what}"), &get_req.send().unwrap());
            // POST without grant_type and with Basic credentials is the same request.
            let r = post_req.send().unwrap();
            check(&format!("POST, {what}"), &r);
            assert_eq!(r.json()["error"], "invalid_grant", "POST, {what}");
        }
    }

    // Nothing was counted: neither alice (named in some headers) nor the address is locked.
    let r = get(&p, ALICE, &["repository:alice/app:pull"]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());

    let log = p.log_text();
    assert!(
        log.contains("Authorization header refused"),
        "the refusal is logged: {}",
        p.log_tail()
    );
    assert!(!log.contains(marker), "a header's content reached the log");
    assert!(
        !log.contains(&b64(format!("alice:{marker}").as_bytes())),
        "a header's content reached the log"
    );
}
