//! The shared backend suite, run against the static and htpasswd backends, and the check that
//! unknown users cost the same bcrypt work as wrong passwords.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::sync::Arc;

use async_trait::async_trait;
use purser_authn::conformance;
use purser_authn::{
    hash_password, HtgroupDb, HtpasswdAuthenticator, HtpasswdDb, StaticAuthenticator,
    StaticUserEntry,
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
    let (groups, _) = HtgroupDb::parse("admins: admin\ndevelopers: admin\n", "groups").unwrap();
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

#[tokio::test]
async fn tokens_backend_conforms() {
    use purser_authn::tokens::{generate_secret, secret_sha256, NewToken};
    let (secret, other) = (generate_secret(), generate_secret());
    let groups = vec!["robots".to_string()];
    let text = NewToken {
        name: "ci-app",
        account: "ci",
        groups: &groups,
        scopes: None,
        sha256: &secret_sha256(&secret),
        created: 1_700_000_000,
        expires: None,
        description: "",
    }
    .render();
    let db = purser_authn::TokensDb::parse(&text, "tokens.yaml", &|_| Ok(())).unwrap();
    let auth = purser_authn::TokensAuthenticator::new(Arc::new(Reloadable::new(db)));
    let mut who = Identity::new("ci", groups.clone());
    who.machine = Some(purser_core::MachineLogin {
        name: "ci-app".into(),
        expires: None,
    });
    conformance::accepts_good(&auth, &Credentials::new("ci-app", secret.as_str()), &who).await;
    conformance::rejects_bad(&auth, &Credentials::new("ci-app", other.as_str())).await;
    conformance::rejects_bad(&auth, &Credentials::new("ci-app", "hunter2")).await;
    // The account is not a login name: only the token's name is.
    conformance::unknown_user_passes(&auth, &Credentials::new("ci", secret.as_str())).await;
    conformance::unknown_user_passes(&auth, &Credentials::new("nobody", "x")).await;
    // No password hashing to count: the secret is hashed (one SHA-256) before the name is
    // looked up, so a known and an unknown name cost the same by construction.
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

#[tokio::test]
async fn unknown_users_cost_what_wrong_passwords_cost_static() {
    let auth = static_backend();
    conformance::unknown_user_costs_like_a_wrong_password(
        &auth,
        || auth.hash_work(),
        &Credentials::new("admin", "x"),
        &Credentials::new("ghost", "x"),
    )
    .await;
    assert_eq!(auth.hash_work().bcrypt_checks, 40);
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
    conformance::unknown_user_costs_like_a_wrong_password(
        &auth,
        || auth.hash_work(),
        &Credentials::new("a", "bad"),
        &Credentials::new("zz", "bad"),
    )
    .await;
    assert_eq!(auth.hash_work().bcrypt_rounds, 40 * 32);
}

/// Does bcrypt work only for known users (the leak the check exists to catch).
struct Leaky {
    inner: StaticAuthenticator,
}

#[async_trait]
impl Authenticator for Leaky {
    fn name(&self) -> BackendName {
        "static"
    }
    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        if creds.username == "admin" {
            self.inner.authenticate(creds).await
        } else {
            Ok(AuthnOutcome::UnknownUser)
        }
    }
    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
        self.inner.lookup(account).await
    }
}

#[tokio::test]
#[should_panic(expected = "must cost the same work")]
async fn the_work_check_catches_an_early_return_for_unknown_users() {
    let auth = Leaky {
        inner: static_backend(),
    };
    conformance::unknown_user_costs_like_a_wrong_password(
        &auth,
        || auth.inner.hash_work(),
        &Credentials::new("admin", "x"),
        &Credentials::new("ghost", "x"),
    )
    .await;
}
