//! The policy as requests meet it: `ip` rules and `X-Forwarded-For` from trusted proxies, the
//! audit record of every token request, and a live edit that lets a refused push through the
//! real registry without a restart.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_testkit::policy::*;
use purser_testkit::*;
use serde_json::{json, Value};

const IP_POLICY: &str = r#"rules:
  - name: office network
    match: { account: "*", name: "office/**", ip: ["127.0.0.0/8", "::1/128"] }
    actions: [pull, push]
  - name: vpn only
    match: { account: "*", name: "vpn/**", ip: ["10.0.0.0/8", "fd00::/8"] }
    actions: [pull, push]
"#;

const OFFICE: &str = "repository:office/app:pull,push";
const VPN: &str = "repository:vpn/app:pull,push";

fn json_logs(mut config: Value) -> Value {
    set_path(&mut config, "log.format", json!("json"));
    config
}

/// The last audit record, waiting (bounded) for the one after `before` records.
fn audit_after(p: &Purser, before: usize) -> Value {
    wait_until(
        EVENT_TIMEOUT,
        "the audit record of the request",
        || p.audit_records().len() > before,
        || p.log_tail(),
    );
    let records = p.audit_records();
    assert_eq!(
        records.len(),
        before + 1,
        "one audit record per request: {records:#?}"
    );
    records.last().cloned().expect("record")
}

fn scopes_of(record: &Value) -> Vec<Value> {
    match &record["scopes"] {
        Value::String(s) => serde_json::from_str(s).expect("scopes field is JSON"),
        Value::Array(a) => a.clone(),
        other => panic!("audit record without scopes: {other}"),
    }
}

/// (server, its name, X-Forwarded-For, granted on office/app, on vpn/app, client IP seen).
type IpCase<'a> = (
    &'a Purser,
    &'a str,
    Option<&'a str>,
    &'a [&'a str],
    &'a [&'a str],
    &'a str,
);

#[test]
fn ip_rules_grant_inside_the_cidr_only_and_forwarded_for_is_believed_only_from_trusted_proxies() {
    let direct = Purser::start(json_logs(base_config()), &[("policy.yaml", IP_POLICY)]);
    let mut proxied_config = json_logs(base_config());
    set_path(
        &mut proxied_config,
        "server.trusted_proxies",
        json!(["127.0.0.1/32"]),
    );
    let proxied = Purser::start(proxied_config, &[("policy.yaml", IP_POLICY)]);

    let both: &[&[&str]] = &[&["pull", "push"], &[]];
    let (yes, no) = (both[0], both[1]);
    let cases: Vec<IpCase> = vec![
        (&direct, "direct", None, yes, no, "127.0.0.1"),
        // From a peer that is not a trusted proxy the header is ignored.
        (&direct, "direct", Some("10.1.2.3"), yes, no, "127.0.0.1"),
        (&proxied, "proxied", None, yes, no, "127.0.0.1"),
        (&proxied, "proxied", Some("10.1.2.3"), no, yes, "10.1.2.3"),
        // The rightmost address that is not a trusted proxy is the client.
        (
            &proxied,
            "proxied",
            Some("10.9.9.9, 127.0.0.1"),
            no,
            yes,
            "10.9.9.9",
        ),
        // A client cannot smuggle an address in front of its own.
        (
            &proxied,
            "proxied",
            Some("10.1.1.1, 192.0.2.5"),
            no,
            no,
            "192.0.2.5",
        ),
        (&proxied, "proxied", Some("fd00::5"), no, yes, "fd00::5"),
    ];
    for (p, name, xff, office, vpn, client) in cases {
        let case = format!("{name} server, X-Forwarded-For {xff:?}");
        let headers: Vec<(&str, &str)> = xff.map(|v| ("X-Forwarded-For", v)).into_iter().collect();
        let before = p.audit_records().len();
        let access = grants(p, Some(ALICE), &[OFFICE, VPN], &headers);
        let got = |r: &str| access.get(r).cloned().unwrap_or_default();
        assert_eq!(got("repository:office/app"), office, "{case}: office/app");
        assert_eq!(got("repository:vpn/app"), vpn, "{case}: vpn/app");
        let record = audit_after(p, before);
        assert_eq!(record["client_ip"], client, "{case}: audited client IP");
    }

    // explain with --ip decides like the server for the same address.
    let cfg = direct.dir().join("purser.yaml").display().to_string();
    for (ip, office, vpn) in [
        ("127.0.0.1", yes, no),
        ("10.1.2.3", no, yes),
        ("192.0.2.5", no, no),
    ] {
        let out = run_purser(
            &[
                "policy",
                "explain",
                "--config",
                &cfg,
                "--account",
                "alice",
                "--ip",
                ip,
                OFFICE,
                VPN,
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = parse_explain(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(lines[0].granted, office, "explain --ip {ip}: office");
        assert_eq!(lines[1].granted, vpn, "explain --ip {ip}: vpn");
    }
}

/// Push from the office network (the proxy's own address range), pull for everyone else.
const PROXY_POLICY: &str = r#"rules:
  - name: office network
    match: { account: "*", ip: ["127.0.0.0/8"] }
    actions: [pull, push]
  - name: everyone reads
    match: { account: "*" }
    actions: [pull]
"#;

#[test]
fn a_forwarded_entry_that_is_not_an_address_is_the_client_and_never_the_proxy() {
    let mut config = json_logs(base_config());
    set_path(
        &mut config,
        "server.trusted_proxies",
        json!(["127.0.0.1/32"]),
    );
    let p = Purser::start(config, &[("policy.yaml", PROXY_POLICY)]);
    let scope = "repository:office/app:pull,push";

    // (X-Forwarded-For headers in order, granted, the audited client)
    let cases: &[(&[&str], &[&str], &str)] = &[
        // The proxy itself, for reference: it may push.
        (&[], &["pull", "push"], "127.0.0.1"),
        (&["127.0.0.9"], &["pull", "push"], "127.0.0.9"),
        // The rightmost entry is an address: the garbage the client wrote before it is ignored.
        (&["garbage, 203.0.113.9"], &["pull"], "203.0.113.9"),
        // The client hop is not an address: it is still the client, and matches no ip rule.
        (&["203.0.113.9:4711"], &["pull"], "203.0.113.9:4711"),
        (&["unknown"], &["pull"], "unknown"),
        (&["unknown, 127.0.0.1"], &["pull"], "unknown"),
        // Several headers are one chain, in order.
        (&["127.0.0.9", "garbage"], &["pull"], "garbage"),
        (&["garbage", "198.51.100.7"], &["pull"], "198.51.100.7"),
    ];
    for (xff, want, client) in cases {
        let what = format!("X-Forwarded-For {xff:?}");
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("X-Forwarded-For", *v)).collect();
        let before = p.audit_records().len();
        let access = grants(&p, Some(ALICE), &[scope], &headers);
        assert_eq!(
            access
                .get("repository:office/app")
                .cloned()
                .unwrap_or_default(),
            *want,
            "{what}: granted"
        );
        let record = audit_after(&p, before);
        assert_eq!(record["client_ip"], *client, "{what}: audited client");
        if *want == ["pull"] {
            assert_ne!(record["client_ip"], "127.0.0.1", "{what}: never the proxy");
        }
    }

    // Failed logins from such a client lock no address, the proxy's least of all: with a limit
    // of one failure, the proxy's own next request still logs in.
    let mut config = json_logs(base_config());
    set_path(
        &mut config,
        "server.trusted_proxies",
        json!(["127.0.0.1/32"]),
    );
    set_path(
        &mut config,
        "limits.failed_logins",
        json!({ "max": 1, "window": "60s", "lockout": "5m" }),
    );
    let locked = Purser::start(config, &[("policy.yaml", PROXY_POLICY)]);
    for i in 0..3 {
        let r = Http::get(&locked.token_url())
            .query(&[("service", SERVICE), ("scope", scope)])
            .basic(&format!("nobody{i}"), "wrong")
            .header("X-Forwarded-For", "unknown")
            .send()
            .expect("token request");
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let access = grants(&locked, Some(ALICE), &[scope], &[]);
    assert_eq!(
        access
            .get("repository:office/app")
            .cloned()
            .unwrap_or_default(),
        ["pull", "push"],
        "the proxy's address was not locked by its client's failures"
    );
}

#[test]
fn every_token_request_leaves_one_audit_record_without_secrets() {
    let config = json_logs(base_config());
    let hashes: Vec<String> = config["authn"]["static"]["users"]
        .as_object()
        .expect("users")
        .values()
        .map(|u| u["password_hash"].as_str().expect("hash").to_string())
        .collect();
    let p = Purser::start(config, &[]);
    let mut tokens = Vec::new();

    // 1. Granted and partly granted scopes.
    let before = p.audit_records().len();
    let r = p.token_get(
        &[
            ("service", SERVICE),
            ("account", ALICE.0),
            ("scope", "repository:alice/app:pull,push"),
            ("scope", "repository:public/x:pull,push"),
            ("scope", "repository:bob/app:pull"),
        ],
        Some(ALICE),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    tokens.push(r.json()["token"].as_str().expect("token").to_string());
    let rec = audit_after(&p, before);
    assert!(
        rec["timestamp"].as_str().is_some_and(|t| t.len() >= 20),
        "time: {rec}"
    );
    assert_eq!(rec["client_ip"], "127.0.0.1");
    assert_eq!(rec["account"], "alice");
    assert_eq!(rec["backend"], "static");
    assert_eq!(rec["outcome"], "issued");
    assert_eq!(rec["method"], "GET");
    let scopes = scopes_of(&rec);
    assert_eq!(
        scopes,
        vec![
            json!({"scope": "repository:alice/app:pull,push", "granted": ["pull", "push"], "rule": {"index": 2, "name": "alice owns alice"}}),
            json!({"scope": "repository:public/x:pull,push", "granted": ["pull"], "rule": {"index": 4, "name": "public read, anonymous too"}}),
            json!({"scope": "repository:bob/app:pull", "granted": [], "rule": null}),
        ],
        "scopes with their granted actions and deciding rule: {rec}"
    );

    // 2. A wrong password.
    let before = p.audit_records().len();
    let r = p.token_get(
        &[("service", SERVICE), ("scope", "repository:alice/app:pull")],
        Some((ALICE.0, "not-the-password")),
    );
    assert_eq!(r.status, 401);
    let rec = audit_after(&p, before);
    assert_eq!(rec["account"], "alice");
    assert_eq!(rec["outcome"], "unauthorized");
    assert_eq!(rec["backend"], "static", "the backend that refused: {rec}");
    assert!(
        p.log_text().lines().any(|l| l.contains("login refused")
            && l.contains(r#""backend":"static""#)
            && l.contains("wrong password")
            && l.contains(r#""level":"INFO""#)),
        "the refusal and its reason at info: {}",
        p.log_tail()
    );
    assert_eq!(
        scopes_of(&rec),
        Vec::<Value>::new(),
        "nothing decided: {rec}"
    );

    // 3. Anonymous.
    let before = p.audit_records().len();
    let r = p.token_get(
        &[("service", SERVICE), ("scope", "repository:public/x:pull")],
        None,
    );
    assert_eq!(r.status, 200);
    tokens.push(r.json()["token"].as_str().expect("token").to_string());
    let rec = audit_after(&p, before);
    assert_eq!(rec["account"], "");
    assert_eq!(rec["outcome"], "issued");
    assert_eq!(scopes_of(&rec)[0]["granted"], json!(["pull"]));

    // 4. The OAuth2 password grant, with a refresh token asked for.
    let before = p.audit_records().len();
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", BOB.0),
            ("password", BOB.1),
            ("service", SERVICE),
            ("client_id", "audit-test"),
            ("access_type", "offline"),
            ("scope", "repository:bob/app:pull,push"),
        ])
        .send()
        .expect("POST");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    tokens.push(
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
    );
    if let Some(rt) = body["refresh_token"].as_str() {
        tokens.push(rt.to_string());
    }
    let rec = audit_after(&p, before);
    assert_eq!(rec["method"], "POST");
    assert_eq!(rec["account"], "bob");
    assert_eq!(rec["backend"], "static");
    assert_eq!(scopes_of(&rec)[0]["granted"], json!(["pull", "push"]));

    // 5. A malformed request.
    let before = p.audit_records().len();
    let r = p.token_get(
        &[
            ("service", "not-this-one"),
            ("scope", "repository:alice/app:pull"),
        ],
        Some(ALICE),
    );
    assert_eq!(r.status, 400);
    let rec = audit_after(&p, before);
    assert_eq!(rec["outcome"], "bad_request");

    // Every line of the log is JSON, and no secret is anywhere in it.
    let log = p.log_text();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    }
    assert_eq!(p.audit_records().len(), 5, "five requests, five records");
    for secret in [ALICE.1, BOB.1, ADMIN.1, ZOE.1, "not-the-password"]
        .iter()
        .map(|s| s.to_string())
        .chain(hashes)
        .chain(tokens.iter().cloned())
        .chain(
            tokens
                .iter()
                .map(|t| t.split('.').nth(2).expect("signature").to_string()),
        )
    {
        assert!(
            !log.contains(&secret),
            "the log contains a secret: {secret:?}"
        );
    }
}

#[test]
fn the_audit_record_in_text_logs_is_one_line_per_request() {
    let p = Purser::start(base_config(), &[]);
    let before = p
        .log_text()
        .lines()
        .filter(|l| l.contains("purser::audit"))
        .count();
    p.token_for(ALICE, &["repository:alice/app:pull,push"]);
    let mut lines = Vec::new();
    wait_until(
        EVENT_TIMEOUT,
        "the audit line",
        || {
            lines = p
                .log_text()
                .lines()
                .filter(|l| l.contains("purser::audit"))
                .map(str::to_string)
                .collect();
            lines.len() > before
        },
        || p.log_tail(),
    );
    assert_eq!(lines.len(), before + 1, "{lines:#?}");
    let line = lines.last().expect("line");
    for part in [
        "client_ip=127.0.0.1",
        "account=\"alice\"",
        "backend=\"static\"",
        "outcome=\"issued\"",
        "alice owns alice",
    ] {
        assert!(
            line.contains(part),
            "the audit line should hold {part}: {line}"
        );
    }
    assert!(!p.log_text().contains(ALICE.1), "no password in the log");
}

const TEAM_POLICY: &str = r#"rules:
  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: bob reads team
    match: { account: bob, name: "team/**" }
    actions: [pull]
"#;

#[test]
fn a_refused_push_goes_through_the_registry_after_a_live_policy_edit_without_restart() {
    let s = Stack::start_with(base_config(), &[("policy.yaml", TEAM_POLICY)], None);
    let pid = s.purser.pid();
    let image = OciImage::build(2);

    let refused = s
        .skopeo
        .push(&image, &s.registry, "team/app:1", Creds::of(BOB));
    assert!(
        !refused.ok,
        "bob may only pull team/**, yet his push went through\n{}",
        s.logs()
    );
    assert_eq!(
        granted(&s.purser, Some(BOB), "repository:team/app:pull,push"),
        ["pull"]
    );
    assert!(!s.exists("team/app:1"), "nothing was pushed");

    let policy = s.purser.dir().join("policy.yaml");
    write_by_rename(
        &policy,
        &TEAM_POLICY.replace(
            "name: bob reads team\n    match: { account: bob, name: \"team/**\" }\n    actions: [pull]",
            "name: bob pushes team\n    match: { account: bob, name: \"team/**\" }\n    actions: [pull, push]",
        ),
    );
    wait_until(
        EVENT_TIMEOUT,
        "the edit granting bob push on team/**",
        || granted(&s.purser, Some(BOB), "repository:team/app:pull,push") == ["pull", "push"],
        || s.logs(),
    );

    s.push_ok(&image, "team/app:1", Creds::of(BOB));
    s.pull_identical(&image, "team/app:1", Creds::of(BOB));
    assert_eq!(
        s.purser.pid(),
        pid,
        "the same purser process served throughout"
    );
    assert_eq!(
        s.purser.log_text().matches("purser serving").count(),
        1,
        "purser started once\n{}",
        s.purser.log_tail()
    );
}
