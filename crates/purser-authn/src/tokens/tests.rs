use std::time::Duration;

use purser_core::ManualClock;

use super::*;

fn no_check(_: &ScopeCap) -> Result<(), String> {
    Ok(())
}

fn entry(name: &str, secret: &str, expires: Option<i64>) -> String {
    let groups = vec!["ci".to_string()];
    let scopes = vec!["repository:ci/**:pull,push".to_string()];
    NewToken {
        name,
        account: name,
        groups: &groups,
        scopes: Some(&scopes),
        sha256: &secret_sha256(secret),
        created: 1_700_000_000,
        expires,
        description: "a robot",
    }
    .render()
}

#[test]
fn secrets_have_their_shape_and_checksum() {
    let s = generate_secret();
    assert_eq!(s.len(), SECRET_LEN);
    assert!(s.starts_with("purser_") && looks_like_secret(&s) && secret_is_valid(&s));
    assert_ne!(s, generate_secret());
    // One changed digit anywhere breaks the checksum.
    for i in [7, 30, SECRET_LEN - 1] {
        let mut b = s.clone().into_bytes();
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        let typo = String::from_utf8(b).unwrap();
        assert!(looks_like_secret(&typo) && !secret_is_valid(&typo), "{i}");
    }
    assert!(!looks_like_secret("hunter2"));
    assert!(!secret_is_valid(&s.to_uppercase()));
    assert_eq!(secret_sha256(&s).len(), 64);
}

#[test]
fn a_rendered_file_parses_back() {
    let (a, b) = (generate_secret(), generate_secret());
    let text = format!(
        "# machine tokens\n{}{}",
        entry("ci-app", &a, Some(1_800_000_000)),
        entry("deploy", &b, None)
    );
    let db = TokensDb::parse(&text, "tokens.yaml", &no_check).unwrap();
    assert_eq!(db.len(), 2);
    let e = db.get("ci-app").unwrap();
    assert_eq!((e.account.as_str(), e.line), ("ci-app", 2));
    assert_eq!(e.groups, ["ci"]);
    assert_eq!(
        e.cap.as_ref().unwrap()[0].to_string(),
        "repository:ci/**:pull,push"
    );
    assert_eq!(e.expires, Some(1_800_000_000));
    assert_eq!(e.created, "2023-11-14T22:13:20Z");
    assert_eq!(db.get("deploy").unwrap().expires, None);
    assert_eq!(db.get("deploy").unwrap().line, 10);
    assert_eq!(db.expired_count(1_900_000_000), 1);
    // An empty or comment-only file holds no tokens.
    assert!(TokensDb::parse("", "t", &no_check).unwrap().is_empty());
    assert!(TokensDb::parse("# none yet\n", "t", &no_check)
        .unwrap()
        .is_empty());
    assert!(TokensDb::parse("[]\n", "t", &no_check).unwrap().is_empty());
}

#[test]
fn problems_name_the_line_and_never_the_digest() {
    let a = generate_secret();
    let good = entry("ci-app", &a, None);
    let digest = secret_sha256(&a);
    let cases: Vec<(String, &str, usize)> = vec![
        (format!("{good}{good}"), "used twice", 9),
        (
            good.replace("  expires: null\n", ""),
            "expires: say when",
            1,
        ),
        (
            good.replace("expires: null", "expires: \"tomorrow\""),
            "RFC 3339",
            1,
        ),
        (good.replace(&digest, "abc"), "64 lowercase hex", 1),
        (
            good.replace("name: \"ci-app\"", "name: \"ci app\""),
            "letters, digits",
            1,
        ),
        (
            good.replace("repository:ci/**:pull,push", "repository:x"),
            "scopes",
            1,
        ),
        (format!("{good}  colour: blue\n"), "unknown field", 9),
        // A syntax error carries the parser's line.
        (format!("{good}- name: x\n  - y: ]\n"), "", 0),
    ];
    for (text, want, line) in cases {
        let e = TokensDb::parse(&text, "tokens.yaml", &no_check).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(want), "{shown}\n{text}");
        if line > 0 {
            assert!(
                shown.starts_with(&format!("tokens.yaml:{line}: ")),
                "{shown}"
            );
        } else {
            assert!(shown.starts_with("tokens.yaml:"), "{shown}");
        }
        assert!(!shown.contains(&digest), "{shown}");
    }
    // The cap check of the caller (the policy's patterns) runs on every scope.
    fn refuse(c: &ScopeCap) -> Result<(), String> {
        Err(format!("bad pattern {}", c.name))
    }
    let e = TokensDb::parse(&good, "tokens.yaml", &refuse).unwrap_err();
    assert!(e.to_string().contains("bad pattern ci/**"), "{e}");
}

fn backend(text: &str, clock: Arc<ManualClock>) -> TokensAuthenticator {
    let db = TokensDb::parse(text, "tokens.yaml", &no_check).unwrap();
    TokensAuthenticator::with_clock(Arc::new(Reloadable::new(db)), clock)
}

#[tokio::test]
async fn login_outcomes() {
    let clock = Arc::new(ManualClock::new());
    let now = unix_seconds(clock.wall());
    let secret = generate_secret();
    let auth = backend(&entry("ci-app", &secret, Some(now + 3)), clock.clone());
    let login = |user: &str, pw: &str| {
        let creds = Credentials::new(user, pw);
        let auth = &auth;
        async move { auth.authenticate(&creds).await }
    };

    let AuthnOutcome::Accepted(who) = login("ci-app", &secret).await.unwrap() else {
        panic!("the right secret is accepted")
    };
    assert_eq!(who.groups, ["ci"]);
    assert_eq!(who.machine.as_ref().unwrap().name, "ci-app");
    assert_eq!(who.machine.as_ref().unwrap().expires, Some(now + 3));
    assert_eq!(auth.lookup("ci-app").await.unwrap(), Some(who.clone()));

    let other = generate_secret();
    assert_eq!(
        login("ci-app", &other).await.unwrap(),
        AuthnOutcome::Rejected {
            account: Some("ci-app".into())
        }
    );
    // A typo is refused before the file is asked, even for a name it does not hold.
    let mut typo = secret.clone();
    typo.replace_range(10..11, if &secret[10..11] == "a" { "b" } else { "a" });
    assert_eq!(
        login("nobody", &typo).await.unwrap(),
        AuthnOutcome::REJECTED
    );
    assert_eq!(
        login("nobody", &secret).await.unwrap(),
        AuthnOutcome::UnknownUser
    );
    assert_eq!(
        login("nobody", "hunter2").await.unwrap(),
        AuthnOutcome::UnknownUser
    );

    let stamp = auth.credential_stamp("ci-app").unwrap();
    assert!(!stamp.contains(&secret_sha256(&secret)[..16]));
    let before = auth.generation();
    clock.advance(Duration::from_secs(3));
    assert_ne!(
        auth.generation(),
        before,
        "an expiry passing is a new generation"
    );
    match login("ci-app", &secret).await.unwrap() {
        AuthnOutcome::Refused { account, reason } => {
            assert_eq!(account.as_deref(), Some("ci-app"));
            assert!(reason.contains(&format_time(now + 3)), "{reason}");
            assert!(!reason.contains(&secret));
        }
        other => panic!("expired: {other:?}"),
    }
    assert_eq!(auth.lookup("ci-app").await.unwrap(), None);
}
