//! End to end with a real OpenLDAP directory (`slapd`, started by `purser_testkit::slapd`):
//! directory groups through the real registry, injection through the token endpoint, an outage
//! and its recovery, and many concurrent logins through the service-account pool. Each test
//! starts its own processes.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::time::{Duration, Instant};

use purser_testkit::slapd::{self, Slapd};
use purser_testkit::*;
use serde_json::{json, Value};

const POOL_SIZE: usize = 4;
/// Bound for waits that are not themselves under test.
const SETTLE: Duration = Duration::from_secs(30);

/// The e2e config with only `admin` as a static user, then the directory in search-then-bind
/// mode with groups.
fn ldap_config(d: &Slapd) -> Value {
    slapd::config_behind_admin(merged(
        d.search_bind(),
        json!({ "group_base": slapd::GROUPS,
            "group_filter": "(member={dn})",
            "group_name_attribute": "cn",
            "timeout": "3s",
            "pool_size": POOL_SIZE,
        }),
    ))
}

fn team_policy() -> String {
    format!(
        "{POLICY}  - name: team repos\n    match: {{ groups: [developers], type: repository, name: \"team/**\" }}\n    actions: [pull, push]\n"
    )
}

fn login(p: &Purser, user: &str, password: &str) -> HttpResponse {
    p.token_get(&[("service", SERVICE)], Some((user, password)))
}

fn readyz(p: &Purser) -> HttpResponse {
    Http::get(&format!("{}/readyz", p.base_url()))
        .send()
        .expect("GET /readyz")
}

fn metrics(p: &Purser) -> std::collections::BTreeMap<String, f64> {
    let r = Http::get(&p.metrics_url()).send().expect("GET /metrics");
    parse_metrics(&r.text())
}

fn ldap_password(uid: &str) -> String {
    slapd::password_of(uid)
}

#[test]
fn directory_developers_push_to_team_and_their_groups_reach_audit_and_explain() {
    let d = Slapd::start();
    let s = Stack::start_with(ldap_config(&d), &[("policy.yaml", &team_policy())], None);
    let dev_pw = ldap_password("user01");
    let bob_pw = ldap_password("bob");
    let image = OciImage::build(1);

    s.push_ok(&image, "team/app:1", Creds::User("user01", &dev_pw));
    s.pull_identical(&image, "team/app:1", Creds::User("user01", &dev_pw));

    let out = s.skopeo.push(
        &image,
        &s.registry,
        "team/app:2",
        Creds::User("bob", &bob_pw),
    );
    assert!(
        !out.ok,
        "bob (in no group) pushed to team/**:\n{}",
        out.stdout
    );
    assert!(!s.exists("team/app:2"), "bob's push left an image");

    // The audit record carries the directory's groups.
    let log = s.purser.log_text();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("purser::audit"))
        .collect();
    assert!(
        audit.iter().any(|l| l.contains("account=\"user01\"")
            && l.contains("backend=\"ldap\"")
            && l.contains(r#"groups=["developers"]"#)
            && l.contains("team repos")),
        "no audit record of user01 with the developers group:\n{}",
        audit.join("\n")
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("account=\"bob\"") && l.contains("groups=[]")),
        "no audit record of bob without groups:\n{}",
        audit.join("\n")
    );

    // The same decision from the command line, groups given explicitly.
    let cfg = s.purser.dir().join("purser.yaml").display().to_string();
    let explain = |groups: &[&str]| {
        let mut args = vec!["policy", "explain", "--config", &cfg, "--account", "user01"];
        for g in groups {
            args.extend(["--group", g]);
        }
        args.push("repository:team/app:pull,push");
        let out = run_purser(&args, "");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "purser policy explain failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let with = explain(&["developers"]);
    assert!(
        with.contains("team repos") && with.contains("push"),
        "explain --group developers does not grant push by `team repos`:\n{with}"
    );
    let without = explain(&[]);
    assert!(
        !without.contains("team repos"),
        "explain without the group still names `team repos`:\n{without}"
    );
}

#[test]
fn injection_user_names_log_nobody_in_and_never_fail_the_server() {
    let d = Slapd::start();
    let p = Purser::start(ldap_config(&d), &[]);
    let alice_pw = ldap_password("alice");
    assert_eq!(
        login(&p, "alice", &alice_pw).status,
        200,
        "{}",
        p.log_tail()
    );
    let alice_dn = slapd::user_dn("alice");
    let alice_binds = d.binds_as(&alice_dn);

    for name in [
        "*",
        "alice)(uid=*",
        "alice*",
        "\\",
        "*)(|(uid=*",
        "alice\\2a",
    ] {
        for password in [alice_pw.as_str(), "*", "x"] {
            let r = login(&p, name, password);
            assert_eq!(
                r.status,
                401,
                "user name {name:?}: {} {}\n{}",
                r.status,
                r.text(),
                p.log_tail()
            );
        }
    }
    // A NUL byte in the Basic credentials or the POST form is a client error.
    for name in ["alice\0", "\0", "al\0ice"] {
        let r = login(&p, name, &alice_pw);
        assert!(
            (400..500).contains(&r.status),
            "NUL in the Basic user name: {} {}",
            r.status,
            r.text()
        );
        let r = Http::post(&p.token_url())
            .form(&[
                ("grant_type", "password"),
                ("username", name),
                ("password", &alice_pw),
                ("service", SERVICE),
            ])
            .send()
            .expect("POST token");
        assert!(
            (400..500).contains(&r.status),
            "NUL in the form user name: {} {}",
            r.status,
            r.text()
        );
    }
    // An empty password is refused before any bind (an empty simple bind is anonymous).
    assert_eq!(login(&p, "alice", "").status, 401);
    assert_eq!(
        d.binds_as(&alice_dn),
        alice_binds,
        "a refused request bound as alice"
    );
    assert!(!p.log_text().contains("panicked"), "{}", p.log_tail());
    assert_eq!(login(&p, "alice", &alice_pw).status, 200);
}

#[test]
fn directory_outage_answers_503_static_users_still_work_and_logins_recover() {
    let mut d = Slapd::start();
    let p = Purser::start(ldap_config(&d), &[]);
    assert_eq!(
        login(&p, "user01", &ldap_password("user01")).status,
        200,
        "{}",
        p.log_tail()
    );

    d.stop();
    // user02 has not logged in yet, so no cached login can answer for the directory.
    let started = Instant::now();
    let r = login(&p, "user02", &ldap_password("user02"));
    println!(
        "token request during the outage answered {} in {:?} (ldap timeout 3s)",
        r.status,
        started.elapsed()
    );
    assert_eq!(r.status, 503, "{}\n{}", r.text(), p.log_tail());
    let retry = r.header("Retry-After").expect("503 without Retry-After");
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After {retry:?}"
    );
    // A wrong password is no different while the directory is away: never a 401.
    assert_eq!(login(&p, "user03", "wrong").status, 503);
    let r = Http::post(&p.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "user02"),
            ("password", &ldap_password("user02")),
            ("service", SERVICE),
        ])
        .send()
        .expect("POST token");
    assert_eq!(r.status, 503, "POST during the outage: {}", r.text());
    assert!(
        r.header("Retry-After").is_some(),
        "POST 503 without Retry-After"
    );
    assert_eq!(login(&p, ADMIN.0, ADMIN.1).status, 200, "{}", p.log_tail());
    wait_until(
        SETTLE,
        "/readyz answering 503 naming ldap",
        || {
            let r = readyz(&p);
            r.status == 503 && r.text().contains("ldap")
        },
        || p.log_tail(),
    );
    println!("/readyz during the outage: {}", readyz(&p).text());
    let m = metrics(&p);
    assert!(
        m.get(r#"purser_token_requests_total{method="GET",outcome="unavailable"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 2.0,
        "unavailable requests not counted"
    );

    d.start_again();
    wait_until(
        SETTLE,
        "LDAP logins after the directory came back",
        || login(&p, "user02", &ldap_password("user02")).status == 200,
        || p.log_tail(),
    );
    wait_until(
        SETTLE,
        "/readyz answering 200 after the directory came back",
        || readyz(&p).status == 200,
        || p.log_tail(),
    );
    assert_eq!(login(&p, "user03", &ldap_password("user03")).status, 200);
    assert_eq!(login(&p, "user03", "wrong").status, 401);
}

#[test]
fn two_hundred_concurrent_logins_stay_within_the_service_pool() {
    let d = Slapd::start();
    let mut config = ldap_config(&d);
    // Every login must reach the directory.
    set_path(&mut config, "authn.cache_ttl", json!("0s"));
    set_path(&mut config, "authn.ldap.timeout", json!("20s"));
    let p = Purser::start(config, &[]);
    let users = slapd::numbered_users();

    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let user = users[i % users.len()].clone();
                let p = &p;
                scope.spawn(move || {
                    let r = login(p, &user, &ldap_password(&user));
                    if r.status != 200 {
                        return Some(format!("{user}: {} {}", r.status, r.text()));
                    }
                    let token = r.json()["token"].as_str().unwrap_or_default().to_string();
                    let sub = Jwt::decode(&token).claims["sub"].clone();
                    (sub != json!(user)).then(|| format!("{user}: token for {sub}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("login thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 200 logins failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        p.log_tail()
    );

    let seen = d.peak_connections_bound_as(slapd::SERVICE_DN);
    println!(
        "the directory saw at most {seen} service connections at once (pool_size {POOL_SIZE})"
    );
    assert!(
        (1..=POOL_SIZE).contains(&seen),
        "the directory saw {seen} service connections at once (pool_size {POOL_SIZE})"
    );

    let m = metrics(&p);
    let accepted = m
        .get(r#"purser_authn_attempts_total{backend="ldap",outcome="accepted"}"#)
        .copied()
        .unwrap_or(0.0);
    assert!(accepted >= 200.0, "ldap accepted {accepted} logins");
    // The pool gauges are exported and never above pool_size.
    wait_until(
        SETTLE,
        "purser_ldap_pool_connections showing idle connections",
        || {
            let m = metrics(&p);
            let get = |s: &str| {
                m.get(&format!("purser_ldap_pool_connections{{state=\"{s}\"}}"))
                    .copied()
            };
            matches!((get("idle"), get("busy")), (Some(i), Some(0.0)) if i >= 1.0)
        },
        || p.log_tail(),
    );
    let m = metrics(&p);
    let open = m[r#"purser_ldap_pool_connections{state="idle"}"#]
        + m[r#"purser_ldap_pool_connections{state="busy"}"#];
    assert!(open <= POOL_SIZE as f64, "{open} pooled connections");
}

/// The actions the token of `user` grants on the repository `repo` (asked for pull and push),
/// from its `access` claim; panics unless 200.
fn repo_actions(p: &Purser, user: &str, repo: &str) -> Vec<String> {
    let scope = format!("repository:{repo}:pull,push");
    let r = p.token_get(
        &[("service", SERVICE), ("scope", &scope)],
        Some((user, &ldap_password(user))),
    );
    assert_eq!(
        r.status,
        200,
        "{user} {repo}: {}\n{}",
        r.text(),
        p.log_tail()
    );
    let claims = Jwt::decode(r.json()["token"].as_str().expect("token")).claims;
    let access = claims["access"].as_array().cloned().unwrap_or_default();
    access
        .iter()
        .filter(|a| a["name"] == repo)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().expect("action").to_string())
        .collect()
}

#[test]
fn directory_attributes_become_labels_the_policy_matches_and_names_repositories_with() {
    let d = Slapd::start();
    let policy = r#"rules:
  - name: department repositories
    match: { labels: { department: "*" }, type: repository, name: "${labels.department}/**" }
    actions: [pull, push]
"#;
    let labels = json!({ "department": "departmentNumber", "title": "title" });
    let mut search = ldap_config(&d);
    set_path(&mut search, "authn.ldap.labels", labels.clone());
    let mut direct = ldap_config(&d);
    set_path(
        &mut direct,
        "authn.ldap",
        json!({ "urls": [d.url()],
            "user_dn": format!("uid={{username}},{}", slapd::PEOPLE),
            "labels": labels,
            "timeout": "3s",
        }),
    );
    for (mode, mut config) in [("search-then-bind", search), ("direct bind", direct)] {
        set_path(&mut config, "log.format", json!("json"));
        let p = Purser::start(config, &[("policy.yaml", policy)]);
        let push = vec!["pull".to_string(), "push".to_string()];

        // alice's entry has departmentNumber eng: push to eng/**, nothing in ops/**; asked
        // twice, the second login from the credential cache.
        assert_eq!(repo_actions(&p, "alice", "eng/app"), push, "{mode}");
        assert_eq!(repo_actions(&p, "alice", "eng/app"), push, "{mode}: cached");
        assert!(
            p.metric("purser_authn_cache_hits_total", &[("backend", "ldap")]) >= 1.0,
            "{mode}: the second login was not answered from the cache"
        );
        assert!(repo_actions(&p, "alice", "ops/app").is_empty(), "{mode}");
        // bob's is ops.
        assert_eq!(repo_actions(&p, "bob", "ops/app"), push, "{mode}");
        assert!(repo_actions(&p, "bob", "eng/app").is_empty(), "{mode}");
        // carol's entry has no departmentNumber: no label, and the rule grants her nothing.
        for repo in ["eng/app", "ops/app"] {
            assert!(repo_actions(&p, "carol", repo).is_empty(), "{mode} {repo}");
        }

        // The audit records list the labels found, and only those.
        let records = p.audit_records();
        let labels_of = |account: &str| {
            records
                .iter()
                .rev()
                .find(|r| r["account"] == account && r["status"] == 200)
                .unwrap_or_else(|| panic!("{mode}: no audit record of {account}"))["labels"]
                .clone()
        };
        assert_eq!(
            labels_of("alice"),
            json!({ "department": "eng", "title": "Staff Engineer" }),
            "{mode}"
        );
        assert_eq!(labels_of("bob"), json!({ "department": "ops" }), "{mode}");
        assert!(
            labels_of("carol").is_null(),
            "{mode}: {}",
            labels_of("carol")
        );
    }
}
