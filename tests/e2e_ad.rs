//! End to end against a real Active Directory: a Samba 4 domain controller provisioned by
//! `purser_testkit::samba`, with the two AD
//! configurations of docs/authentication.md read from the page at test time. Logins by
//! sAMAccountName (search-then-bind over LDAPS) and by user principal name (direct bind over
//! StartTLS), direct and nested groups reaching the policy, refusals with AD's reason in the
//! log, an outage and its recovery; TLS with the certificate Samba generated (its `ca.pem` as
//! `ca_file`, a leaf whose name is only in its subject CN), and `purser doctor ldap`.
//!
//! One domain controller for the binary (provisioning takes about 10 s), owned by the one test
//! below, which runs the scenarios in order: a static would never be dropped, and the server
//! would outlive the test binary.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::fs;
use std::time::{Duration, Instant};

use purser_testkit::samba::{self, Samba};
use purser_testkit::*;
use serde_json::{json, Value};

const PAGE: &str = "docs/authentication.md";
const MARK: &str = "<!-- tested by tests/e2e_ad.rs -->";

/// The YAML blocks of the page marked as run by this file, in order: search-then-bind, then
/// direct bind.
fn doc_blocks() -> Vec<String> {
    let text = fs::read_to_string(PAGE).expect("docs/authentication.md");
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == MARK {
            assert_eq!(
                lines.next().map(str::trim),
                Some("```yaml"),
                "{MARK} before a yaml block"
            );
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(body.join("\n"));
        }
    }
    assert_eq!(blocks.len(), 2, "{PAGE}: the two AD blocks marked {MARK}");
    blocks
}

/// The page's block made runnable here: the URLs point at the test's domain controller (by
/// address, so `tls_server_name` names the host of its certificate), and the rest of purser's
/// configuration (the static admin, the key, the policy) is added around it.
fn runnable(block: &str, urls: &[String]) -> String {
    let mut out = String::new();
    for line in block.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("urls:") {
            out.push_str(&format!("    urls: {}\n", json!(urls)));
            out.push_str(&format!("    tls_server_name: \"{}\"\n", samba::HOST_NAME));
            out.push_str("    timeout: 3s\n");
        } else if line == "authn:" {
            out.push_str("authn:\n");
            out.push_str(&format!(
                "  static: {}\n",
                json!({ "users": { ADMIN.0: { "password_hash": bcrypt_hash(ADMIN.1), "groups": ["admins"] } } })
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let base = base_config();
    let mut token = base["token"].clone();
    token["generate_key"] = json!(true);
    token["generate_alg"] = json!("es256");
    token["signing_key_file"] = json!("data/signing.pem");
    out.push_str(&format!("token: {token}\n"));
    out.push_str(&format!("authz: {}\n", base["authz"]));
    out.push_str(&format!("limits: {}\n", base["limits"]));
    out.push_str("log: { format: json }\n");
    out
}

fn policy() -> String {
    format!(
        "{POLICY}  - name: engineering writes team\n    match: {{ groups: [engineering], type: repository, name: \"team/**\" }}\n    actions: [pull, push]\n"
    )
}

fn start(block: &str, urls: &[String], d: &Samba) -> Purser {
    let ca = fs::read_to_string(d.ca_file()).unwrap();
    Purser::start_yaml(
        &runnable(block, urls),
        &[
            ("ad-ca.pem", &ca),
            ("ad-password", samba::SERVICE_PASSWORD),
            ("policy.yaml", &policy()),
        ],
        "data/signing.pem",
    )
}

fn login(p: &Purser, user: &str, password: &str) -> HttpResponse {
    p.token_get(
        &[
            ("service", SERVICE),
            ("scope", "repository:team/app:pull,push"),
        ],
        Some((user, password)),
    )
}

/// The granted actions on `team/app` of a 200 answer.
fn team_actions(r: &HttpResponse) -> Vec<String> {
    let claims = Jwt::decode(r.json()["token"].as_str().unwrap()).claims;
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "team/app")
        .flat_map(|a| a["actions"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn last_audit(p: &Purser) -> Value {
    p.audit_records().pop().expect("an audit record")
}

/// The groups and account of the last audit record.
fn last_groups(p: &Purser) -> (String, Vec<String>) {
    let a = last_audit(p);
    let groups: Vec<String> = match &a["groups"] {
        Value::Array(v) => v.iter().map(|g| g.as_str().unwrap().to_string()).collect(),
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => panic!("groups: {other}"),
    };
    (a["account"].as_str().unwrap().to_string(), groups)
}

/// Asserts a 401 for `user` and a log line at info naming the backend and `reason`.
fn refused_with_reason(p: &Purser, user: &str, password: &str, reason: &str, code: &str) {
    let r = login(p, user, password);
    assert_eq!(r.status, 401, "{user}: {}", r.text());
    assert!(
        r.text().contains("invalid username or password"),
        "the client sees the generic refusal only: {}",
        r.text()
    );
    let log = p.log_text();
    let line = log
        .lines()
        .rfind(|l| l.contains("login refused by the directory") && l.contains(reason))
        .unwrap_or_else(|| panic!("no log line for {user} with {reason:?}:\n{}", p.log_tail()));
    assert!(line.contains(r#""level":"INFO""#), "{line}");
    assert!(line.contains(r#""backend":"ldap""#), "{line}");
    assert!(line.contains(code), "AD's data code {code}: {line}");
    let audit = last_audit(p);
    assert_eq!(
        audit["backend"], "ldap",
        "the audit record names the backend: {audit}"
    );
    assert_eq!(audit["status"], 401);
}

/// One part of the test, on the shared domain controller.
type Scenario = fn(&mut Samba);

#[test]
fn active_directory() {
    let started = Instant::now();
    let mut d = Samba::start();
    eprintln!(
        "samba AD DC on {} ready in {:.1} s (provision, first start, seed)",
        d.ip,
        d.setup_time.as_secs_f64()
    );
    let scenarios: [(&str, Scenario); 7] = [
        (
            "search-then-bind by sAMAccountName over LDAPS",
            search_bind_by_sam_account_name_over_ldaps_with_samba_generated_certificate,
        ),
        (
            "direct bind by UPN over StartTLS",
            direct_bind_by_user_principal_name_over_starttls_reads_the_real_dn_for_groups,
        ),
        (
            "each mode over the other transport",
            each_mode_over_the_other_transport,
        ),
        (
            "a refresh grant after a direct bind by UPN",
            a_refresh_grant_after_a_direct_bind_by_upn_finds_the_account,
        ),
        (
            "a group search finding nothing for a member",
            a_group_search_finding_nothing_for_a_member_is_logged_as_a_misconfiguration,
        ),
        (
            "doctor ldap",
            doctor_ldap_walks_the_ad_login_and_names_the_refusal,
        ),
        (
            "outage and recovery",
            the_directory_stopped_gets_503_and_logins_recover_when_it_returns,
        ),
    ];
    for (name, scenario) in scenarios {
        let at = Instant::now();
        scenario(&mut d);
        eprintln!("{name}: {:.1} s", at.elapsed().as_secs_f64());
    }
    eprintln!(
        "the AD tests: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

fn search_bind_by_sam_account_name_over_ldaps_with_samba_generated_certificate(d: &mut Samba) {
    let d = &*d;
    let blocks = doc_blocks();
    let p = start(&blocks[0], &[d.ldaps_url()], d);

    // alice: developers directly, engineering through developers (nested).
    let alice = samba::password_of("alice");
    let r = login(&p, "alice", &alice);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    assert_eq!(
        team_actions(&r),
        ["pull", "push"],
        "engineering (nested) reaches the policy"
    );
    let (account, groups) = last_groups(&p);
    assert_eq!(account, "alice");
    assert_eq!(groups, ["developers", "engineering"]);

    // The account is the entry's sAMAccountName, whatever the case typed.
    let r = login(&p, "ALICE", &alice);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_groups(&p).0, "alice");

    // A non-ASCII name.
    let zoe = samba::password_of("zoë");
    let r = login(&p, "zoë", &zoe);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    assert_eq!(
        last_groups(&p),
        (
            "zoë".to_string(),
            vec!["developers".to_string(), "engineering".to_string()]
        )
    );

    // bob: auditors only, no team access.
    let r = login(&p, "bob", &samba::password_of("bob"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(team_actions(&r).is_empty());
    assert_eq!(last_groups(&p).1, ["auditors"]);

    refused_with_reason(&p, "alice", "not-her-password", "wrong password", "52e");
    refused_with_reason(
        &p,
        samba::DISABLED,
        &samba::password_of(samba::DISABLED),
        "account disabled",
        "533",
    );
    refused_with_reason(
        &p,
        samba::EXPIRED,
        &samba::password_of(samba::EXPIRED),
        "password must be changed",
        "773",
    );
}

fn direct_bind_by_user_principal_name_over_starttls_reads_the_real_dn_for_groups(d: &mut Samba) {
    let d = &*d;
    let blocks = doc_blocks();
    let p = start(&blocks[1], &[d.ldap_url()], d);

    let r = login(&p, "alice@example.test", &samba::password_of("alice"));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    // The group filter's {dn} was the entry's DN, not the UPN typed: the nested group is found.
    assert_eq!(team_actions(&r), ["pull", "push"]);
    assert_eq!(
        last_groups(&p),
        (
            "alice".to_string(),
            vec!["developers".to_string(), "engineering".to_string()]
        )
    );
    assert!(
        !p.log_text().contains("likely a misconfiguration"),
        "{}",
        p.log_tail()
    );

    refused_with_reason(
        &p,
        "dave@example.test",
        &samba::password_of(samba::DISABLED),
        "account disabled",
        "533",
    );
    refused_with_reason(&p, "alice@example.test", "wrong", "wrong password", "52e");
}

/// Search-then-bind over StartTLS and direct bind over LDAPS: the same logins and groups.
fn each_mode_over_the_other_transport(d: &mut Samba) {
    let d = &*d;
    let blocks = doc_blocks();
    let search_starttls = blocks[0].replace("    ca_file:", "    start_tls: true\n    ca_file:");
    let direct_ldaps = blocks[1].replace("    start_tls: true\n", "");
    assert_ne!(search_starttls, blocks[0]);
    assert_ne!(direct_ldaps, blocks[1]);
    for (what, block, urls, user) in [
        (
            "search-then-bind over StartTLS",
            &search_starttls,
            vec![d.ldap_url()],
            "alice",
        ),
        (
            "direct bind over LDAPS",
            &direct_ldaps,
            vec![d.ldaps_url()],
            "alice@example.test",
        ),
    ] {
        let p = start(block, &urls, d);
        let r = login(&p, user, &samba::password_of("alice"));
        assert_eq!(r.status, 200, "{what}: {}\n{}", r.text(), p.log_tail());
        assert_eq!(team_actions(&r), ["pull", "push"], "{what}");
        assert_eq!(
            last_groups(&p),
            (
                "alice".to_string(),
                vec!["developers".to_string(), "engineering".to_string()]
            ),
            "{what}"
        );
    }
}

/// Direct bind by UPN with a service account: a refresh grant looks the account (`alice`, not
/// the UPN typed) up again, by its sAMAccountName, and gets its groups.
fn a_refresh_grant_after_a_direct_bind_by_upn_finds_the_account(d: &mut Samba) {
    let d = &*d;
    let blocks = doc_blocks();
    let block = blocks[1].replace(
        "    user_dn:",
        &format!(
            "    bind_dn: \"{}\"\n    bind_password_file: \"ad-password\"\n    user_dn:",
            samba::SERVICE_UPN
        ),
    );
    assert_ne!(block, blocks[1]);
    let p = start(&block, &[d.ldap_url()], d);
    let form = |grant: &[(&str, &str)]| {
        let mut f = vec![
            ("service", SERVICE),
            ("client_id", "e2e"),
            ("scope", "repository:team/app:pull,push"),
            ("access_type", "offline"),
        ];
        f.extend_from_slice(grant);
        Http::post(&p.token_url()).form(&f).send().expect("POST")
    };
    let alice = samba::password_of("alice");
    let r = form(&[
        ("grant_type", "password"),
        ("username", "alice@example.test"),
        ("password", &alice),
    ]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let r = form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log_tail());
    assert_eq!(
        last_groups(&p),
        (
            "alice".to_string(),
            vec!["developers".to_string(), "engineering".to_string()]
        )
    );
}

fn a_group_search_finding_nothing_for_a_member_is_logged_as_a_misconfiguration(d: &mut Samba) {
    let d = &*d;
    let blocks = doc_blocks();
    // The filter of another directory (groupOfNames): AD has no such groups.
    let block = blocks[0].replace(
        "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={dn}))",
        "(&(objectClass=groupOfNames)(member={dn}))",
    );
    assert_ne!(block, blocks[0]);
    let p = start(&block, &[d.ldaps_url()], d);
    let r = login(&p, "alice", &samba::password_of("alice"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(last_groups(&p).1.is_empty());
    let log = p.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("likely a misconfiguration") && l.contains("memberOf")),
        "{}",
        p.log_tail()
    );
}

fn the_directory_stopped_gets_503_and_logins_recover_when_it_returns(d: &mut Samba) {
    let blocks = doc_blocks();
    let p = start(&blocks[0], &[d.ldaps_url()], d);
    let alice = samba::password_of("alice");
    assert_eq!(login(&p, "alice", &alice).status, 200);

    d.stop();
    // A password not in the credential cache, so the directory must be asked.
    let r = login(&p, "bob", &samba::password_of("bob"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(last_audit(&p)["backend"], "ldap", "{}", last_audit(&p));

    d.start_again();
    wait_until(
        Duration::from_secs(60),
        "a login after the directory came back",
        || login(&p, "bob", &samba::password_of("bob")).status == 200,
        || p.log_tail(),
    );
}

/// `purser doctor ldap` with the page's search-then-bind block: every step passes with Samba's
/// certificate (trusted through its subject CN), and a disabled account fails at the user bind
/// with AD's reason.
fn doctor_ldap_walks_the_ad_login_and_names_the_refusal(d: &mut Samba) {
    let d = &*d;
    let blocks = doc_blocks();
    let ca = fs::read_to_string(d.ca_file()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("ad-ca.pem", ca.as_str()),
        ("ad-password", samba::SERVICE_PASSWORD),
        ("policy.yaml", &policy()),
    ] {
        fs::write(dir.path().join(name), content).unwrap();
    }
    let cfg = dir.path().join("purser.yaml");
    fs::write(&cfg, runnable(&blocks[0], &[d.ldaps_url()])).unwrap();
    let cfg = cfg.display().to_string();
    let run = |user: &str, password: &str| {
        let out = run_purser(
            &[
                "doctor",
                "ldap",
                "--config",
                &cfg,
                "--user",
                user,
                "--scope",
                "repository:team/app:push",
            ],
            &format!("{password}\n"),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !text.contains(password),
            "a password in the output:\n{text}"
        );
        assert!(
            !text.contains(samba::SERVICE_PASSWORD),
            "the service password in the output:\n{text}"
        );
        (out.status.code(), text)
    };
    let (code, text) = run("alice", &samba::password_of("alice"));
    assert_eq!(code, Some(0), "{text}");
    for expected in [
        "no subjectAltName, so its subject CN DC1.example.test was checked against dc1.example.test",
        "found: CN=alice,CN=Users,DC=example,DC=test",
        "found: developers, engineering",
        "repository:team/app:push -> push (rule 5 \"engineering writes team\")",
    ] {
        assert!(text.contains(expected), "expected {expected:?}:\n{text}");
    }
    let (code, text) = run(samba::DISABLED, &samba::password_of(samba::DISABLED));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("login would FAIL at step: user bind"),
        "{text}"
    );
    assert!(
        text.contains("account disabled (result code 49, Active Directory data 533)"),
        "{text}"
    );
}
