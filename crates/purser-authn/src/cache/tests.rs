use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity, ManualClock,
};

use super::*;

fn creds(u: &str, p: &str) -> Credentials {
    Credentials::new(u, p)
}

// === the store ===

#[test]
fn remembers_per_password_and_version() {
    let c = CredentialCache::new(Duration::from_secs(60), 10);
    let id = Identity::new("alice", vec!["g".into()]);
    c.insert(&creds("alice", "pw"), 3, id.clone());
    assert_eq!(c.get(&creds("alice", "pw"), 3), Some(id));
    assert_eq!(c.get(&creds("alice", "pw2"), 3), None);
    assert_eq!(c.get(&creds("alic", "epw"), 3), None);
    assert_eq!(c.get(&creds("alice", "pw"), 4), None);
    // An entry of another version is removed.
    assert_eq!(c.len(), 0);
}

#[test]
fn zero_ttl_is_pass_through() {
    let c = CredentialCache::new(Duration::ZERO, 10);
    c.insert(&creds("a", "b"), 0, Identity::new("a", vec![]));
    assert_eq!(c.get(&creds("a", "b"), 0), None);
    assert!(c.is_empty());
}

#[test]
fn expires_when_the_clock_passes_the_ttl() {
    let clock = Arc::new(ManualClock::new());
    let c = CredentialCache::with_clock(Duration::from_secs(60), 10, clock.clone());
    c.insert(&creds("a", "b"), 0, Identity::new("a", vec![]));
    clock.advance(Duration::from_secs(59));
    assert!(c.get(&creds("a", "b"), 0).is_some());
    clock.advance(Duration::from_secs(1));
    assert_eq!(c.get(&creds("a", "b"), 0), None);
}

#[test]
fn stays_bounded_and_keeps_the_recently_used() {
    let c = CredentialCache::new(Duration::from_secs(60), 100);
    c.insert(&creds("busy", "pw"), 0, Identity::new("busy", vec![]));
    for i in 0..1000 {
        let u = format!("u{i}");
        c.insert(&creds(&u, "pw"), 0, Identity::new(u.clone(), vec![]));
        // A user who keeps logging in is never the least recently used.
        assert!(c.get(&creds("busy", "pw"), 0).is_some(), "evicted at {i}");
    }
    assert_eq!(c.len(), 100);
    assert!(c.get(&creds("u999", "pw"), 0).is_some());
    assert!(c.get(&creds("u0", "pw"), 0).is_none());
}

#[test]
fn expired_entries_leave_before_a_useful_one_is_evicted() {
    let clock = Arc::new(ManualClock::new());
    let c = CredentialCache::with_clock(Duration::from_secs(60), 3, clock.clone());
    c.insert(&creds("old", "pw"), 0, Identity::new("old", vec![]));
    clock.advance(Duration::from_secs(30));
    c.insert(&creds("a", "pw"), 0, Identity::new("a", vec![]));
    c.insert(&creds("b", "pw"), 0, Identity::new("b", vec![]));
    clock.advance(Duration::from_secs(31));
    c.insert(&creds("c", "pw"), 0, Identity::new("c", vec![]));
    assert_eq!(c.len(), 3);
    for u in ["a", "b", "c"] {
        assert!(c.get(&creds(u, "pw"), 0).is_some(), "{u}");
    }
}

#[test]
fn debug_shows_no_key() {
    let c = CredentialCache::new(Duration::from_secs(1), 1);
    let shown = format!("{c:?} {:?}", c.key(&creds("alice", "pw")));
    assert!(!shown.contains("hmac") && !shown.contains("pw"), "{shown}");
}

// === the wrapper ===

/// A backend with users, per-user versions, a switch to take it down, an optional delay per
/// check (under tokio's paused clock, so that every concurrent call arrives first) and a count
/// of checks.
/// Password, version, groups.
type FakeUser = (String, u64, Vec<String>);

struct Fake {
    users: Mutex<HashMap<String, FakeUser>>,
    down: AtomicBool,
    busy: AtomicBool,
    delay: Duration,
    checks: AtomicUsize,
}

impl Fake {
    fn new(users: &[(&str, &str)], delay: Duration) -> Arc<Self> {
        Arc::new(Fake {
            users: Mutex::new(
                users
                    .iter()
                    .map(|(u, p)| ((*u).to_owned(), ((*p).to_owned(), 0, vec!["g".into()])))
                    .collect(),
            ),
            down: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            delay,
            checks: AtomicUsize::new(0),
        })
    }

    fn set_password(&self, user: &str, password: &str) {
        let mut users = self.users.lock().unwrap();
        let e = users.get_mut(user).unwrap();
        e.0 = password.to_owned();
        e.1 += 1;
    }

    fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Authenticator for Fake {
    fn name(&self) -> BackendName {
        "ldap"
    }
    async fn authenticate(&self, c: &Credentials) -> Result<AuthnOutcome, BackendError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.busy.load(Ordering::SeqCst) {
            return Err(BackendError::Busy { backend: "ldap" });
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable {
                backend: "ldap",
                reason: "connection refused".into(),
            });
        }
        let users = self.users.lock().unwrap();
        Ok(match users.get(&c.username) {
            Some((pw, _, groups)) if pw == c.password.expose() => {
                AuthnOutcome::Accepted(Identity::new(c.username.clone(), groups.clone()))
            }
            Some(_) => AuthnOutcome::REJECTED,
            None => AuthnOutcome::UnknownUser,
        })
    }
    async fn lookup(&self, _: &str) -> Result<Option<Identity>, BackendError> {
        Ok(None)
    }
    fn account_version(&self, name: &str) -> u64 {
        self.users
            .lock()
            .unwrap()
            .get(name)
            .map_or(u64::MAX, |e| e.1)
    }
}

fn settings(ttl: u64, max_entries: usize, stale: u64) -> CacheSettings {
    CacheSettings {
        ttl: Duration::from_secs(ttl),
        max_entries,
        stale_if_unavailable: Duration::from_secs(stale),
    }
}

fn wrap(fake: &Arc<Fake>, s: CacheSettings, clock: &Arc<ManualClock>) -> Arc<Cached<Fake>> {
    Arc::new(Cached::with_settings(fake.clone(), s, clock.clone()))
}

#[tokio::test]
async fn a_changed_user_misses_while_the_others_keep_hitting() {
    let fake = Fake::new(&[("alice", "a"), ("bob", "b")], Duration::ZERO);
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(60, 10, 0), &clock);
    for (u, p) in [("alice", "a"), ("bob", "b")] {
        assert_eq!(c.answer(&creds(u, p)).await.source, AnswerSource::Backend);
    }
    fake.set_password("bob", "b2");
    let a = c.answer(&creds("alice", "a")).await;
    assert_eq!(a.source, AnswerSource::Cache);
    // Bob's old password is refused at once, by the backend.
    let b = c.answer(&creds("bob", "b")).await;
    assert_eq!(b.source, AnswerSource::Backend);
    assert_eq!(b.result, Ok(AuthnOutcome::REJECTED));
    assert_eq!(fake.checks(), 3);
}

/// One million made-up user names and passwords: none takes a place in the cache (only accepted
/// logins are kept), and the real users keep hitting it throughout.
#[tokio::test]
async fn invented_pairs_never_enter_and_real_users_keep_hitting() {
    let real: Vec<(String, String)> = (0..50)
        .map(|i| (format!("user{i}"), format!("pw{i}")))
        .collect();
    let pairs: Vec<(&str, &str)> = real.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let fake = Fake::new(&pairs, Duration::ZERO);
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(600, 1000, 0), &clock);
    for (u, p) in &pairs {
        c.answer(&creds(u, p)).await;
    }
    for i in 0..1_000_000u32 {
        // Half of them a real user's name with a made-up password.
        let user = if i % 2 == 0 {
            format!("invented{i}")
        } else {
            pairs[(i as usize / 2) % pairs.len()].0.to_owned()
        };
        let a = c.answer(&creds(&user, &format!("guess{i}"))).await;
        assert!(!matches!(a.result, Ok(AuthnOutcome::Accepted(_))));
        if i % 10_000 == 0 {
            let (u, p) = pairs[(i as usize / 10_000) % pairs.len()];
            assert_eq!(c.answer(&creds(u, p)).await.source, AnswerSource::Cache);
        }
    }
    assert_eq!(c.cache().len(), pairs.len());
    for (u, p) in &pairs {
        assert_eq!(
            c.answer(&creds(u, p)).await.source,
            AnswerSource::Cache,
            "{u}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_one_login_is_checked_once() {
    let fake = Fake::new(&[("alice", "right")], Duration::from_millis(200));
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(60, 10, 0), &clock);
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.answer(&creds("alice", "right")).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in calls {
        answers.push(t.await.unwrap());
    }
    assert_eq!(fake.checks(), 1);
    assert!(answers.iter().all(|a| a.result
        == Ok(AuthnOutcome::Accepted(Identity::new(
            "alice",
            vec!["g".into()]
        )))));
    let by_source = |s| answers.iter().filter(|a| a.source == s).count();
    assert_eq!(by_source(AnswerSource::Backend), 1);
    assert_eq!(by_source(AnswerSource::Shared), 63);
}

#[tokio::test(start_paused = true)]
async fn right_and_wrong_passwords_are_never_merged() {
    let fake = Fake::new(&[("alice", "right")], Duration::from_millis(200));
    let clock = Arc::new(ManualClock::new());
    // Caching off: sharing does not depend on it.
    let c = wrap(&fake, settings(0, 10, 0), &clock);
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let c = c.clone();
            let pw = if i % 2 == 0 { "right" } else { "wrong" };
            tokio::spawn(async move { (pw, c.answer(&creds("alice", pw)).await) })
        })
        .collect();
    for t in calls {
        let (pw, a) = t.await.unwrap();
        match pw {
            "right" => assert!(matches!(a.result, Ok(AuthnOutcome::Accepted(_)))),
            _ => assert_eq!(a.result, Ok(AuthnOutcome::REJECTED)),
        }
    }
    assert_eq!(fake.checks(), 2);
    // Nothing was remembered: a failure is never kept, and caching is off.
    assert!(c.cache().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_check_hands_over_to_a_waiting_call() {
    let fake = Fake::new(&[("alice", "right")], Duration::from_millis(200));
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(60, 10, 0), &clock);
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.answer(&creds("alice", "right")).await })
    };
    // The first call is in its backend check before the second arrives.
    for _ in 0..1000 {
        if fake.checks() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.checks(), 1);
    let second = {
        let c = c.clone();
        tokio::spawn(async move { c.answer(&creds("alice", "right")).await })
    };
    // Let the second call join the first's check (the runtime runs it at this yield).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        fake.checks(),
        1,
        "the second call started a check of its own"
    );
    first.abort();
    let a = second.await.unwrap();
    assert_eq!(a.source, AnswerSource::Backend);
    assert!(matches!(a.result, Ok(AuthnOutcome::Accepted(_))));
    assert_eq!(fake.checks(), 2);
}

#[tokio::test]
async fn stale_answers_only_for_a_remembered_login_while_the_backend_is_down() {
    let fake = Fake::new(&[("alice", "a"), ("bob", "b")], Duration::ZERO);
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(60, 10, 300), &clock);
    c.answer(&creds("alice", "a")).await;
    clock.advance(Duration::from_secs(120)); // past the TTL, within the stale window
    fake.down.store(true, Ordering::SeqCst);

    let a = c.answer(&creds("alice", "a")).await;
    assert!(a.stale);
    assert_eq!(a.source, AnswerSource::Backend);
    assert_eq!(a.outcome_label(), "unavailable");
    assert_eq!(
        a.result,
        Ok(AuthnOutcome::Accepted(Identity::new(
            "alice",
            vec!["g".into()]
        )))
    );
    // A wrong password, or a user never seen: the backend's error, never an acceptance.
    for (u, p) in [("alice", "wrong"), ("bob", "b")] {
        let a = c.answer(&creds(u, p)).await;
        assert!(!a.stale);
        assert!(
            matches!(a.result, Err(BackendError::Unavailable { .. })),
            "{u}"
        );
    }
    // A full queue is not an outage.
    fake.busy.store(true, Ordering::SeqCst);
    let a = c.answer(&creds("alice", "a")).await;
    assert!(matches!(a.result, Err(BackendError::Busy { .. })));
    fake.busy.store(false, Ordering::SeqCst);
    // Past the window: nothing.
    clock.advance(Duration::from_secs(180));
    let a = c.answer(&creds("alice", "a")).await;
    assert!(matches!(a.result, Err(BackendError::Unavailable { .. })));

    // The directory returns: fresh checks resume.
    fake.down.store(false, Ordering::SeqCst);
    let before = fake.checks();
    let a = c.answer(&creds("alice", "a")).await;
    assert_eq!((a.source, a.stale), (AnswerSource::Backend, false));
    assert_eq!(fake.checks(), before + 1);
}

#[tokio::test]
async fn a_refused_password_is_not_answered_from_the_past() {
    let fake = Fake::new(&[("alice", "a")], Duration::ZERO);
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(60, 10, 300), &clock);
    c.answer(&creds("alice", "a")).await;
    clock.advance(Duration::from_secs(61));
    // The password changed in the directory (same version: a directory keeps none) and the
    // backend refused the old one once: it must not come back in the outage.
    fake.users.lock().unwrap().get_mut("alice").unwrap().0 = "new".into();
    let a = c.answer(&creds("alice", "a")).await;
    assert_eq!(a.result, Ok(AuthnOutcome::REJECTED));
    fake.down.store(true, Ordering::SeqCst);
    let a = c.answer(&creds("alice", "a")).await;
    assert!(matches!(a.result, Err(BackendError::Unavailable { .. })));
}

#[tokio::test]
async fn stale_off_is_an_error_as_before() {
    let fake = Fake::new(&[("alice", "a")], Duration::ZERO);
    let clock = Arc::new(ManualClock::new());
    let c = wrap(&fake, settings(60, 10, 0), &clock);
    c.answer(&creds("alice", "a")).await;
    clock.advance(Duration::from_secs(61));
    fake.down.store(true, Ordering::SeqCst);
    let a = c.answer(&creds("alice", "a")).await;
    assert!(!a.stale);
    assert!(matches!(a.result, Err(BackendError::Unavailable { .. })));
}

#[tokio::test]
async fn a_flood_of_accepted_logins_stays_within_the_bound() {
    // A directory with more users than the bound: the cache holds at most the bound, and users
    // who keep logging in stay.
    struct Anyone;
    #[async_trait]
    impl Authenticator for Anyone {
        fn name(&self) -> BackendName {
            "ldap"
        }
        async fn authenticate(&self, c: &Credentials) -> Result<AuthnOutcome, BackendError> {
            Ok(AuthnOutcome::Accepted(Identity::new(
                c.username.clone(),
                vec![],
            )))
        }
        async fn lookup(&self, _: &str) -> Result<Option<Identity>, BackendError> {
            Ok(None)
        }
    }
    let clock = Arc::new(ManualClock::new());
    let c = Cached::with_settings(Arc::new(Anyone), settings(600, 500, 0), clock);
    for i in 0..20_000 {
        c.answer(&creds(&format!("u{i}"), "pw")).await;
        if i > 0 && i % 100 == 0 {
            assert_eq!(
                c.answer(&creds("regular", "pw")).await.source,
                AnswerSource::Cache
            );
        } else if i == 0 {
            c.answer(&creds("regular", "pw")).await;
        }
    }
    assert_eq!(c.cache().len(), 500);
}
