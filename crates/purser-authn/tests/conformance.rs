//! The shared backend suite, run against the static and htpasswd backends, and the check that
//! unknown users cost the same bcrypt work as wrong passwords.

use std::sync::Arc;

use async_trait::async_trait;
use purser_authn::conformance;
use purser_authn::{
    hash_password, HashWorkSnapshot, HtgroupDb, HtpasswdAuthenticator, HtpasswdDb,
    StaticAuthenticator, StaticUserEntry,
};
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity, Reloadable,
};

fn static_backend() -> StaticAuthenticator {
    StaticAuthenticator::new(vec![
        StaticUserEntry {
            name: "admin".into(),
            password_hash: hash_password("adm:in pw", 4).unwrap(),
            groups: vec!["admins".into(), "developers".into()],
        },
        StaticUserEntry {
            name: "zoë".into(),
            password_hash: hash_password("pässwörd", 4).unwrap(),
            groups: vec![],
        },
    ])
    .unwrap()
}

fn htpasswd_backend() -> HtpasswdAuthenticator {
    let text = format!(
        "admin:{}\nzoë:{}\n",
        hash_password("adm:in pw", 4).unwrap(),
        hash_password("pässwörd", 4).unwrap()
    );
    let (db, _) = HtpasswdDb::parse(&text, "users.htpasswd").unwrap();
    let groups = HtgroupDb::parse("admins: admin\ndevelopers: admin\n", "groups").unwrap();
    HtpasswdAuthenticator::new(
        Arc::new(Reloadable::new(db)),
        Arc::new(Reloadable::new(groups)),
    )
}

async fn suite(auth: &dyn Authenticator) {
    let admin = Identity::new("admin", vec!["admins".into(), "developers".into()]);
    conformance::accepts_good(auth, &Credentials::new("admin", "adm:in pw"), &admin).await;
    conformance::accepts_good(
        auth,
        &Credentials::new("zoë", "pässwörd"),
        &Identity::new("zoë", vec![]),
    )
    .await;
    conformance::rejects_bad(auth, &Credentials::new("admin", "adm:in")).await;
    conformance::rejects_bad(auth, &Credentials::new("zoë", "passwort")).await;
    conformance::unknown_user_passes(auth, &Credentials::new("nobody", "adm:in pw")).await;
    conformance::unknown_user_passes(auth, &Credentials::new("Admin", "adm:in pw")).await;
    conformance::unknown_user_passes(auth, &Credentials::new("", "")).await;
}

#[tokio::test]
async fn static_backend_conforms() {
    suite(&static_backend()).await;
}

#[tokio::test]
async fn htpasswd_backend_conforms() {
    suite(&htpasswd_backend()).await;
}

/// A backend that is always down, to show the last check of the suite can pass and fail.
struct Down;

#[async_trait]
impl Authenticator for Down {
    fn name(&self) -> BackendName {
        "ldap"
    }
    async fn authenticate(&self, _: &Credentials) -> Result<AuthnOutcome, BackendError> {
        Err(BackendError::Unavailable {
            backend: "ldap",
            reason: "down".into(),
        })
    }
    async fn lookup(&self, _: &str) -> Result<Option<Identity>, BackendError> {
        Err(BackendError::Unavailable {
            backend: "ldap",
            reason: "down".into(),
        })
    }
    async fn ready(&self) -> Result<(), String> {
        Err("down".into())
    }
}

#[tokio::test]
async fn unavailable_check_accepts_a_down_backend() {
    conformance::unavailable_is_an_error(&Down, &Credentials::new("a", "b")).await;
}

#[tokio::test]
#[should_panic(expected = "an unavailable backend answered")]
async fn unavailable_check_refuses_a_working_backend() {
    conformance::unavailable_is_an_error(&static_backend(), &Credentials::new("admin", "x")).await;
}

/// Runs `n` logins and returns the work they cost.
async fn work_of(
    auth: &dyn Authenticator,
    snapshot: impl Fn() -> HashWorkSnapshot,
    creds: &Credentials,
    want: AuthnOutcome,
) -> HashWorkSnapshot {
    let before = snapshot();
    for _ in 0..20 {
        assert_eq!(auth.authenticate(creds).await.unwrap(), want);
    }
    let after = snapshot();
    HashWorkSnapshot {
        bcrypt_checks: after.bcrypt_checks - before.bcrypt_checks,
        bcrypt_rounds: after.bcrypt_rounds - before.bcrypt_rounds,
        other_checks: after.other_checks - before.other_checks,
    }
}

#[tokio::test]
async fn unknown_users_cost_what_wrong_passwords_cost_static() {
    let auth = static_backend();
    let wrong = work_of(
        &auth,
        || auth.hash_work(),
        &Credentials::new("admin", "x"),
        AuthnOutcome::Rejected,
    )
    .await;
    let unknown = work_of(
        &auth,
        || auth.hash_work(),
        &Credentials::new("ghost", "x"),
        AuthnOutcome::UnknownUser,
    )
    .await;
    assert_eq!(wrong.bcrypt_checks, 20);
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn unknown_users_cost_what_wrong_passwords_cost_htpasswd() {
    // Cost 5 users: the dummy check follows the file's cost, not a fixed one.
    let text = format!(
        "a:{}\nb:{}\n",
        hash_password("x", 5).unwrap(),
        hash_password("y", 5).unwrap()
    );
    let (db, _) = HtpasswdDb::parse(&text, "f").unwrap();
    let auth = HtpasswdAuthenticator::new(
        Arc::new(Reloadable::new(db)),
        Arc::new(Reloadable::new(HtgroupDb::empty())),
    );
    let wrong = work_of(
        &auth,
        || auth.hash_work(),
        &Credentials::new("a", "bad"),
        AuthnOutcome::Rejected,
    )
    .await;
    let unknown = work_of(
        &auth,
        || auth.hash_work(),
        &Credentials::new("zz", "bad"),
        AuthnOutcome::UnknownUser,
    )
    .await;
    assert_eq!(wrong.bcrypt_checks, 20);
    assert_eq!(wrong.bcrypt_rounds, 20 * 32);
    assert_eq!(wrong, unknown);
}
