//! `purser doctor ldap` against a real OpenLDAP directory (`purser_testkit::slapd`, one per
//! test: slapd starts in a fraction of a second, and a shared one would outlive the binary, as
//! statics are never dropped): a good login with the policy's answer for a scope, then one misconfiguration
//! per test, each named as the failing step with exit 1; the output never holds a password.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use purser_testkit::slapd::{self, ServerCert, Slapd};
use purser_testkit::*;
use serde_json::{json, Value};

/// Search-then-bind with groups on `d`, changed by `extra`.
fn ldap_block(d: &Slapd, extra: Value) -> Value {
    let mut block = merged(
        d.search_bind(),
        json!({
            "group_base": slapd::GROUPS,
            "group_filter": "(member={dn})",
            "timeout": "3s",
        }),
    );
    block = merged(block, extra);
    block
}

/// Runs `purser doctor ldap --user USER [--scope S]...` with `password` on stdin; returns
/// (exit code, stdout + stderr).
fn doctor(
    ldap: Value,
    files: &[(&str, &str)],
    user: &str,
    password: &str,
    scopes: &[&str],
) -> (i32, String) {
    let p = Prepared::new(
        slapd::config_behind_admin(ldap),
        files,
        "purser-doctor-ldap-",
    );
    let cfg = p.cfg_path.display().to_string();
    let mut args = vec!["doctor", "ldap", "--config", &cfg, "--user", user];
    for s in scopes {
        args.push("--scope");
        args.push(s);
    }
    let out = run_purser(&args, &format!("{password}\n"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(password),
        "the user's password is in the output:\n{text}"
    );
    assert!(
        !text.contains(slapd::SERVICE_PASSWORD),
        "the service password is in the output:\n{text}"
    );
    (out.status.code().unwrap_or(-1), text)
}

fn assert_fails_at(code: i32, text: &str, step: &str, detail: &str) {
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("login would FAIL at step: {step}")),
        "expected the failing step {step:?}:\n{text}"
    );
    assert!(text.contains(detail), "expected {detail:?}:\n{text}");
}

#[test]
fn a_good_login_shows_every_step_and_the_policy_and_exits_0() {
    let d = Slapd::start();
    let (code, text) = doctor(
        ldap_block(&d, json!({})),
        &[],
        "alice",
        &slapd::password_of("alice"),
        &["repository:alice/app:push,pull"],
    );
    assert_eq!(code, 0, "{text}");
    for expected in [
        "connect ldap://127.0.0.1",
        "TLS: none",
        &format!("bound as {}", slapd::SERVICE_DN),
        "filter: (uid=alice)",
        &format!("found: {}", slapd::user_dn("alice")),
        &format!("bound as {}", slapd::user_dn("alice")),
        "filter: (member=uid=alice,ou=people,dc=example,dc=org)",
        "found: admins, developers",
        "login would succeed: account alice, groups [admins, developers]",
        "repository:alice/app:push,pull -> push,pull (rule 0 \"admins\")",
    ] {
        assert!(text.contains(expected), "expected {expected:?}:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn the_user_name_is_shown_escaped_in_the_filter() {
    let d = Slapd::start();
    let (code, text) = doctor(ldap_block(&d, json!({})), &[], "ali*", "whatever-pw", &[]);
    assert_fails_at(code, &text, "user search", "filter: (uid=ali\\2a)");
}

#[test]
fn a_wrong_service_bind_dn_fails_at_the_service_bind() {
    let d = Slapd::start();
    let (code, text) = doctor(
        ldap_block(
            &d,
            json!({ "bind_dn": "cn=nobody,ou=services,dc=example,dc=org" }),
        ),
        &[],
        "alice",
        &slapd::password_of("alice"),
        &[],
    );
    assert_fails_at(
        code,
        &text,
        "service bind",
        "cn=nobody,ou=services,dc=example,dc=org refused",
    );
}

#[test]
fn a_filter_finding_nobody_fails_at_the_user_search() {
    let d = Slapd::start();
    let (code, text) = doctor(
        ldap_block(
            &d,
            json!({ "user_filter": "(&(objectClass=posixAccount)(uid={username}))" }),
        ),
        &[],
        "alice",
        &slapd::password_of("alice"),
        &[],
    );
    assert_fails_at(code, &text, "user search", "found: none");
}

#[test]
fn a_filter_finding_two_entries_fails_at_the_user_search_listing_them() {
    let d = Slapd::start();
    let (code, text) = doctor(
        ldap_block(&d, json!({})),
        &[],
        "twin",
        &slapd::password_of("twin"),
        &[],
    );
    assert_fails_at(code, &text, "user search", "found: 2 entries");
    assert!(
        text.contains("uid=twin,ou=contractors,ou=people,dc=example,dc=org"),
        "{text}"
    );
}

#[test]
fn a_group_base_finding_nothing_fails_at_the_group_search() {
    let d = Slapd::start();
    let (code, text) = doctor(
        ldap_block(&d, json!({ "group_base": "ou=nothing,dc=example,dc=org" })),
        &[],
        "alice",
        &slapd::password_of("alice"),
        &[],
    );
    assert_fails_at(code, &text, "group search", "check authn.ldap.group_base");
}

#[test]
fn a_wrong_password_fails_at_the_user_bind() {
    let d = Slapd::start();
    let (code, text) = doctor(
        ldap_block(&d, json!({})),
        &[],
        "alice",
        "not-her-password",
        &[],
    );
    assert_fails_at(
        code,
        &text,
        "user bind",
        "wrong password or no such user (result code 49)",
    );
}

#[test]
fn an_untrusted_certificate_fails_at_connect_with_what_the_certificate_is() {
    let d = Slapd::start();
    let other = Slapd::start_with(ServerCert::SelfSigned("DNS:localhost"));
    let other_cert = std::fs::read_to_string(other.cert_file()).unwrap();
    let (code, text) = doctor(
        ldap_block(
            &d,
            json!({ "urls": [d.ldaps_url()], "ca_file": "other.pem" }),
        ),
        &[("other.pem", &other_cert)],
        "alice",
        &slapd::password_of("alice"),
        &[],
    );
    assert_fails_at(
        code,
        &text,
        &format!("connect {}", d.ldaps_url()),
        "NOT trusted",
    );
    for expected in [
        "certificate subject: CN=127.0.0.1",
        "issuer: CN=purser test CA",
        "names: 127.0.0.1, localhost",
        "not in authn.ldap.ca_file",
    ] {
        assert!(text.contains(expected), "expected {expected:?}:\n{text}");
    }
    // The same directory with its CA: trusted, and why.
    let (code, text) = doctor(
        ldap_block(
            &d,
            json!({ "urls": [d.ldaps_url()], "ca_file": d.ca_file() }),
        ),
        &[],
        "alice",
        &slapd::password_of("alice"),
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("trusted: issued by CN=purser test CA, a CA in authn.ldap.ca_file"),
        "{text}"
    );
}

#[test]
fn the_labels_found_are_a_step_and_reach_the_policy() {
    let d = Slapd::start();
    let policy = r#"rules:
  - name: department repositories
    match: { labels: { department: "*" }, name: "${labels.department}/**" }
    actions: [pull, push]
"#;
    let (code, text) = doctor(
        ldap_block(
            &d,
            json!({ "labels": {
                "department": "departmentNumber",
                "title": "title",
                "badge": "employeeNumber",
            } }),
        ),
        &[("policy.yaml", policy)],
        "alice",
        &slapd::password_of("alice"),
        &["repository:eng/app:push,pull", "repository:ops/app:pull"],
    );
    assert_eq!(code, 0, "{text}");
    for expected in [
        ". labels\n",
        "department (departmentNumber): eng",
        "title (title): Staff Engineer",
        "badge (employeeNumber): not in the entry",
        "login would succeed: account alice, groups [admins, developers], labels [department=eng, title=Staff Engineer]",
        "repository:eng/app:push,pull -> push,pull (rule 0 \"department repositories\")",
    ] {
        assert!(text.contains(expected), "expected {expected:?}:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
}
