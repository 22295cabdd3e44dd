use super::*;

fn search_settings(url: &str) -> LdapSettings {
    LdapSettings {
        urls: vec![url.into()],
        bind_dn: "cn=purser,ou=services,dc=example,dc=org".into(),
        bind_password: Password::new("service-secret"),
        user_base: "ou=people,dc=example,dc=org".into(),
        group_base: "ou=groups,dc=example,dc=org".into(),
        timeout: Duration::from_secs(2),
        ..LdapSettings::default()
    }
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn keys(err: LdapError) -> Vec<&'static str> {
    let LdapError::Settings(problems) = err;
    problems.iter().map(|p| p.key).collect()
}

#[test]
fn valid_settings_build_without_contacting_the_directory() {
    let ldap = LdapAuthenticator::new(search_settings("ldap://127.0.0.1:1")).unwrap();
    assert_eq!(ldap.pool_stats(), PoolStats::default());
    let direct = LdapAuthenticator::new(LdapSettings {
        user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
        ..LdapSettings::default()
    });
    assert!(direct.is_ok());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let err = LdapAuthenticator::new(LdapSettings {
        urls: vec!["http://x".into(), "not a url".into()],
        ca_file: "/nonexistent/ca.pem".into(),
        bind_dn: "cn=svc".into(),
        user_filter: "uid=x".into(),
        group_base: "ou=groups".into(),
        group_filter: "(member={dn}".into(),
        group_name_attribute: "c n".into(),
        account_attribute: String::new(),
        timeout: Duration::ZERO,
        pool_size: 0,
        ..LdapSettings::default()
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("authn.ldap.urls"), "{text}");
    assert_eq!(
        keys(err),
        [
            "urls",
            "urls",
            "ca_file",
            "bind_password",
            "user_base",
            "user_filter",
            "group_filter",
            "group_name_attribute",
            "account_attribute",
            "timeout",
            "pool_size"
        ]
    );
}

#[test]
fn account_attribute_must_be_an_attribute_name() {
    for good in [
        "uid",
        "sAMAccountName",
        "userPrincipalName",
        "0.9.2342.19200300.100.1.1",
        "uid;lang-en",
    ] {
        assert!(is_attribute_name(good), "{good}");
    }
    for bad in [
        "",
        "u id",
        "uid)",
        "(uid=*)",
        "-uid",
        "uid;",
        "*",
        "uid\0",
        &"a".repeat(129),
    ] {
        assert!(!is_attribute_name(bad), "{bad:?}");
        let err = LdapAuthenticator::new(LdapSettings {
            user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
            account_attribute: bad.to_string(),
            ..LdapSettings::default()
        })
        .unwrap_err();
        assert_eq!(keys(err), ["account_attribute"], "{bad:?}");
    }
}

#[test]
fn a_mode_is_required() {
    let err = LdapAuthenticator::new(LdapSettings::default()).unwrap_err();
    assert_eq!(keys(err), ["bind_dn"]);
    let err = LdapAuthenticator::new(LdapSettings {
        user_dn: "uid=fixed,dc=example,dc=org".into(),
        ..LdapSettings::default()
    })
    .unwrap_err();
    assert_eq!(keys(err), ["user_dn"]);
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = LdapAuthenticator::new(LdapSettings {
        ca_file: path,
        ..search_settings("ldaps://127.0.0.1:1")
    })
    .unwrap_err();
    assert_eq!(keys(err), ["ca_file"]);
}

#[test]
fn debug_output_shows_no_secret() {
    let settings = search_settings("ldap://127.0.0.1:1");
    assert!(!format!("{settings:?}").contains("service-secret"));
    let ldap = LdapAuthenticator::new(settings).unwrap();
    assert!(!format!("{ldap:?}").contains("service-secret"));
}

#[tokio::test]
async fn a_directory_that_is_down_is_unavailable_not_a_rejection() {
    let ldap = LdapAuthenticator::new(search_settings(&format!(
        "ldap://127.0.0.1:{}",
        closed_port()
    )))
    .unwrap();
    let err = ldap
        .authenticate(&Credentials::new("alice", "pw"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Unavailable {
                backend: "ldap",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("service-secret"));
    assert!(ldap.ready().await.is_err());
    assert!(matches!(
        ldap.lookup("alice").await,
        Err(BackendError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn refusals_made_without_the_directory() {
    // Nothing listens: any attempt to reach the directory would be an error, so these
    // answers prove no connection was tried.
    let url = format!("ldap://127.0.0.1:{}", closed_port());
    let search = LdapAuthenticator::new(search_settings(&url)).unwrap();
    let direct = LdapAuthenticator::new(LdapSettings {
        urls: vec![url],
        user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
        ..LdapSettings::default()
    })
    .unwrap();
    let long = "a".repeat(MAX_USERNAME_LEN + 1);
    for (name, password, from_search, from_direct) in [
        ("alice", "", AuthnOutcome::REJECTED, AuthnOutcome::REJECTED),
        (
            "a\0b",
            "pw",
            AuthnOutcome::UnknownUser,
            AuthnOutcome::REJECTED,
        ),
        (
            long.as_str(),
            "pw",
            AuthnOutcome::UnknownUser,
            AuthnOutcome::REJECTED,
        ),
        ("", "pw", AuthnOutcome::UnknownUser, AuthnOutcome::REJECTED),
    ] {
        let creds = Credentials::new(name, password);
        assert_eq!(search.authenticate(&creds).await, Ok(from_search));
        assert_eq!(direct.authenticate(&creds).await, Ok(from_direct));
    }
    let huge = Credentials::new("alice", "x".repeat(MAX_PASSWORD_LEN + 1));
    assert_eq!(search.authenticate(&huge).await, Ok(AuthnOutcome::REJECTED));
    assert_eq!(search.lookup("a\0b").await, Ok(None));
}

#[tokio::test]
async fn direct_bind_without_service_account_cannot_look_up() {
    let direct = LdapAuthenticator::new(LdapSettings {
        urls: vec![format!("ldap://127.0.0.1:{}", closed_port())],
        user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
        ..LdapSettings::default()
    })
    .unwrap();
    assert!(matches!(
        direct.lookup("alice").await,
        Err(BackendError::Unsupported {
            backend: "ldap",
            ..
        })
    ));
}

#[tokio::test]
async fn urls_are_tried_in_order() {
    // The first URL is down, the second listens (a bare TCP listener is enough to connect).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    let connector = Connector::new(
        vec![
            format!("ldap://127.0.0.1:{}", closed_port()),
            format!("ldap://127.0.0.1:{up}"),
        ],
        false,
        None,
        Duration::from_secs(2),
    );
    assert!(connector.connect().await.is_ok());
    accept.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_directory_that_never_answers_times_out_as_unavailable() {
    // Accepts connections and keeps them open without ever answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    for settings in [
        search_settings(&format!("ldap://127.0.0.1:{port}")),
        LdapSettings {
            urls: vec![format!("ldap://127.0.0.1:{port}")],
            user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
            ..LdapSettings::default()
        },
    ] {
        let ldap = LdapAuthenticator::new(LdapSettings {
            timeout: Duration::from_millis(300),
            ..settings
        })
        .unwrap();
        // The outer bound only keeps a broken test from hanging.
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            ldap.authenticate(&Credentials::new("alice", "pw")),
        )
        .await
        .expect("the backend must give up by itself");
        assert!(
            matches!(got, Err(BackendError::Unavailable { .. })),
            "{got:?}"
        );
        assert_eq!(ldap.pool_stats().busy, 0);
    }
    hold.abort();
}

#[test]
fn a_bind_name_that_is_no_dn_needs_where_to_find_the_entry() {
    let upn = LdapSettings {
        user_dn: "{username}@example.test".into(),
        ..LdapSettings::default()
    };
    let err = LdapAuthenticator::new(upn.clone()).unwrap_err();
    assert_eq!(keys(err), ["user_base"]);
    assert!(LdapAuthenticator::new(LdapSettings {
        user_base: "CN=Users,DC=example,DC=test".into(),
        user_filter: "(userPrincipalName={username}@example.test)".into(),
        ..upn
    })
    .is_ok());
}

#[test]
fn tls_server_name_must_be_a_name_or_an_address() {
    let bad = LdapSettings {
        user_dn: "uid={username},ou=people,dc=example,dc=org".into(),
        urls: vec!["ldaps://127.0.0.1".into()],
        tls_server_name: "not a name!".into(),
        ..LdapSettings::default()
    };
    assert_eq!(
        keys(LdapAuthenticator::new(bad.clone()).unwrap_err()),
        ["tls_server_name"]
    );
    for good in ["dc1.example.test", "127.0.0.1"] {
        let mut s = bad.clone();
        s.tls_server_name = good.into();
        // The system's roots are read (ca_file is empty); a host without any fails on ca_file.
        let result = LdapAuthenticator::new(s);
        if let Err(e) = result {
            assert_eq!(keys(e), ["ca_file"], "{good}");
        }
    }
}
