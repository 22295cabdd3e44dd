//! The `ldap` backend against a real OpenLDAP server (see `purser_testkit::slapd`).

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use purser_authn::conformance;
use purser_authn::ldap::{LdapAuthenticator, LdapSettings, MAX_LABEL_VALUE};
use purser_authn::{AnswerSource, Cached};
use purser_core::{Authenticator, AuthnOutcome, BackendError, Credentials, Identity, Password};
use purser_testkit::slapd::{self, Slapd};

const TIMEOUT: Duration = Duration::from_secs(3);

fn search_settings(slapd: &Slapd) -> LdapSettings {
    LdapSettings {
        urls: vec![slapd.url()],
        bind_dn: slapd::SERVICE_DN.into(),
        bind_password: Password::new(slapd::SERVICE_PASSWORD),
        user_base: slapd::PEOPLE.into(),
        group_base: slapd::GROUPS.into(),
        timeout: TIMEOUT,
        pool_size: 4,
        ..LdapSettings::default()
    }
}

/// Direct bind, no service account: groups are read as the user.
fn direct_settings(slapd: &Slapd) -> LdapSettings {
    LdapSettings {
        urls: vec![slapd.url()],
        user_dn: format!("uid={{username}},{}", slapd::PEOPLE),
        group_base: slapd::GROUPS.into(),
        timeout: TIMEOUT,
        pool_size: 4,
        ..LdapSettings::default()
    }
}

fn creds(user: &str) -> Credentials {
    Credentials::new(user, slapd::password_of(user))
}

fn accepted(user: &str, groups: &[&str]) -> Result<AuthnOutcome, BackendError> {
    Ok(AuthnOutcome::Accepted(Identity::new(
        user,
        groups.iter().map(|g| g.to_string()).collect(),
    )))
}

fn is_unavailable(r: &Result<AuthnOutcome, BackendError>) -> bool {
    matches!(
        r,
        Err(BackendError::Unavailable {
            backend: "ldap",
            ..
        })
    )
}

/// Plain LDAP, StartTLS and LDAPS, each in both modes.
fn transports(slapd: &Slapd) -> Vec<(&'static str, LdapSettings)> {
    let mut out = Vec::new();
    for (mode, base) in [
        ("search", search_settings(slapd)),
        ("direct", direct_settings(slapd)),
    ] {
        out.push((mode, base.clone()));
        out.push((
            mode,
            LdapSettings {
                start_tls: true,
                ca_file: slapd.ca_file(),
                ..base.clone()
            },
        ));
        out.push((
            mode,
            LdapSettings {
                urls: vec![slapd.ldaps_url()],
                ca_file: slapd.ca_file(),
                ..base
            },
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_over_every_transport() {
    let slapd = Slapd::start();
    for (mode, settings) in transports(&slapd) {
        let what = format!(
            "{mode} {:?} start_tls={}",
            settings.urls, settings.start_tls
        );
        let ldap = LdapAuthenticator::new(settings).unwrap();
        assert_eq!(
            ldap.authenticate(&creds("alice")).await,
            accepted("alice", &["admins", "developers"]),
            "{what}"
        );
        assert_eq!(
            ldap.authenticate(&Credentials::new("alice", "wrong")).await,
            Ok(if mode == "search" {
                // The entry was found: the rejection names its account.
                AuthnOutcome::Rejected {
                    account: Some("alice".into()),
                }
            } else {
                AuthnOutcome::REJECTED
            }),
            "{what}"
        );
        let unknown = if mode == "search" {
            AuthnOutcome::UnknownUser
        } else {
            AuthnOutcome::REJECTED
        };
        assert_eq!(
            ldap.authenticate(&creds("nobody")).await,
            Ok(unknown),
            "{what}"
        );
        assert_eq!(ldap.ready().await, Ok(()), "{what}");
    }
    // StartTLS really happened.
    assert!(
        slapd.log().contains("STARTTLS"),
        "no StartTLS in the server's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_the_ca_is_unavailable_never_accepted() {
    let slapd = Slapd::start();
    for (mode, settings) in transports(&slapd) {
        if !settings.start_tls && settings.urls[0].starts_with("ldap://") {
            continue;
        }
        let what = format!(
            "{mode} {:?} start_tls={}",
            settings.urls, settings.start_tls
        );
        let ldap = LdapAuthenticator::new(LdapSettings {
            ca_file: Default::default(),
            ..settings
        })
        .unwrap();
        let got = ldap.authenticate(&creds("alice")).await;
        assert!(is_unavailable(&got), "{what}: {got:?}");
        assert!(ldap.ready().await.is_err(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_lookup() {
    let slapd = Slapd::start();
    for settings in [search_settings(&slapd), direct_settings(&slapd)] {
        let ldap = LdapAuthenticator::new(settings).unwrap();
        assert_eq!(
            ldap.authenticate(&creds("alice")).await,
            accepted("alice", &["admins", "developers"])
        );
        assert_eq!(ldap.authenticate(&creds("bob")).await, accepted("bob", &[]));
        // Non-ASCII uid: escaped as UTF-8 bytes in filters, kept as UTF-8 in DNs.
        assert_eq!(
            ldap.authenticate(&creds("zoë")).await,
            accepted("zoë", &["developers"])
        );
        // A comma in the uid: RFC 4514 escaping in the DN template.
        assert_eq!(
            ldap.authenticate(&creds("dan, jr")).await,
            accepted("dan, jr", &[])
        );
    }

    let ldap = LdapAuthenticator::new(search_settings(&slapd)).unwrap();
    assert_eq!(
        ldap.lookup("alice").await,
        Ok(Some(Identity::new(
            "alice",
            vec!["admins".into(), "developers".into()]
        )))
    );
    assert_eq!(
        ldap.lookup("zoë").await,
        Ok(Some(Identity::new("zoë", vec!["developers".into()])))
    );
    assert_eq!(ldap.lookup("nobody").await, Ok(None));
    // Two entries match (uid=twin): ambiguous, refused even with the right password.
    assert_eq!(
        ldap.authenticate(&creds("twin")).await,
        Ok(AuthnOutcome::REJECTED)
    );
    assert_eq!(ldap.lookup("twin").await, Ok(None));

    // Without a group base, no groups.
    let no_groups = LdapAuthenticator::new(LdapSettings {
        group_base: String::new(),
        ..search_settings(&slapd)
    })
    .unwrap();
    assert_eq!(
        no_groups.authenticate(&creds("alice")).await,
        accepted("alice", &[])
    );

    // Direct bind with a service account: lookups read the entry at the templated DN.
    let direct_with_service = LdapAuthenticator::new(LdapSettings {
        bind_dn: slapd::SERVICE_DN.into(),
        bind_password: Password::new(slapd::SERVICE_PASSWORD),
        ..direct_settings(&slapd)
    })
    .unwrap();
    assert_eq!(
        direct_with_service.lookup("zoë").await,
        Ok(Some(Identity::new("zoë", vec!["developers".into()])))
    );
    assert_eq!(direct_with_service.lookup("nobody").await, Ok(None));
    assert!(matches!(
        LdapAuthenticator::new(direct_settings(&slapd))
            .unwrap()
            .lookup("alice")
            .await,
        Err(BackendError::Unsupported { .. })
    ));
}

/// `labels: { department: departmentNumber, title: title, about: description }`.
fn with_labels(settings: LdapSettings) -> LdapSettings {
    LdapSettings {
        labels: BTreeMap::from([
            ("department".into(), "departmentNumber".into()),
            // The attribute's name in another case: attribute names are case-insensitive.
            ("title".into(), "TITLE".into()),
            ("about".into(), "description".into()),
        ]),
        ..settings
    }
}

fn labels_of(r: Result<AuthnOutcome, BackendError>) -> BTreeMap<String, String> {
    match r {
        Ok(AuthnOutcome::Accepted(identity)) => identity.labels,
        other => panic!("not accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_of_the_user_s_entry_become_labels() {
    let slapd = Slapd::start();
    let mut about = slapd::long_description();
    // Cut at the bound, then back to the character boundary (`é` is 2 bytes).
    about.truncate(MAX_LABEL_VALUE - 1);
    assert!(about.len() < MAX_LABEL_VALUE);
    let alice = BTreeMap::from([
        ("department".to_string(), "eng".to_string()),
        ("title".to_string(), "Staff Engineer".to_string()),
        ("about".to_string(), about),
    ]);
    let bob = BTreeMap::from([("department".to_string(), "ops".to_string())]);
    let with_service = LdapSettings {
        bind_dn: slapd::SERVICE_DN.into(),
        bind_password: Password::new(slapd::SERVICE_PASSWORD),
        ..direct_settings(&slapd)
    };
    for (mode, settings) in [
        ("search", search_settings(&slapd)),
        ("direct", direct_settings(&slapd)),
        ("direct with a service account", with_service.clone()),
    ] {
        let ldap = LdapAuthenticator::new(with_labels(settings)).unwrap();
        assert_eq!(
            labels_of(ldap.authenticate(&creds("alice")).await),
            alice,
            "{mode}"
        );
        // An attribute the entry lacks leaves its label out.
        assert_eq!(
            labels_of(ldap.authenticate(&creds("bob")).await),
            bob,
            "{mode}"
        );
        assert_eq!(
            labels_of(ldap.authenticate(&creds("carol")).await),
            BTreeMap::new(),
            "{mode}"
        );
        // The groups are still read beside them.
        assert_eq!(
            ldap.authenticate(&creds("alice")).await,
            Ok(AuthnOutcome::Accepted(Identity {
                labels: alice.clone(),
                ..Identity::new("alice", vec!["admins".into(), "developers".into()])
            })),
            "{mode}"
        );
    }

    // Lookups (the refresh grant's) carry the labels too.
    for settings in [search_settings(&slapd), with_service] {
        let ldap = LdapAuthenticator::new(with_labels(settings)).unwrap();
        let found = ldap.lookup("alice").await.unwrap().unwrap();
        assert_eq!(found.labels, alice);
        let found = ldap.lookup("carol").await.unwrap().unwrap();
        assert!(found.labels.is_empty(), "{found:?}");
    }

    // A remembered login keeps the labels.
    let cached = Cached::new(
        Arc::new(LdapAuthenticator::new(with_labels(search_settings(&slapd))).unwrap()),
        Duration::from_secs(3600),
    );
    let first = cached.answer(&creds("alice")).await;
    assert_eq!(first.source, AnswerSource::Backend);
    let again = cached.answer(&creds("alice")).await;
    assert_eq!(again.source, AnswerSource::Cache);
    assert_eq!(labels_of(again.result), alice);

    // Without `labels`, no label at all.
    let plain = LdapAuthenticator::new(search_settings(&slapd)).unwrap();
    assert_eq!(
        labels_of(plain.authenticate(&creds("alice")).await),
        BTreeMap::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempts_log_no_one_in() {
    let slapd = Slapd::start();
    let hostile = [
        "*",
        "alice)(uid=*",
        "alice*",
        "\\",
        "alice\0",
        "*)(|(uid=*",
        "alice\\2a",
    ];
    for (mode, settings) in [
        ("search", search_settings(&slapd)),
        ("direct", direct_settings(&slapd)),
    ] {
        let ldap = LdapAuthenticator::new(settings).unwrap();
        for name in hostile {
            let got = ldap
                .authenticate(&Credentials::new(name, slapd::password_of("alice")))
                .await;
            let expected = if mode == "search" {
                AuthnOutcome::UnknownUser
            } else {
                AuthnOutcome::REJECTED
            };
            assert_eq!(got, Ok(expected), "{mode}: user name {name:?}");
        }
        // The directory is still fine and the backend still works.
        assert_eq!(ldap.authenticate(&creds("bob")).await, accepted("bob", &[]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_password_is_refused_without_a_bind() {
    let slapd = Slapd::start();
    let alice_dn = slapd::user_dn("alice");
    let bob_dn = slapd::user_dn("bob");
    for settings in [search_settings(&slapd), direct_settings(&slapd)] {
        let ldap = LdapAuthenticator::new(settings).unwrap();
        let before = slapd.binds_as(&alice_dn);
        let bob_before = slapd.binds_as(&bob_dn);
        assert_eq!(
            ldap.authenticate(&Credentials::new("alice", "")).await,
            Ok(AuthnOutcome::REJECTED)
        );
        // A bind that is logged after the one that must not have happened.
        assert_eq!(ldap.authenticate(&creds("bob")).await, accepted("bob", &[]));
        assert_eq!(
            slapd.binds_as(&bob_dn),
            bob_before + 1,
            "bob's bind is logged"
        );
        assert_eq!(slapd.binds_as(&alice_dn), before, "no bind as alice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_recovery_with_the_same_instance() {
    let mut slapd = Slapd::start();
    let search = LdapAuthenticator::new(search_settings(&slapd)).unwrap();
    let direct = LdapAuthenticator::new(direct_settings(&slapd)).unwrap();
    let alice = creds("alice");
    let groups = ["admins", "developers"];
    for ldap in [&search, &direct] {
        assert_eq!(ldap.ready().await, Ok(()));
        assert_eq!(ldap.authenticate(&alice).await, accepted("alice", &groups));
    }
    let opened = search.pool_stats().opened;
    assert!(search.pool_stats().idle >= 1);

    slapd.stop();
    for ldap in [&search, &direct] {
        // Bounded: the test fails rather than hangs if the backend does not give up.
        let got = tokio::time::timeout(TIMEOUT * 4, ldap.authenticate(&alice))
            .await
            .expect("authenticate must give up within the configured timeout");
        assert!(is_unavailable(&got), "{got:?}");
        let ready = ldap.ready().await;
        assert!(ready.is_err(), "{ready:?}");
    }
    assert!(matches!(
        search.lookup("alice").await,
        Err(BackendError::Unavailable { .. })
    ));

    slapd.start_again();
    for ldap in [&search, &direct] {
        assert_eq!(ldap.authenticate(&alice).await, accepted("alice", &groups));
        assert_eq!(ldap.ready().await, Ok(()));
    }
    assert!(
        search.pool_stats().opened > opened,
        "fresh service connections after the restart"
    );

    // Readiness comes back without a login: once a login found the directory down, ready()
    // tries it again by itself.
    slapd.stop();
    assert!(is_unavailable(&search.authenticate(&alice).await));
    assert!(search.ready().await.is_err());
    slapd.start_again();
    assert_eq!(search.ready().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_stay_within_the_pool() {
    let slapd = Slapd::start();
    let pool_size = 4;
    let ldap = Arc::new(
        LdapAuthenticator::new(LdapSettings {
            pool_size,
            timeout: Duration::from_secs(20),
            ..search_settings(&slapd)
        })
        .unwrap(),
    );
    let users = slapd::numbered_users();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ldap = ldap.clone();
            let user = users[i % users.len()].clone();
            tokio::spawn(async move { (ldap.authenticate(&creds(&user)).await, user) })
        })
        .collect();
    for task in tasks {
        let (got, user) = task.await.unwrap();
        assert_eq!(got, accepted(&user, &["developers"]));
    }
    let stats = ldap.pool_stats();
    assert!(
        stats.peak_open >= 1 && stats.peak_open <= pool_size,
        "{stats:?}"
    );
    assert_eq!(stats.busy, 0, "{stats:?}");
    assert!(stats.idle <= pool_size, "{stats:?}");
    let seen = slapd.peak_connections_bound_as(slapd::SERVICE_DN);
    assert!(
        (1..=pool_size).contains(&seen),
        "the server saw {seen} service connections at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_conformance_checks() {
    let mut slapd = Slapd::start();
    let search = LdapAuthenticator::new(search_settings(&slapd)).unwrap();
    let alice = Identity::new("alice", vec!["admins".into(), "developers".into()]);
    conformance::accepts_good(&search, &creds("alice"), &alice).await;
    conformance::rejects_bad(&search, &Credentials::new("alice", "wrong")).await;
    conformance::unknown_user_passes(&search, &creds("nobody")).await;
    slapd.stop();
    conformance::unavailable_is_an_error(&search, &creds("alice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_fail_over_in_order() {
    let slapd = Slapd::start();
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("ldap://127.0.0.1:{}", down.local_addr().unwrap().port());
    drop(down);
    for base in [search_settings(&slapd), direct_settings(&slapd)] {
        let ldap = LdapAuthenticator::new(LdapSettings {
            urls: vec![down_url.clone(), slapd.url()],
            ..base
        })
        .unwrap();
        assert_eq!(
            ldap.authenticate(&creds("alice")).await,
            accepted("alice", &["admins", "developers"])
        );
    }
}

/// The directory matches other spellings of a name to the entry; the identity, the group
/// filter's `{username}`, `lookup` and a rejection's account are the entry's `uid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_is_the_entry_s_attribute_not_the_name_typed() {
    let slapd = Slapd::start();
    // Groups by name (RFC 2307 memberUid, matched exactly) and by DN at once.
    let posix = |base: LdapSettings| LdapSettings {
        group_filter: "(|(memberUid={username})(member={dn}))".into(),
        ..base
    };
    let direct_with_service = LdapSettings {
        bind_dn: slapd::SERVICE_DN.into(),
        bind_password: Password::new(slapd::SERVICE_PASSWORD),
        ..direct_settings(&slapd)
    };
    for (mode, settings) in [
        ("search", posix(search_settings(&slapd))),
        ("direct", posix(direct_settings(&slapd))),
        ("direct with a service account", posix(direct_with_service)),
    ] {
        let ldap = LdapAuthenticator::new(settings).unwrap();
        for typed in ["bob", "BOB", "Bob", " bob", "bob "] {
            assert_eq!(
                ldap.authenticate(&Credentials::new(typed, slapd::password_of("bob")))
                    .await,
                accepted("bob", &["contractors"]),
                "{mode}: {typed:?}"
            );
        }
        assert_eq!(
            ldap.authenticate(&Credentials::new("ALICE", slapd::password_of("alice")))
                .await,
            accepted("alice", &["admins", "developers"]),
            "{mode}"
        );
        let rejected = ldap.authenticate(&Credentials::new("ALICE", "wrong")).await;
        let expected = if mode == "direct" {
            // Without a service account nothing can read the entry of a failed bind.
            None
        } else {
            Some("alice".to_string())
        };
        assert_eq!(
            rejected,
            Ok(AuthnOutcome::Rejected { account: expected }),
            "{mode}"
        );
        if mode != "direct" {
            assert_eq!(
                ldap.lookup("BOB").await,
                Ok(Some(Identity::new("bob", vec!["contractors".into()]))),
                "{mode}"
            );
        }
    }
}

/// Without a readable account attribute the login is refused (and logged), never answered with
/// the name typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_account_attribute_refuses_the_login() {
    let slapd = Slapd::start();
    for (mode, base) in [
        ("search", search_settings(&slapd)),
        ("direct", direct_settings(&slapd)),
    ] {
        // The seed's people have no `description`.
        let ldap = LdapAuthenticator::new(LdapSettings {
            account_attribute: "description".into(),
            ..base.clone()
        })
        .unwrap();
        assert_eq!(
            ldap.authenticate(&creds("alice")).await,
            Ok(AuthnOutcome::REJECTED),
            "{mode}"
        );
        if mode == "search" {
            assert_eq!(ldap.lookup("alice").await, Ok(None));
        }
        // Two `uid` values: which one is the account would be a guess.
        let ldap = LdapAuthenticator::new(base).unwrap();
        for typed in [slapd::MULTI_UID, "patricia"] {
            let got = ldap
                .authenticate(&Credentials::new(
                    typed,
                    slapd::password_of(slapd::MULTI_UID),
                ))
                .await;
            assert_eq!(got, Ok(AuthnOutcome::REJECTED), "{mode}: {typed}");
        }
        assert_eq!(
            ldap.authenticate(&creds("alice")).await,
            accepted("alice", &["admins", "developers"])
        );
    }
    // `cn` is single-valued in the seed (equal to the uid): any attribute name works.
    let ldap = LdapAuthenticator::new(LdapSettings {
        account_attribute: "CN".into(),
        ..search_settings(&slapd)
    })
    .unwrap();
    assert_eq!(
        ldap.authenticate(&Credentials::new("Alice", slapd::password_of("alice")))
            .await,
        accepted("alice", &["admins", "developers"])
    );
}
