//! The checks every authentication backend must pass, shared by the tests of each backend.
//! Each function panics with a message naming the backend when the backend misbehaves.

use purser_core::{Authenticator, AuthnOutcome, BackendError, Credentials, Identity};

/// The right password is accepted with the expected identity (account and groups), and
/// `lookup` finds the same identity.
pub async fn accepts_good(auth: &dyn Authenticator, good: &Credentials, expected: &Identity) {
    let name = auth.name();
    match auth.authenticate(good).await {
        Ok(AuthnOutcome::Accepted(identity)) => {
            assert_eq!(
                &identity, expected,
                "{name}: accepted with the wrong identity"
            )
        }
        other => panic!(
            "{name}: right password for {:?} gave {other:?}",
            good.username
        ),
    }
    let found = auth.lookup(&good.username).await;
    assert_eq!(
        found,
        Ok(Some(expected.clone())),
        "{name}: lookup of a known user"
    );
    assert_eq!(
        auth.ready().await,
        Ok(()),
        "{name}: a working backend must be ready"
    );
}

/// A wrong password for a known user is *rejected*: not unknown, not an error.
pub async fn rejects_bad(auth: &dyn Authenticator, bad: &Credentials) {
    let name = auth.name();
    // A backend may name the account it found (a directory's own spelling of the name).
    let got = auth.authenticate(bad).await;
    assert!(
        matches!(got, Ok(AuthnOutcome::Rejected { .. })),
        "{name}: wrong password for {:?}: {got:?}",
        bad.username
    );
    let empty = Credentials::new(bad.username.clone(), "");
    let got = auth.authenticate(&empty).await;
    assert!(
        matches!(got, Ok(AuthnOutcome::Rejected { .. })),
        "{name}: empty password for {:?}: {got:?}",
        bad.username
    );
}

/// A user the backend does not know is *unknown user* (so the chain asks the next backend),
/// whatever the password, and `lookup` finds nobody.
pub async fn unknown_user_passes(auth: &dyn Authenticator, unknown: &Credentials) {
    let name = auth.name();
    assert_eq!(
        auth.authenticate(unknown).await,
        Ok(AuthnOutcome::UnknownUser),
        "{name}: unknown user {:?}",
        unknown.username
    );
    assert_eq!(
        auth.lookup(&unknown.username).await,
        Ok(None),
        "{name}: lookup of an unknown user"
    );
}

/// A backend that cannot reach its data answers with an error (a 503), never *rejected* or
/// *unknown user*, and says so in `ready`.
pub async fn unavailable_is_an_error(auth: &dyn Authenticator, creds: &Credentials) {
    let name = auth.name();
    match auth.authenticate(creds).await {
        Err(BackendError::Unavailable { backend, .. }) => {
            assert_eq!(backend, name, "{name}: the error must name the backend")
        }
        other => panic!("{name}: an unavailable backend answered {other:?}"),
    }
    assert!(
        auth.lookup(&creds.username).await.is_err(),
        "{name}: lookup on an unavailable backend must be an error"
    );
    assert!(auth.ready().await.is_err(), "{name}: must not be ready");
}

/// An unknown user costs the same password-hashing work as a known user with a wrong
/// password, counted by the backend (`work`) rather than timed: 20 logins of each kind must
/// run the same number of bcrypt checks with the same total rounds.
pub async fn unknown_user_costs_like_a_wrong_password(
    auth: &dyn Authenticator,
    work: impl Fn() -> crate::hash_work::HashWorkSnapshot,
    wrong_password: &Credentials,
    unknown_user: &Credentials,
) {
    let name = auth.name();
    let wrong = work_of(auth, &work, wrong_password, AuthnOutcome::REJECTED).await;
    let unknown = work_of(auth, &work, unknown_user, AuthnOutcome::UnknownUser).await;
    assert!(
        wrong.bcrypt_checks > 0,
        "{name}: a wrong password ran no bcrypt check"
    );
    assert_eq!(
        wrong, unknown,
        "{name}: unknown users and wrong passwords must cost the same work"
    );
}

async fn work_of(
    auth: &dyn Authenticator,
    work: &impl Fn() -> crate::hash_work::HashWorkSnapshot,
    creds: &Credentials,
    want: AuthnOutcome,
) -> crate::hash_work::HashWorkSnapshot {
    const RUNS: u64 = 20;
    let before = work();
    for _ in 0..RUNS {
        assert_eq!(
            auth.authenticate(creds).await,
            Ok(want.clone()),
            "{}: login as {:?}",
            auth.name(),
            creds.username
        );
    }
    let after = work();
    crate::hash_work::HashWorkSnapshot {
        bcrypt_checks: after.bcrypt_checks - before.bcrypt_checks,
        bcrypt_rounds: after.bcrypt_rounds - before.bcrypt_rounds,
        other_checks: after.other_checks - before.other_checks,
    }
}
