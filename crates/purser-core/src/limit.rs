//! Time and the failed-login limit, as traits: the server counts failures through a
//! [`LoginLimiter`] (in process memory, or a store shared by replicas), and everything that
//! measures time asks a [`Clock`], so that expiry is tested without waiting.

use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

/// Where time comes from. Logic that expires things takes a clock instead of reading the
/// system's, so that tests can move time forward.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic time, for durations and expiry within one process.
    fn now(&self) -> Instant;
    /// Wall-clock time, for what leaves the process (token claims, shared stores).
    fn wall(&self) -> SystemTime;
}

/// The system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until told to move, for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_wall: SystemTime,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the system's present moment.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            start_wall: SystemClock.wall(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut e = self.elapsed.lock().unwrap_or_else(|p| p.into_inner());
        *e += by;
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }
    fn wall(&self) -> SystemTime {
        self.start_wall + self.elapsed()
    }
}

/// A keyed digest of one (account, password) pair: how the limiter recognises the same wrong
/// password sent again, without ever holding the password. The key comes from the store
/// ([`LoginLimiter::digest_key`]), so replicas sharing a store compute the same digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasswordDigest(pub [u8; 32]);

impl fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret (keyed), but nothing a log line needs.
        f.write_str("PasswordDigest(..)")
    }
}

/// The secret key of [`PasswordDigest`]s, as the store hands it out.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey(pub [u8; 32]);

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(<redacted>)")
    }
}

/// One login attempt as the limiter sees it.
#[derive(Clone, Copy, Debug)]
pub struct LoginAttempt<'a> {
    /// The account names the attempt is for: the name as typed and, once a backend has said
    /// it, the backend's own name for the account (they often differ only in case). Empty for
    /// an attempt whose account is not to be believed (a forged refresh token): then only the
    /// address counts.
    pub accounts: &'a [&'a str],
    /// The client's address, when known.
    pub address: Option<IpAddr>,
    /// For a password login, the digest of the name as typed and the password: a failure whose
    /// digest the store still remembers counts no more, and is answered without a check.
    pub password: Option<PasswordDigest>,
}

/// What the limiter says before a login is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The attempt may go ahead.
    Open,
    /// An account of the attempt, or its address, is locked for this long still.
    Locked(Duration),
    /// This very (account, password) pair failed a moment ago: refuse it as a wrong password,
    /// without asking a backend.
    KnownBad,
}

/// What a lock applies to (the `scope` label of `purser_lockouts_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockScope {
    Account,
    Address,
}

impl LockScope {
    pub fn label(self) -> &'static str {
        match self {
            LockScope::Account => "account",
            LockScope::Address => "ip",
        }
    }
}

/// The limiter's store could not answer (a shared store down or slow).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("the failed-login store is unavailable: {reason}")]
pub struct LimiterError {
    pub reason: String,
}

/// Counts failed logins and says when an account or an address is locked
/// (`limits.failed_logins`). The rules, for every store:
///
/// - a failure counts once per account and once for the address, unless its
///   [`PasswordDigest`] is still remembered (the same wrong password again counts nothing);
/// - an account locks after `max` counted failures within the window, an address after
///   `per_address_max`;
/// - an address the account logged in from within `trusted_address_ttl` is not stopped by that
///   account's lock (the address's own lock still applies).
#[async_trait]
pub trait LoginLimiter: Send + Sync {
    /// The key [`PasswordDigest`]s are made with: the same for every replica sharing a store.
    async fn digest_key(&self) -> Result<DigestKey, LimiterError>;

    /// Whether the attempt may go ahead.
    async fn locked(&self, attempt: &LoginAttempt<'_>) -> Result<Gate, LimiterError>;

    /// Counts one failure against each distinct account of the attempt and its address (unless
    /// its digest is remembered: then nothing); returns what this failure locked.
    async fn record_failure(
        &self,
        attempt: &LoginAttempt<'_>,
    ) -> Result<Vec<LockScope>, LimiterError>;

    /// Notes a successful login: the address becomes trusted for the attempt's accounts.
    async fn record_success(&self, attempt: &LoginAttempt<'_>) -> Result<(), LimiterError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let (t0, w0) = (c.now(), c.wall());
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now() - t0, Duration::from_secs(90));
        assert_eq!(
            c.wall().duration_since(w0).unwrap(),
            Duration::from_secs(90)
        );
    }
}
