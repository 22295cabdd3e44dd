//! The directory's certificate against a real OpenLDAP server (see `purser_testkit::slapd`):
//! a self-signed `openssl req -x509` certificate given as its own `ca_file`, a certificate for
//! another name (refused, the message naming the names it has), `tls_server_name`, and a
//! certificate from a CA that is not trusted.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::time::Duration;

use purser_authn::ldap::{LdapAuthenticator, LdapSettings};
use purser_core::{Authenticator, AuthnOutcome, BackendError, Credentials, Identity, Password};
use purser_testkit::slapd::{self, ServerCert, Slapd};

fn settings(slapd: &Slapd) -> LdapSettings {
    LdapSettings {
        urls: vec![slapd.url()],
        bind_dn: slapd::SERVICE_DN.into(),
        bind_password: Password::new(slapd::SERVICE_PASSWORD),
        user_base: slapd::PEOPLE.into(),
        group_base: slapd::GROUPS.into(),
        ca_file: slapd.ca_file(),
        timeout: Duration::from_secs(3),
        pool_size: 2,
        ..LdapSettings::default()
    }
}

fn alice() -> Credentials {
    Credentials::new("alice", slapd::password_of("alice"))
}

fn alice_accepted() -> AuthnOutcome {
    AuthnOutcome::Accepted(Identity::new(
        "alice",
        vec!["admins".to_string(), "developers".to_string()],
    ))
}

/// StartTLS on `ldap://` and LDAPS, with `base`.
fn over_tls(slapd: &Slapd, base: &LdapSettings) -> [(&'static str, LdapSettings); 2] {
    [
        (
            "starttls",
            LdapSettings {
                start_tls: true,
                ..base.clone()
            },
        ),
        (
            "ldaps",
            LdapSettings {
                urls: vec![slapd.ldaps_url()],
                ..base.clone()
            },
        ),
    ]
}

fn unavailable_reason(r: Result<AuthnOutcome, BackendError>) -> String {
    match r {
        Err(BackendError::Unavailable { reason, .. }) => reason,
        other => panic!("expected the directory unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_openssl_certificate_as_ca_file_is_trusted_over_starttls_and_ldaps() {
    let slapd = Slapd::start_with(ServerCert::SelfSigned("IP:127.0.0.1,DNS:localhost"));
    let base = LdapSettings {
        ca_file: slapd.cert_file(),
        ..settings(&slapd)
    };
    for (transport, s) in over_tls(&slapd, &base) {
        let ldap = LdapAuthenticator::new(s).unwrap();
        assert_eq!(
            ldap.authenticate(&alice()).await.unwrap(),
            alice_accepted(),
            "{transport}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused_with_the_names_it_has() {
    let slapd = Slapd::start_with(ServerCert::SelfSigned("DNS:ldap.other.test"));
    let base = settings(&slapd);
    for (transport, s) in over_tls(&slapd, &base) {
        let ldap = LdapAuthenticator::new(s.clone()).unwrap();
        let reason = unavailable_reason(ldap.authenticate(&alice()).await);
        assert!(
            reason.contains("ldap.other.test")
                && reason.contains("not for 127.0.0.1")
                && reason.contains("tls_server_name"),
            "{transport}: {reason}"
        );
        // The same certificate, checked against the name it has.
        let ldap = LdapAuthenticator::new(LdapSettings {
            tls_server_name: "ldap.other.test".into(),
            ..s
        })
        .unwrap();
        assert_eq!(
            ldap.authenticate(&alice()).await.unwrap(),
            alice_accepted(),
            "{transport} with tls_server_name"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused_naming_its_issuer() {
    let slapd = Slapd::start();
    // Another directory's self-signed certificate: a valid PEM file, but not the issuer.
    let other = Slapd::start_with(ServerCert::SelfSigned("DNS:localhost"));
    let base = LdapSettings {
        ca_file: other.cert_file(),
        ..settings(&slapd)
    };
    for (transport, s) in over_tls(&slapd, &base) {
        let ldap = LdapAuthenticator::new(s).unwrap();
        let reason = unavailable_reason(ldap.authenticate(&alice()).await);
        assert!(
            reason.contains("issued by CN=purser test CA")
                && reason.contains("not in authn.ldap.ca_file"),
            "{transport}: {reason}"
        );
    }
}
