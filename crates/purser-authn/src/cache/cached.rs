//! [`Cached`]: a backend behind its [`CredentialCache`], with one backend check per burst of
//! identical logins and, when configured, stale answers while the backend cannot decide.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Clock, Credentials, Identity,
    SystemClock,
};
use tokio::sync::watch;

use super::{CacheKey, CacheSettings, CredentialCache, DEFAULT_MAX_ENTRIES};

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerSource {
    /// This call asked the backend.
    Backend,
    /// A remembered accepted login: no backend work.
    Cache,
    /// A concurrent call with the same user name and password asked the backend; this one
    /// waited for its answer.
    Shared,
}

/// One backend's answer, and how it was reached.
#[derive(Clone, Debug)]
pub struct Answer {
    pub result: Result<AuthnOutcome, BackendError>,
    pub source: AnswerSource,
    /// The backend could not decide and the answer is a remembered login younger than
    /// `authn.cache_stale_if_unavailable` (`result` is then `Accepted`).
    pub stale: bool,
}

impl Answer {
    /// The label of `purser_authn_attempts_total{outcome}`: what the backend said (so a stale
    /// answer counts as `unavailable`, which is what the backend was).
    pub fn outcome_label(&self) -> &'static str {
        match &self.result {
            _ if self.stale => "unavailable",
            Ok(o) => o.label(),
            Err(_) => "unavailable",
        }
    }
}

/// What a backend check answered, handed to every call that waited for it.
#[derive(Clone)]
struct Shared {
    result: Result<AuthnOutcome, BackendError>,
    stale: bool,
}

/// The checks in progress, by key: a call that finds its key here waits for that check.
type Flights = Mutex<HashMap<CacheKey, watch::Receiver<Option<Shared>>>>;

/// Takes a check out of [`Flights`] when its caller finishes or is dropped halfway (a client
/// gone, a timeout): waiting calls then see the sender closed and check for themselves.
struct Flight<'a> {
    flights: &'a Flights,
    key: CacheKey,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Any authenticator with a [`CredentialCache`] in front.
///
/// It implements [`Authenticator`] itself; [`Cached::answer`] also tells where the answer came
/// from, which the chain reports in its attempts (and the server in its metrics).
pub struct Cached<A: ?Sized> {
    inner: Arc<A>,
    cache: CredentialCache,
    flights: Flights,
}

impl<A: ?Sized> fmt::Debug for Cached<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

enum Role {
    Leader(watch::Sender<Option<Shared>>),
    Follower(watch::Receiver<Option<Shared>>),
}

impl<A: Authenticator + ?Sized> Cached<A> {
    /// `ttl` zero makes a wrapper that remembers nothing (identical concurrent checks are
    /// still shared).
    pub fn new(inner: Arc<A>, ttl: Duration) -> Self {
        Cached::with_capacity(inner, ttl, DEFAULT_MAX_ENTRIES)
    }

    pub fn with_capacity(inner: Arc<A>, ttl: Duration, max_entries: usize) -> Self {
        Cached::with_settings(
            inner,
            CacheSettings {
                max_entries,
                ..CacheSettings::ttl(ttl)
            },
            Arc::new(SystemClock),
        )
    }

    /// A wrapper with every cache setting and time from `clock`.
    pub fn with_settings(inner: Arc<A>, settings: CacheSettings, clock: Arc<dyn Clock>) -> Self {
        Cached {
            inner,
            cache: CredentialCache::with_settings(settings, clock),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<A> {
        &self.inner
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    /// Authenticates, and says whether the answer came from the cache (`true`: no backend work
    /// by this call).
    pub async fn authenticate_traced(
        &self,
        creds: &Credentials,
    ) -> (Result<AuthnOutcome, BackendError>, bool) {
        let a = self.answer(creds).await;
        (a.result, a.source != AnswerSource::Backend)
    }

    /// Authenticates: from the cache when it can, else through one backend check shared by
    /// every concurrent call with the same user name and password (compared by their keyed
    /// hash), else, when the backend cannot decide, from a remembered login younger than
    /// `stale_if_unavailable`.
    pub async fn answer(&self, creds: &Credentials) -> Answer {
        let key = self.cache.key(creds);
        loop {
            // Read the version before asking the backend: if the user's data changes during the
            // check, the entry is stored under the old version and simply never served.
            let version = self.inner.account_version(&creds.username);
            if let Some(identity) = self.cache.fresh(&key, version) {
                return Answer {
                    result: Ok(AuthnOutcome::Accepted(identity)),
                    source: AnswerSource::Cache,
                    stale: false,
                };
            }
            let role = {
                let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
                match flights.get(&key) {
                    Some(rx) => Role::Follower(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        flights.insert(key, rx);
                        Role::Leader(tx)
                    }
                }
            };
            match role {
                Role::Follower(mut rx) => {
                    let shared = rx
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|s| s.clone());
                    match shared {
                        Some(s) => {
                            return Answer {
                                result: s.result,
                                source: AnswerSource::Shared,
                                stale: s.stale,
                            }
                        }
                        // The checking call was dropped before it answered: start again (one of
                        // the waiting calls becomes the one that checks).
                        None => continue,
                    }
                }
                Role::Leader(tx) => {
                    let flight = Flight {
                        flights: &self.flights,
                        key,
                    };
                    let shared = self.check(creds, key, version).await;
                    tx.send_replace(Some(shared.clone()));
                    drop(flight);
                    return Answer {
                        result: shared.result,
                        source: AnswerSource::Backend,
                        stale: shared.stale,
                    };
                }
            }
        }
    }

    /// One backend check, and what it does to the cache.
    async fn check(&self, creds: &Credentials, key: CacheKey, version: u64) -> Shared {
        let result = self.inner.authenticate(creds).await;
        match &result {
            Ok(AuthnOutcome::Accepted(identity)) => {
                self.cache.remember(key, version, identity.clone());
            }
            // The backend refused this password (changed, or the user removed): a remembered
            // login must not answer for it in a later outage.
            Ok(_) => self.cache.forget(&key),
            // Only a backend that cannot decide is answered from the past: not a full queue
            // of password checks (`Busy`), which is this server's load, not an outage.
            Err(BackendError::Unavailable { .. }) => {
                let now = self.inner.account_version(&creds.username);
                if let Some(identity) = self.cache.stale(&key, now) {
                    return Shared {
                        result: Ok(AuthnOutcome::Accepted(identity)),
                        stale: true,
                    };
                }
            }
            Err(_) => {}
        }
        Shared {
            result,
            stale: false,
        }
    }
}

#[async_trait]
impl<A: Authenticator + ?Sized> Authenticator for Cached<A> {
    fn name(&self) -> BackendName {
        self.inner.name()
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        self.answer(creds).await.result
    }

    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
        self.inner.lookup(account).await
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn account_version(&self, name: &str) -> u64 {
        self.inner.account_version(name)
    }

    fn credential_stamp(&self, account: &str) -> Option<String> {
        self.inner.credential_stamp(account)
    }

    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }
}
