//! Odd htpasswd files: empty, truncated, malformed, huge; reloads and the cache.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::sync::Arc;
use std::time::Duration;

use purser_authn::{
    hash_password, Cached, FileError, HtgroupDb, HtgroupError, HtpasswdAuthenticator, HtpasswdDb,
    HtpasswdError, Severity,
};
use purser_core::{Authenticator, AuthnOutcome, Credentials, Reloadable};
use purser_fs::ReadErrorKind;

fn holder(text: &str) -> Arc<Reloadable<HtpasswdDb>> {
    let (db, _) = HtpasswdDb::parse(text, "users.htpasswd").unwrap();
    Arc::new(Reloadable::new(db))
}

#[test]
fn empty_and_comment_only_files_load_with_no_users() {
    for text in ["", "\n", "# nobody yet\n\n   \n", "\r\n"] {
        let (db, issues) = HtpasswdDb::parse(text, "f").unwrap();
        assert!(db.is_empty(), "{text:?}");
        assert!(issues.is_empty(), "{text:?}");
    }
}

#[test]
fn a_truncated_file_never_panics_and_keeps_what_it_can() {
    let hash = hash_password("pw", 4).unwrap();
    let full = format!("alice:{hash}\nbob:{hash}\n");
    for cut in 0..=full.len() {
        let Some(part) = full.get(..cut) else {
            continue;
        };
        match HtpasswdDb::parse(part, "f") {
            Ok((db, issues)) => {
                // Whole lines load; a cut hash is skipped with an issue naming its line.
                assert!(db.len() <= 2);
                for i in issues {
                    assert_eq!(i.severity, Severity::LineRefused);
                    assert!(!i.to_string().contains(&hash[7..20]));
                }
            }
            // Cut inside a user name: no ':' on the last line, the whole file is refused.
            Err(e) => assert!(matches!(e, HtpasswdError::MissingColon { .. }), "{e}"),
        }
    }
    let (db, issues) = HtpasswdDb::parse(&full[..full.len() - 10], "f").unwrap();
    assert_eq!(db.len(), 1);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].line, Some(2));
    assert_eq!(issues[0].users, ["bob"]);
}

#[test]
fn invalid_utf8_is_refused_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, b"alice:x\nb\xffb:y\n").unwrap();
    let err = HtpasswdDb::load(&path).unwrap_err();
    assert!(
        matches!(&err, HtpasswdError::File(FileError::Read(e))
            if matches!(e.kind(), ReadErrorKind::NotUtf8 { offset: 9 })),
        "{err}"
    );
    let missing = HtpasswdDb::load(dir.path().join("nope")).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn the_size_bound_is_enforced_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(purser_authn::MAX_FILE_BYTES + 1).unwrap();
    let err = HtpasswdDb::load(&path).unwrap_err();
    assert!(
        matches!(&err, HtpasswdError::File(FileError::Read(e))
            if matches!(e.kind(), ReadErrorKind::TooLarge { .. })),
        "{err}"
    );
    assert!(
        err.to_string().ends_with(&format!(
            "big: the file is larger than {} bytes",
            purser_authn::MAX_FILE_BYTES
        )),
        "{err}"
    );
    let err = HtgroupDb::load(&path).unwrap_err();
    assert!(
        matches!(&err, HtgroupError::File(FileError::Read(e))
            if matches!(e.kind(), ReadErrorKind::TooLarge { .. })),
        "{err}"
    );
}

/// A FIFO in place of the users or groups file (a mistake, or a trick) is refused at once:
/// reading it would wait for a writer forever and hold the reload.
#[cfg(unix)]
#[test]
fn a_fifo_is_refused_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("users.htgroup");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send((
            HtpasswdDb::load(&path)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            HtgroupDb::load(&path)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ));
    });
    let (users, groups) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("loading a FIFO answers without a writer");
    for err in [users.unwrap_err(), groups.unwrap_err()] {
        assert!(
            err.contains("users.htgroup: not a regular file (a FIFO)"),
            "{err}"
        );
    }
}

/// The example the documentation once gave: `#` after members is no comment in an htgroup
/// file (as in Apache), so `several` and `lines` became developers. They still do, as Apache
/// would have it, but loading the file warns, naming the file and the line.
#[tokio::test]
async fn an_inline_comment_in_htgroup_makes_members_and_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.htgroup");
    std::fs::write(
        &path,
        "# group: user user ...\ndevelopers: alice bob\nadmins: alice\ndevelopers: carol          # several lines for one group add up\n",
    )
    .unwrap();
    let (db, issues) = HtgroupDb::load(&path).unwrap();
    assert_eq!(issues.len(), 1, "{issues:?}");
    let issue = &issues[0];
    assert_eq!(issue.severity, Severity::Warning);
    assert_eq!(issue.line, Some(4));
    assert_eq!(issue.source_name, path.display().to_string());
    assert_eq!(
        issue.users,
        ["#", "several", "lines", "for", "one", "group", "add", "up"]
    );
    let shown = issue.to_string();
    assert!(
        shown.starts_with(&format!("{}:4: users \"#\", \"several\"", path.display())),
        "{shown}"
    );

    let hash = hash_password("pw", 4).unwrap();
    let users = holder(&format!("several:{hash}\ncarol:{hash}\n"));
    let auth = HtpasswdAuthenticator::new(users, Arc::new(Reloadable::new(db)));
    let several = auth.lookup("several").await.unwrap().unwrap();
    assert_eq!(several.groups, ["developers"]);
    let carol = auth.lookup("carol").await.unwrap().unwrap();
    assert_eq!(carol.groups, ["developers"]);

    // The same members on a line of their own, and the comment on its own line: no warning.
    let (_, issues) = HtgroupDb::parse(
        "# several lines add up\ndevelopers: carol\n",
        "users.htgroup",
    )
    .unwrap();
    assert!(issues.is_empty(), "{issues:?}");
}

#[tokio::test]
async fn a_hundred_thousand_users_load_and_authenticate() {
    let hash = hash_password("shared", 4).unwrap();
    let mut text = String::with_capacity(100_000 * 70);
    for i in 0..100_000 {
        text.push_str(&format!("user{i}:{hash}\n"));
    }
    let (db, issues) = HtpasswdDb::parse(&text, "big").unwrap();
    assert_eq!(db.len(), 100_000);
    assert!(issues.is_empty());
    let auth = HtpasswdAuthenticator::new(
        Arc::new(Reloadable::new(db)),
        Arc::new(Reloadable::new(HtgroupDb::empty())),
    );
    let got = auth
        .authenticate(&Credentials::new("user99999", "shared"))
        .await
        .unwrap();
    assert!(matches!(got, AuthnOutcome::Accepted(_)));
    assert_eq!(
        auth.authenticate(&Credentials::new("user100000", "shared"))
            .await
            .unwrap(),
        AuthnOutcome::UnknownUser
    );
}

#[tokio::test]
async fn groups_come_from_the_current_htgroup_file() {
    let hash = hash_password("pw", 4).unwrap();
    let users = holder(&format!("alice:{hash}\n"));
    let groups = Arc::new(Reloadable::new(
        HtgroupDb::parse("devs: alice\nadmins: bob\n", "groups")
            .unwrap()
            .0,
    ));
    let auth = HtpasswdAuthenticator::new(users, Arc::clone(&groups));
    let creds = Credentials::new("alice", "pw");
    let g0 = auth.generation();
    match auth.authenticate(&creds).await.unwrap() {
        AuthnOutcome::Accepted(id) => assert_eq!(id.groups, ["devs"]),
        other => panic!("{other:?}"),
    }
    groups.store(
        HtgroupDb::parse("devs: alice\nadmins: alice\n", "groups")
            .unwrap()
            .0,
    );
    assert_ne!(auth.generation(), g0);
    let id = auth.lookup("alice").await.unwrap().unwrap();
    assert_eq!(id.groups, ["admins", "devs"]);
}

#[tokio::test]
async fn the_cache_forgets_at_each_reload_and_never_serves_an_old_password() {
    let old = hash_password("old-pw", 4).unwrap();
    let new = hash_password("new-pw", 4).unwrap();
    let users = holder(&format!("alice:{old}\n"));
    let groups = Arc::new(Reloadable::new(HtgroupDb::empty()));
    let inner = Arc::new(HtpasswdAuthenticator::new(Arc::clone(&users), groups));
    let cached = Cached::new(Arc::clone(&inner), Duration::from_secs(3600));

    let old_creds = Credentials::new("alice", "old-pw");
    let (r, hit) = cached.authenticate_traced(&old_creds).await;
    assert!(matches!(r, Ok(AuthnOutcome::Accepted(_))) && !hit);
    let (r, hit) = cached.authenticate_traced(&old_creds).await;
    assert!(matches!(r, Ok(AuthnOutcome::Accepted(_))) && hit);
    let checks = inner.hash_work().bcrypt_checks;

    // The password changes in the file; the watcher stores the new version.
    let (db, _) = HtpasswdDb::parse(&format!("alice:{new}\n"), "users.htpasswd").unwrap();
    users.store(db);

    let (r, hit) = cached.authenticate_traced(&old_creds).await;
    assert_eq!(r, Ok(AuthnOutcome::REJECTED));
    assert!(!hit);
    assert_eq!(inner.hash_work().bcrypt_checks, checks + 1);
    assert!(cached.cache().is_empty(), "the stale entry is dropped");

    let new_creds = Credentials::new("alice", "new-pw");
    let (r, hit) = cached.authenticate_traced(&new_creds).await;
    assert!(matches!(r, Ok(AuthnOutcome::Accepted(_))) && !hit);
    let (_, hit) = cached.authenticate_traced(&new_creds).await;
    assert!(hit);
}
