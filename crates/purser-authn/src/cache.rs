//! A cache of accepted logins in front of any [`Authenticator`], so that a client pulling
//! many layers does not pay for bcrypt at every token request.
//!
//! Only *accepted* answers are remembered: a wrong password always reaches the backend (and
//! its lockout accounting). An entry is keyed by an HMAC-SHA256, under a random key made at
//! start, of the length-prefixed user name and the password: the password itself is never
//! stored, and the key cannot be recomputed outside this process. Each entry remembers the
//! backend's [`Authenticator::generation`] and is ignored once the backend reloads its data,
//! so a changed password or group takes effect at the next request.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Clock, Credentials, Identity,
    SystemClock,
};
use rand::RngCore;
use sha2::Sha256;

/// Most entries kept by default.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

type Key = [u8; 32];

struct Entry {
    identity: Identity,
    generation: u64,
    inserted: Instant,
}

struct Store {
    entries: HashMap<Key, Entry>,
    /// Insertion order, oldest first; may hold keys replaced or removed since (checked on pop).
    order: VecDeque<(Key, Instant)>,
}

/// The remembered logins of one backend.
pub struct CredentialCache {
    ttl: Duration,
    max_entries: usize,
    hmac_key: [u8; 32],
    store: Mutex<Store>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl CredentialCache {
    /// `ttl` zero disables the cache (every call goes to the backend).
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        CredentialCache::with_clock(ttl, max_entries, Arc::new(SystemClock))
    }

    /// As [`CredentialCache::new`], with time from `clock`.
    pub fn with_clock(ttl: Duration, max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        let mut hmac_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut hmac_key);
        CredentialCache {
            ttl,
            max_entries: max_entries.max(1),
            hmac_key,
            store: Mutex::new(Store {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            clock,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Entries held now (some may be expired).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // The store stays consistent even if a holder panicked: every update is one insert or
        // remove.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, creds: &Credentials) -> Key {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("HMAC accepts any key length");
        // The length prefix keeps ("a", "b:c") and ("a:b", "c")-style pairs apart, NUL bytes too.
        mac.update(&(creds.username.len() as u64).to_be_bytes());
        mac.update(creds.username.as_bytes());
        mac.update(&[0]);
        mac.update(creds.password.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The identity remembered for these credentials at this backend generation.
    pub fn get(&self, creds: &Credentials, generation: u64) -> Option<Identity> {
        if !self.is_enabled() {
            return None;
        }
        let key = self.key(creds);
        let now = self.clock.now();
        let mut store = self.lock();
        let entry = store.entries.get(&key)?;
        if entry.generation == generation && now.duration_since(entry.inserted) < self.ttl {
            return Some(entry.identity.clone());
        }
        store.entries.remove(&key);
        None
    }

    /// Remembers an accepted login.
    pub fn insert(&self, creds: &Credentials, generation: u64, identity: Identity) {
        if !self.is_enabled() {
            return;
        }
        let key = self.key(creds);
        let now = self.clock.now();
        let mut store = self.lock();
        store.entries.insert(
            key,
            Entry {
                identity,
                generation,
                inserted: now,
            },
        );
        store.order.push_back((key, now));
        self.evict(&mut store, generation, now);
    }

    /// Drops stale queue items and, beyond the bound, the oldest entries.
    fn evict(&self, store: &mut Store, generation: u64, now: Instant) {
        let Store { entries, order } = store;
        while let Some(&(key, inserted)) = order.front() {
            let current = entries.get(&key).filter(|e| e.inserted == inserted);
            let Some(entry) = current else {
                order.pop_front(); // replaced or removed since
                continue;
            };
            let expired =
                now.duration_since(entry.inserted) >= self.ttl || entry.generation != generation;
            if expired || entries.len() > self.max_entries {
                entries.remove(&key);
                order.pop_front();
                continue;
            }
            break;
        }
        // Re-inserted keys leave stale queue items behind the front; compact now and then.
        if order.len() > 2 * self.max_entries {
            order.retain(|(k, t)| entries.get(k).is_some_and(|e| e.inserted == *t));
        }
    }
}

/// Any authenticator with a [`CredentialCache`] in front.
///
/// It implements [`Authenticator`] itself; [`Cached::authenticate_traced`] also tells whether
/// the answer came from the cache, which the chain reports in its attempts (and the server in
/// `purser_authn_cache_hits_total`).
pub struct Cached<A: ?Sized> {
    inner: Arc<A>,
    cache: CredentialCache,
}

impl<A: ?Sized> fmt::Debug for Cached<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator + ?Sized> Cached<A> {
    /// `ttl` zero makes a pass-through wrapper.
    pub fn new(inner: Arc<A>, ttl: Duration) -> Self {
        Cached::with_capacity(inner, ttl, DEFAULT_MAX_ENTRIES)
    }

    pub fn with_capacity(inner: Arc<A>, ttl: Duration, max_entries: usize) -> Self {
        Cached {
            inner,
            cache: CredentialCache::new(ttl, max_entries),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<A> {
        &self.inner
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    /// Authenticates, and says whether the answer came from the cache (`true`: no backend work).
    pub async fn authenticate_traced(
        &self,
        creds: &Credentials,
    ) -> (Result<AuthnOutcome, BackendError>, bool) {
        // Read the generation before asking the backend: if a reload lands during the check,
        // the entry is stored under the old generation and simply never served.
        let generation = self.inner.generation();
        if let Some(identity) = self.cache.get(creds, generation) {
            return (Ok(AuthnOutcome::Accepted(identity)), true);
        }
        let result = self.inner.authenticate(creds).await;
        if let Ok(AuthnOutcome::Accepted(identity)) = &result {
            self.cache.insert(creds, generation, identity.clone());
        }
        (result, false)
    }
}

#[async_trait]
impl<A: Authenticator + ?Sized> Authenticator for Cached<A> {
    fn name(&self) -> BackendName {
        self.inner.name()
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        self.authenticate_traced(creds).await.0
    }

    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
        self.inner.lookup(account).await
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn credential_stamp(&self, account: &str) -> Option<String> {
        self.inner.credential_stamp(account)
    }

    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials::new(u, p)
    }

    #[test]
    fn remembers_per_password_and_generation() {
        let c = CredentialCache::new(Duration::from_secs(60), 10);
        let id = Identity::new("alice", vec!["g".into()]);
        c.insert(&creds("alice", "pw"), 3, id.clone());
        assert_eq!(c.get(&creds("alice", "pw"), 3), Some(id));
        assert_eq!(c.get(&creds("alice", "pw2"), 3), None);
        assert_eq!(c.get(&creds("alic", "epw"), 3), None);
        assert_eq!(c.get(&creds("alice", "pw"), 4), None);
        // A stale generation removes the entry.
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
        let clock = Arc::new(purser_core::ManualClock::new());
        let c = CredentialCache::with_clock(Duration::from_secs(60), 10, clock.clone());
        c.insert(&creds("a", "b"), 0, Identity::new("a", vec![]));
        clock.advance(Duration::from_secs(59));
        assert!(c.get(&creds("a", "b"), 0).is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(c.get(&creds("a", "b"), 0), None);
    }

    #[test]
    fn stays_bounded_and_keeps_the_newest() {
        let c = CredentialCache::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            let u = format!("u{i}");
            c.insert(&creds(&u, "pw"), 0, Identity::new(u.clone(), vec![]));
            // Re-inserting the same key must not grow the queue without bound either.
            c.insert(&creds("same", "pw"), 0, Identity::new("same", vec![]));
        }
        assert!(c.len() <= 101, "{}", c.len());
        assert!(c.lock().order.len() <= 2 * 100 + 2);
        assert!(c.get(&creds("u999", "pw"), 0).is_some());
        assert!(c.get(&creds("u0", "pw"), 0).is_none());
    }

    #[test]
    fn debug_shows_no_key() {
        let c = CredentialCache::new(Duration::from_secs(1), 1);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hmac"), "{shown}");
    }
}
