//! htpasswd files written by the real Apache `htpasswd` tool and by `openssl passwd -apr1`.
//! These tests fail (never skip) when the tools are missing: install apache2-utils and openssl.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use purser_authn::{HtgroupDb, HtpasswdAuthenticator, HtpasswdDb, Severity};
use purser_core::{Authenticator, AuthnOutcome, Credentials, Reloadable};

/// `htpasswd -n -i FLAGS user`, the password on stdin; returns the `user:hash` line.
fn htpasswd_line(flags: &[&str], user: &str, password: &str) -> String {
    let mut child = Command::new("htpasswd")
        .arg("-n")
        .arg("-i")
        .args(flags)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Apache `htpasswd` tool must be installed (apt-get install apache2-utils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "htpasswd {flags:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        line.starts_with(&format!("{user}:")),
        "unexpected output {line:?}"
    );
    line
}

fn openssl_apr1(password: &str, salt: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["passwd", "-apr1"]);
    if let Some(salt) = salt {
        cmd.args(["-salt", salt]);
    }
    let out = cmd
        .arg(password)
        .output()
        .expect("`openssl` must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn authenticator(text: &str) -> HtpasswdAuthenticator {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.htpasswd");
    std::fs::write(&path, text).unwrap();
    let (db, issues) = HtpasswdDb::load(&path).unwrap();
    assert!(
        issues.iter().all(|i| i.severity == Severity::Warning),
        "{issues:?}"
    );
    HtpasswdAuthenticator::new(
        Arc::new(Reloadable::new(db)),
        Arc::new(Reloadable::new(HtgroupDb::empty())),
    )
}

async fn assert_verifies(auth: &HtpasswdAuthenticator, user: &str, good: &str, bad: &str) {
    let got = auth
        .authenticate(&Credentials::new(user, good))
        .await
        .unwrap();
    assert!(
        matches!(&got, AuthnOutcome::Accepted(id) if id.account == user),
        "{user}: right password gave {got:?}"
    );
    let got = auth
        .authenticate(&Credentials::new(user, bad))
        .await
        .unwrap();
    assert_eq!(got, AuthnOutcome::REJECTED, "{user}: wrong password");
}

#[tokio::test]
async fn bcrypt_cost_5_and_12() {
    let text = format!(
        "{}\n{}\n",
        htpasswd_line(&["-B", "-C", "5"], "alice", "correct horse"),
        htpasswd_line(&["-B", "-C", "12"], "bob", "p:ss:word"),
    );
    assert!(text.contains("alice:$2y$05$") && text.contains("bob:$2y$12$"));
    let auth = authenticator(&text);
    assert_verifies(&auth, "alice", "correct horse", "correct horse ").await;
    assert_verifies(&auth, "bob", "p:ss:word", "p:ss").await;
}

#[tokio::test]
async fn apr1_sha1_and_crypt() {
    let text = [
        htpasswd_line(&["-m"], "md5user", "pa:ss wörd"),
        htpasswd_line(&["-s"], "shauser", "s3cret:x"),
        htpasswd_line(&["-d"], "cryptuser", "abcdefgh"),
        htpasswd_line(&["-B", "-C", "4"], "zoë", "mot de passe é"),
    ]
    .join("\n");
    let auth = authenticator(&text);
    assert_verifies(&auth, "md5user", "pa:ss wörd", "pa:ss word").await;
    assert_verifies(&auth, "shauser", "s3cret:x", "s3cret").await;
    assert_verifies(&auth, "cryptuser", "abcdefgh", "abcdefgX").await;
    // crypt only reads 8 bytes, as Apache warns when writing it.
    assert_verifies(&auth, "cryptuser", "abcdefgh-and-more", "abcdefg").await;
    assert_verifies(&auth, "zoë", "mot de passe é", "mot de passe e").await;
}

#[tokio::test]
async fn weak_formats_give_one_warning_naming_the_users() {
    let text = [
        htpasswd_line(&["-m"], "m", "x"),
        htpasswd_line(&["-s"], "s", "x"),
        htpasswd_line(&["-d"], "d", "x"),
        htpasswd_line(&["-B", "-C", "4"], "b", "x"),
    ]
    .join("\n");
    let (db, issues) = HtpasswdDb::parse(&text, "users.htpasswd").unwrap();
    assert_eq!(db.len(), 4);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].severity, Severity::Warning);
    assert_eq!(issues[0].users, ["d", "m", "s"]);
    let shown = issues[0].to_string();
    assert!(
        shown.starts_with("users.htpasswd: users \"d\", \"m\", \"s\": weak"),
        "{shown}"
    );
}

#[tokio::test]
async fn openssl_apr1_with_every_salt_length() {
    let mut lines = Vec::new();
    for len in 1..=8 {
        let salt = &"abcdefgh"[..len];
        lines.push(format!("u{len}:{}", openssl_apr1("pass:wörd", Some(salt))));
    }
    lines.push(format!("random:{}", openssl_apr1("pass:wörd", None)));
    let auth = authenticator(&lines.join("\n"));
    for len in 1..=8 {
        assert_verifies(&auth, &format!("u{len}"), "pass:wörd", "pass:word").await;
    }
    assert_verifies(&auth, "random", "pass:wörd", "").await;
}

#[tokio::test]
async fn htpasswd_verify_agrees_with_ours() {
    // A file we did not touch, checked by htpasswd -v and by us.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let status = Command::new("htpasswd")
        .args(["-c", "-b", "-B", "-C", "4"])
        .arg(&path)
        .args(["carol", "pw:1"])
        .status()
        .expect("htpasswd must be installed");
    assert!(status.success());
    let status = Command::new("htpasswd")
        .args(["-v", "-b"])
        .arg(&path)
        .args(["carol", "pw:1"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (db, issues) = HtpasswdDb::load(&path).unwrap();
    assert!(issues.is_empty());
    let auth = HtpasswdAuthenticator::new(
        Arc::new(Reloadable::new(db)),
        Arc::new(Reloadable::new(HtgroupDb::empty())),
    );
    assert_verifies(&auth, "carol", "pw:1", "pw:2").await;
}
