//! A cache of accepted logins in front of any [`Authenticator`], so that a client pulling
//! many layers does not pay for bcrypt at every token request.
//!
//! Only *accepted* answers are remembered: a wrong password always reaches the backend (and
//! its lockout accounting), and a made-up user or password never takes a place in the cache.
//! An entry is keyed by an HMAC-SHA256, under a random key made at start, of the
//! length-prefixed user name and the password: the password itself is never stored, and the
//! key cannot be recomputed outside this process.
//!
//! Each entry remembers the backend's [`Authenticator::account_version`] of the user as it was
//! before the check, and is served only while that version is current: an htpasswd reload
//! invalidates the users whose line or groups changed, and nobody else.
//!
//! The store is bounded (`authn.cache_max_entries`) with least-recently-used eviction
//! ([`lru`]). [`Cached`] puts it in front of a backend, with one check per burst of identical
//! logins and, when configured, answers from a recent entry while the backend is unavailable.

mod cached;
mod lru;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use purser_core::{Clock, Credentials, Identity, SystemClock};
use rand::RngCore;
use sha2::Sha256;

pub use cached::{Answer, AnswerSource, Cached};

/// Most entries kept by default (`authn.cache_max_entries`).
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// The cache's settings: `authn.cache_ttl`, `authn.cache_max_entries`,
/// `authn.cache_stale_if_unavailable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long an accepted login is served without asking the backend; zero: never.
    pub ttl: Duration,
    /// The bound on entries, least recently used evicted first.
    pub max_entries: usize,
    /// How long an accepted login may answer for a backend that cannot decide; zero: never.
    pub stale_if_unavailable: Duration,
}

impl CacheSettings {
    /// A cache that serves accepted logins for `ttl`, with the default bound and no stale answers.
    pub fn ttl(ttl: Duration) -> Self {
        CacheSettings {
            ttl,
            max_entries: DEFAULT_MAX_ENTRIES,
            stale_if_unavailable: Duration::ZERO,
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings::ttl(Duration::from_secs(60))
    }
}

/// The keyed hash of a user name and password: what the cache and the burst sharing compare,
/// never the password.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// One remembered login. Memory per entry is measured in docs/performance.md.
struct Entry {
    identity: Identity,
    version: u64,
    inserted: Instant,
}

/// The remembered logins of one backend.
pub struct CredentialCache {
    settings: CacheSettings,
    /// The keyed hash with its random key already absorbed: each login clones it, which saves
    /// the two key blocks HMAC would otherwise hash again.
    keyed: Hmac<Sha256>,
    store: Mutex<lru::Lru<CacheKey, Entry>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("settings", &self.settings)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl CredentialCache {
    /// `ttl` zero disables the cache (every call goes to the backend).
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        CredentialCache::with_settings(
            CacheSettings {
                max_entries,
                ..CacheSettings::ttl(ttl)
            },
            Arc::new(SystemClock),
        )
    }

    /// As [`CredentialCache::new`], with time from `clock`.
    pub fn with_clock(ttl: Duration, max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        CredentialCache::with_settings(
            CacheSettings {
                max_entries,
                ..CacheSettings::ttl(ttl)
            },
            clock,
        )
    }

    /// A cache with every setting, and time from `clock`.
    pub fn with_settings(settings: CacheSettings, clock: Arc<dyn Clock>) -> Self {
        let mut hmac_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut hmac_key);
        let keyed = Hmac::<Sha256>::new_from_slice(&hmac_key).expect("HMAC accepts any key length");
        CredentialCache {
            settings,
            keyed,
            store: Mutex::new(lru::Lru::new(settings.max_entries)),
            clock,
        }
    }

    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// Whether anything is remembered: for fresh answers (`ttl`) or stale ones.
    pub fn is_enabled(&self) -> bool {
        !self.settings.ttl.is_zero() || !self.settings.stale_if_unavailable.is_zero()
    }

    /// Entries held now (some may be expired).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The age past which an entry serves nothing at all.
    fn keep(&self) -> Duration {
        self.settings.ttl.max(self.settings.stale_if_unavailable)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::Lru<CacheKey, Entry>> {
        // The store stays consistent even if a holder panicked: no code between a lock and its
        // release can panic halfway through an update.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keyed hash of these credentials.
    pub fn key(&self, creds: &Credentials) -> CacheKey {
        let mut mac = self.keyed.clone();
        // The length prefix keeps ("a", "b:c") and ("a:b", "c")-style pairs apart, NUL bytes too.
        mac.update(&(creds.username.len() as u64).to_be_bytes());
        mac.update(creds.username.as_bytes());
        mac.update(&[0]);
        mac.update(creds.password.expose().as_bytes());
        CacheKey(mac.finalize().into_bytes().into())
    }

    /// The identity remembered under `key`, if it is younger than `max_age` and was stored at
    /// `version`. An entry of another version, or too old to serve anything, is dropped.
    fn lookup(&self, key: &CacheKey, version: u64, max_age: Duration) -> Option<Identity> {
        if !self.is_enabled() {
            return None;
        }
        let now = self.clock.now();
        let mut store = self.lock();
        let entry = store.peek(key)?;
        let age = now.saturating_duration_since(entry.inserted);
        if entry.version != version || age >= self.keep() {
            store.remove(key);
            return None;
        }
        if age >= max_age {
            return None;
        }
        let identity = entry.identity.clone();
        store.touch(key);
        Some(identity)
    }

    /// A fresh answer: the identity stored under `key` at `version` within the TTL.
    pub fn fresh(&self, key: &CacheKey, version: u64) -> Option<Identity> {
        self.lookup(key, version, self.settings.ttl)
    }

    /// A stale answer, for a backend that cannot decide: the identity stored under `key` at
    /// `version` within `stale_if_unavailable`.
    pub fn stale(&self, key: &CacheKey, version: u64) -> Option<Identity> {
        self.lookup(key, version, self.settings.stale_if_unavailable)
    }

    /// Remembers an accepted login, read at `version` before the check.
    pub fn remember(&self, key: CacheKey, version: u64, identity: Identity) {
        if !self.is_enabled() {
            return;
        }
        let now = self.clock.now();
        let keep = self.keep();
        let mut store = self.lock();
        // Entries past any use leave first, before the bound evicts a useful one.
        while let Some((&k, e)) = store.oldest() {
            if now.saturating_duration_since(e.inserted) < keep {
                break;
            }
            store.remove(&k);
        }
        store.insert(
            key,
            Entry {
                identity,
                version,
                inserted: now,
            },
        );
    }

    /// Forgets the login under `key` (the backend refused it since).
    pub fn forget(&self, key: &CacheKey) {
        self.lock().remove(key);
    }

    /// [`CredentialCache::fresh`] for credentials.
    pub fn get(&self, creds: &Credentials, version: u64) -> Option<Identity> {
        self.fresh(&self.key(creds), version)
    }

    /// [`CredentialCache::remember`] for credentials.
    pub fn insert(&self, creds: &Credentials, version: u64, identity: Identity) {
        self.remember(self.key(creds), version, identity);
    }
}
