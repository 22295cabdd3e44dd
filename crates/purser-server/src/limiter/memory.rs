//! Failed-login limiting (`limits.failed_logins`): per account and per client IP, a sliding
//! window of failures, then a lockout. Memory stays bounded however many accounts and addresses
//! an attacker makes up, and such a flood cannot buy an early end to a lock: when a table is
//! full, entries that hold no active lock are forgotten first (oldest first); when it holds
//! nothing but active locks, failures of keys it has no room for are counted together in one
//! overflow entry, which locks all of those keys when it reaches the limit.
//!
//! The fair rules of [`LoginLimiter`] hold here as in the shared store: the digest of a wrong
//! (account, password) pair is remembered for one window, so the same wrong password again
//! counts nothing and is refused without a check; the address has its own limit; an address an
//! account logged in from stays trusted by that account's lock for `trusted_address_ttl`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use purser_core::{
    Clock, DigestKey, Gate, LimiterError, LockScope, LoginAttempt, LoginLimiter, PasswordDigest,
};

/// Entries kept per kind (accounts, addresses).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How many of the oldest entries one insertion looks at for one to forget. Locked entries met
/// on the way move to the back, so a table of mostly active locks is not scanned whole at every
/// insertion; when none of these is free the failure goes to the overflow entry.
const EVICTION_SCAN: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct LockoutSettings {
    /// Failures of one account allowed within `window`; 0 disables limiting.
    pub max: u32,
    /// Failures from one address allowed within `window`; 0: no address limit.
    pub per_address_max: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// How long a successful login trusts its address against the account's lock; zero: never.
    pub trusted_address_ttl: Duration,
}

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Which insertion this entry came from, so a stale slot in `order` is recognised.
    stamp: u64,
}

impl Entry {
    fn locked(&self, now: Instant) -> Option<Duration> {
        let until = self.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failure; true when it starts a lockout.
    fn fail(&mut self, now: Instant, max: u32, s: &LockoutSettings) -> bool {
        if self.locked(now).is_some() {
            return false;
        }
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= s.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() >= max as usize {
            self.failures.clear();
            self.locked_until = Some(now + s.lockout);
            return true;
        }
        false
    }
}

struct Table<K> {
    map: HashMap<K, Entry>,
    order: VecDeque<(K, u64)>,
    next_stamp: u64,
    capacity: usize,
    /// The failures of keys that found the table full of active locks.
    overflow: Entry,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(capacity: usize) -> Self {
        Table {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            capacity: capacity.max(1),
            overflow: Entry::default(),
        }
    }

    fn locked<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.get(key) {
            Some(e) => e.locked(now),
            None => self.overflow.locked(now),
        }
    }

    /// Makes room for one more entry by forgetting one that holds no active lock; false when
    /// the oldest [`EVICTION_SCAN`] entries are all locked.
    fn make_room(&mut self, now: Instant) -> bool {
        let mut scanned = 0;
        while self.map.len() >= self.capacity {
            if scanned == EVICTION_SCAN {
                return false;
            }
            let Some((old, stamp)) = self.order.pop_front() else {
                return false;
            };
            let Some(entry) = self.map.get(&old).filter(|e| e.stamp == stamp) else {
                // A slot left behind by an entry forgotten earlier.
                continue;
            };
            scanned += 1;
            if entry.locked(now).is_some() {
                self.order.push_back((old, stamp));
            } else {
                self.map.remove(&old);
            }
        }
        true
    }

    /// Records a failure; true when it starts a lockout.
    fn fail(&mut self, key: &K, now: Instant, max: u32, s: &LockoutSettings) -> bool {
        if !self.map.contains_key(key) {
            if !self.make_room(now) {
                return self.overflow.fail(now, max, s);
            }
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.order.push_back((key.clone(), stamp));
            self.map.insert(
                key.clone(),
                Entry {
                    stamp,
                    ..Entry::default()
                },
            );
        }
        match self.map.get_mut(key) {
            Some(e) => e.fail(now, max, s),
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Keys remembered until a moment, oldest forgotten first when full: the wrong-password digests
/// and the trusted (account, address) pairs. Forgetting one early costs little (a repeated
/// password counts once more; the owner's address needs one more login to be trusted again).
pub(super) struct Expiring<K> {
    map: HashMap<K, Instant>,
    /// Insertion order with each insertion's expiry, to recognise a stale slot.
    order: VecDeque<(K, Instant)>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Expiring<K> {
    pub(super) fn new(capacity: usize) -> Self {
        Expiring {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn contains(&self, key: &K, now: Instant) -> bool {
        self.map.get(key).is_some_and(|until| *until > now)
    }

    /// Remembers `key` until `until` (a later moment replaces an earlier one).
    fn insert(&mut self, key: K, now: Instant, until: Instant) {
        // Forget what has expired at the front, then the oldest while full.
        while let Some((k, u)) = self.order.front() {
            let stale = self.map.get(k) != Some(u);
            if !(stale || *u <= now || self.map.len() >= self.capacity) {
                break;
            }
            if let Some((k, u)) = self.order.pop_front() {
                if self.map.get(&k) == Some(&u) {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(key.clone(), until);
        self.order.push_back((key, until));
    }

    /// Remembers `key` for `ttl`, unless it is remembered for more than half of that already:
    /// a login repeated every second renews its pair once per half `ttl`, not at every login.
    fn renew(&mut self, key: K, now: Instant, ttl: Duration) {
        if self
            .map
            .get(&key)
            .is_some_and(|until| *until > now + ttl / 2)
        {
            return;
        }
        self.insert(key, now, now + ttl);
    }

    /// Remembers `key` for `ttl` unless it is remembered already; true when it was not.
    pub(super) fn insert_new(&mut self, key: K, now: Instant, ttl: Duration) -> bool {
        if self.contains(&key, now) {
            return false;
        }
        self.insert(key, now, now + ttl);
        true
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn remove(&mut self, key: &K) {
        // Its slot in `order` goes stale and is dropped when met.
        self.map.remove(key);
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Longest account name remembered as such; longer ones are cut (they still count).
const MAX_KEY_LEN: usize = 256;

/// The failed-login limiter of one process: the default for a single instance.
pub struct MemoryLimiter {
    settings: LockoutSettings,
    clock: Arc<dyn Clock>,
    /// This process's own key: its digests mean nothing elsewhere, nor need to.
    digest_key: DigestKey,
    accounts: Mutex<Table<String>>,
    ips: Mutex<Table<IpAddr>>,
    wrong_passwords: Mutex<Expiring<PasswordDigest>>,
    trusted: Mutex<Expiring<(String, IpAddr)>>,
}

impl MemoryLimiter {
    pub fn new(settings: LockoutSettings, capacity: usize, clock: Arc<dyn Clock>) -> Self {
        MemoryLimiter {
            settings,
            clock,
            digest_key: DigestKey(rand::random()),
            accounts: Mutex::new(Table::new(capacity)),
            ips: Mutex::new(Table::new(capacity)),
            wrong_passwords: Mutex::new(Expiring::new(capacity)),
            trusted: Mutex::new(Expiring::new(capacity)),
        }
    }

    fn key(account: &str) -> String {
        Self::key_str(account).to_string()
    }

    /// The remembered form of an account name, borrowed (lookups need no copy).
    fn key_str(account: &str) -> &str {
        let mut end = account.len().min(MAX_KEY_LEN);
        while !account.is_char_boundary(end) {
            end -= 1;
        }
        &account[..end]
    }

    fn is_trusted(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = ip else { return false };
        self.trusted
            .lock()
            .is_ok_and(|t| t.contains(&(Self::key(account), ip), now))
    }

    /// How long the caller must wait, when any of the accounts (the name as typed and the
    /// backend's own name for it) or the address is locked.
    pub fn check(&self, accounts: &[&str], ip: Option<IpAddr>) -> Option<Duration> {
        match self.gate(&LoginAttempt {
            accounts,
            address: ip,
            password: None,
        }) {
            Gate::Locked(wait) => Some(wait),
            Gate::Open | Gate::KnownBad => None,
        }
    }

    /// What [`LoginLimiter::locked`] answers: a lock of an account (unless the address is
    /// trusted by it) or of the address first, then a remembered wrong password.
    pub fn gate(&self, attempt: &LoginAttempt<'_>) -> Gate {
        if self.settings.max == 0 {
            return Gate::Open;
        }
        let now = self.clock.now();
        let ip = attempt.address;
        let locked: Vec<(&str, Duration)> = match self.accounts.lock() {
            // No copy of the name for the lookup; nothing is allocated when none is locked.
            Ok(t) => attempt
                .accounts
                .iter()
                .filter_map(|a| t.locked(Self::key_str(a), now).map(|w| (*a, w)))
                .collect(),
            Err(_) => Vec::new(),
        };
        let by_account = locked
            .into_iter()
            .filter(|(a, _)| !self.is_trusted(a, ip, now))
            .map(|(_, w)| w)
            .max();
        let by_ip = ip.and_then(|ip| self.ips.lock().ok()?.locked(&ip, now));
        if let Some(wait) = by_account.max(by_ip) {
            return Gate::Locked(wait);
        }
        let known = attempt.password.is_some_and(|d| {
            self.wrong_passwords
                .lock()
                .is_ok_and(|w| w.contains(&d, now))
        });
        if known {
            Gate::KnownBad
        } else {
            Gate::Open
        }
    }

    /// Counts one failed login against each distinct account named (none: the address only)
    /// and the address; returns what it locked.
    pub fn fail(&self, accounts: &[&str], ip: Option<IpAddr>) -> Vec<LockScope> {
        self.fail_attempt(&LoginAttempt {
            accounts,
            address: ip,
            password: None,
        })
    }

    /// What [`LoginLimiter::record_failure`] does: nothing for a remembered wrong password;
    /// otherwise the digest is remembered for one window and the failure counted.
    pub fn fail_attempt(&self, attempt: &LoginAttempt<'_>) -> Vec<LockScope> {
        let s = &self.settings;
        let mut locked = Vec::new();
        if s.max == 0 {
            return locked;
        }
        let now = self.clock.now();
        if let Some(d) = attempt.password {
            let fresh = self
                .wrong_passwords
                .lock()
                .map(|mut w| w.insert_new(d, now, s.window))
                .unwrap_or(true);
            if !fresh {
                return locked;
            }
        }
        if let Ok(mut t) = self.accounts.lock() {
            let mut keys: Vec<String> = attempt.accounts.iter().map(|a| Self::key(a)).collect();
            keys.sort_unstable();
            keys.dedup();
            let mut any = false;
            for key in &keys {
                any |= t.fail(key, now, s.max, s);
            }
            if any {
                locked.push(LockScope::Account);
            }
        }
        if let (Some(ip), true) = (attempt.address, s.per_address_max > 0) {
            if let Ok(mut t) = self.ips.lock() {
                if t.fail(&ip, now, s.per_address_max, s) {
                    locked.push(LockScope::Address);
                }
            }
        }
        locked
    }

    /// What [`LoginLimiter::record_success`] does: trusts the address for the accounts.
    pub fn succeed(&self, attempt: &LoginAttempt<'_>) {
        let s = &self.settings;
        let Some(ip) = attempt.address else { return };
        if s.max == 0 || s.trusted_address_ttl.is_zero() {
            return;
        }
        let now = self.clock.now();
        if let Ok(mut t) = self.trusted.lock() {
            for a in attempt.accounts {
                t.renew((Self::key(a), ip), now, s.trusted_address_ttl);
            }
        }
    }

    /// Entries held (accounts, addresses): for tests of the memory bound.
    pub fn sizes(&self) -> (usize, usize) {
        let a = self.accounts.lock().map(|t| t.len()).unwrap_or(0);
        let i = self.ips.lock().map(|t| t.len()).unwrap_or(0);
        (a, i)
    }

    /// Entries held (wrong-password digests, trusted pairs): for tests of the memory bound.
    pub fn remembered(&self) -> (usize, usize) {
        let w = self.wrong_passwords.lock().map(|t| t.len()).unwrap_or(0);
        let t = self.trusted.lock().map(|t| t.len()).unwrap_or(0);
        (w, t)
    }
}

#[async_trait]
impl LoginLimiter for MemoryLimiter {
    async fn digest_key(&self) -> Result<DigestKey, LimiterError> {
        Ok(self.digest_key.clone())
    }

    async fn locked(&self, attempt: &LoginAttempt<'_>) -> Result<Gate, LimiterError> {
        Ok(self.gate(attempt))
    }

    async fn record_failure(
        &self,
        attempt: &LoginAttempt<'_>,
    ) -> Result<Vec<LockScope>, LimiterError> {
        Ok(self.fail_attempt(attempt))
    }

    async fn record_success(&self, attempt: &LoginAttempt<'_>) -> Result<(), LimiterError> {
        // A success resets no count: a guesser who also knows one password must not clear the
        // failures counted against the address or another account. It only trusts the address.
        self.succeed(attempt);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purser_core::ManualClock;

    fn limiter(capacity: usize) -> (MemoryLimiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (
            MemoryLimiter::new(settings(), capacity, clock.clone()),
            clock,
        )
    }

    fn settings() -> LockoutSettings {
        LockoutSettings {
            max: 3,
            per_address_max: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            trusted_address_ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn locks_after_max_failures_per_account_across_ips() {
        let (l, _) = limiter(100);
        let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        assert!(l.check(&["alice"], Some(ips[0])).is_none());
        assert!(l.fail(&["alice"], Some(ips[0])).is_empty());
        assert!(l.fail(&["alice"], Some(ips[1])).is_empty());
        assert_eq!(l.fail(&["alice"], Some(ips[2])), vec![LockScope::Account]);
        let wait = l
            .check(&["alice"], Some(IpAddr::from([10, 0, 0, 9])))
            .expect("locked");
        assert!(wait > Duration::from_secs(290));
        // Another account from another address is untouched.
        assert!(l
            .check(&["bob"], Some(IpAddr::from([10, 0, 0, 9])))
            .is_none());
    }

    #[test]
    fn typed_and_canonical_names_count_and_lock_together() {
        let (l, _) = limiter(100);
        // Failures typed in three spellings all count against the directory's own name.
        for typed in ["ALICE", "Alice", " alice"] {
            l.fail(&[typed, "alice"], None);
        }
        assert!(l.check(&["alice"], None).is_some());
        assert!(l.check(&["aLiCe", "alice"], None).is_some());
        assert!(l.check(&["aLiCe"], None).is_none());
        // The same name twice in one failure counts once.
        let (l, _) = limiter(100);
        l.fail(&["bob", "bob"], None);
        l.fail(&["bob"], None);
        assert!(l.check(&["bob"], None).is_none());
    }

    #[test]
    fn an_address_only_failure_counts_no_account() {
        let (l, _) = limiter(100);
        let ip = IpAddr::from([192, 0, 2, 7]);
        for _ in 0..2 {
            assert!(l.fail(&[], Some(ip)).is_empty());
        }
        assert_eq!(l.fail(&[], Some(ip)), vec![LockScope::Address]);
        assert_eq!(l.sizes().0, 0);
    }

    #[test]
    fn locks_an_address_guessing_many_accounts() {
        let (l, _) = limiter(100);
        let ip = IpAddr::from([192, 0, 2, 1]);
        l.fail(&["a"], Some(ip));
        l.fail(&["b"], Some(ip));
        assert_eq!(l.fail(&["c"], Some(ip)), vec![LockScope::Address]);
        assert!(l.check(&["d"], Some(ip)).is_some());
        assert!(l
            .check(&["d"], Some(IpAddr::from([192, 0, 2, 2])))
            .is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let (l, _) = limiter(1000);
        for i in 0..1_000_000u32 {
            l.fail(&[&format!("user{i}")], Some(IpAddr::from(i.to_be_bytes())));
        }
        let (a, i) = l.sizes();
        assert!(a <= 1000 && i <= 1000, "{a} {i}");
    }

    #[test]
    fn a_flood_of_new_keys_does_not_clear_an_active_lock() {
        let (l, clock) = limiter(100);
        let attacker = IpAddr::from([198, 51, 100, 1]);
        for _ in 0..3 {
            l.fail(&["victim"], Some(attacker));
        }
        assert!(l.check(&["victim"], None).is_some());
        assert!(l.check(&[], Some(attacker)).is_some());
        // Far more invented accounts and addresses than the tables hold, one failure each.
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) + 1));
            l.fail(&[&format!("made-up-{i}")], Some(ip));
        }
        let (a, i) = l.sizes();
        assert!(a <= 100 && i <= 100, "{a} {i}");
        assert!(
            l.check(&["victim"], None).is_some(),
            "the account's lock was evicted"
        );
        assert!(
            l.check(&[], Some(attacker)).is_some(),
            "the address's lock was evicted"
        );
        // The lock still ends on time.
        clock.advance(Duration::from_secs(301));
        assert!(l.check(&["victim"], Some(attacker)).is_none());
    }

    #[test]
    fn a_table_full_of_active_locks_still_counts_new_failures_and_stays_bounded() {
        let (l, clock) = limiter(10);
        // Ten accounts locked: the table holds nothing else.
        for i in 0..10 {
            for _ in 0..3 {
                l.fail(&[&format!("locked-{i}")], None);
            }
        }
        assert_eq!(l.sizes().0, 10);
        // New accounts find no room; their failures count together and lock them.
        assert!(l.fail(&["new-a"], None).is_empty());
        assert!(l.fail(&["new-b"], None).is_empty());
        assert_eq!(l.fail(&["new-c"], None), vec![LockScope::Account]);
        assert!(l.check(&["new-z"], None).is_some());
        assert_eq!(l.sizes().0, 10);
        for i in 0..10 {
            assert!(l.check(&[&format!("locked-{i}")], None).is_some());
        }
        // Once the locks end, new accounts get entries of their own again.
        clock.advance(Duration::from_secs(301));
        assert!(l.check(&["new-z"], None).is_none());
        assert!(l.fail(&["new-d"], None).is_empty());
        assert!(l.check(&["new-d"], None).is_none());
        assert_eq!(l.sizes().0, 10);
    }

    #[test]
    fn a_lock_ends_when_the_clock_passes_it() {
        let (l, clock) = limiter(100);
        for _ in 0..3 {
            l.fail(&["alice"], None);
        }
        let wait = l.check(&["alice"], None).expect("locked");
        assert_eq!(wait, Duration::from_secs(300));
        clock.advance(Duration::from_secs(299));
        assert_eq!(l.check(&["alice"], None), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check(&["alice"], None), None);
        // Failures older than the window no longer count.
        l.fail(&["bob"], None);
        l.fail(&["bob"], None);
        clock.advance(Duration::from_secs(60));
        assert!(l.fail(&["bob"], None).is_empty());
        assert!(l.check(&["bob"], None).is_none());
    }

    #[test]
    fn disabled_never_locks() {
        let l = MemoryLimiter::new(
            LockoutSettings {
                max: 0,
                per_address_max: 0,
                window: Duration::ZERO,
                lockout: Duration::ZERO,
                trusted_address_ttl: Duration::ZERO,
            },
            1,
            Arc::new(purser_core::SystemClock),
        );
        for _ in 0..100 {
            assert!(l.fail(&["x"], None).is_empty());
        }
        assert!(l.check(&["x"], None).is_none());
    }

    fn attempt<'a>(accounts: &'a [&'a str], ip: IpAddr, password: u8) -> LoginAttempt<'a> {
        LoginAttempt {
            accounts,
            address: Some(ip),
            password: Some(PasswordDigest([password; 32])),
        }
    }

    #[test]
    fn the_same_wrong_password_counts_once_and_is_then_known() {
        let (l, clock) = limiter(100);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let stale = attempt(&["ci"], ip, 7);
        assert_eq!(l.gate(&stale), Gate::Open);
        for _ in 0..1000 {
            assert!(l.fail_attempt(&stale).is_empty());
        }
        // Known: refused without a check, and neither the account nor the address is locked.
        assert_eq!(l.gate(&stale), Gate::KnownBad);
        assert_eq!(l.gate(&attempt(&["ci"], ip, 8)), Gate::Open);
        assert!(l.check(&["ci"], Some(ip)).is_none());
        // Remembered for one window, then checked (and counted) once more.
        clock.advance(Duration::from_secs(60));
        assert_eq!(l.gate(&stale), Gate::Open);
        assert!(l.fail_attempt(&stale).is_empty());
        assert_eq!(l.gate(&stale), Gate::KnownBad);
        assert_eq!(l.remembered().0, 1);
    }

    #[test]
    fn distinct_wrong_passwords_lock_after_max() {
        let (l, _) = limiter(100);
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(l.fail_attempt(&attempt(&["alice"], ip, 1)).is_empty());
        assert!(l.fail_attempt(&attempt(&["alice"], ip, 1)).is_empty());
        assert!(l.fail_attempt(&attempt(&["alice"], ip, 2)).is_empty());
        let locked = l.fail_attempt(&attempt(&["alice"], ip, 3));
        assert!(locked.contains(&LockScope::Account), "{locked:?}");
        assert!(matches!(
            l.gate(&attempt(&["alice"], IpAddr::from([10, 0, 0, 2]), 4)),
            Gate::Locked(_)
        ));
    }

    #[test]
    fn the_address_limit_is_its_own_and_counts_distinct_pairs() {
        let clock = Arc::new(ManualClock::new());
        let l = MemoryLimiter::new(
            LockoutSettings {
                per_address_max: 5,
                ..settings()
            },
            100,
            clock,
        );
        let nat = IpAddr::from([203, 0, 113, 9]);
        // Four users behind one address, each failing once (and again, the same password).
        for (i, user) in ["u1", "u2", "u3", "u4"].iter().enumerate() {
            for _ in 0..3 {
                assert!(l.fail_attempt(&attempt(&[user], nat, i as u8)).is_empty());
            }
        }
        // Everyone else behind it still gets in.
        assert_eq!(l.gate(&attempt(&["u5"], nat, 99)), Gate::Open);
        // The fifth distinct pair locks the address.
        assert_eq!(
            l.fail_attempt(&attempt(&["u6"], nat, 5)),
            vec![LockScope::Address]
        );
        assert!(matches!(
            l.gate(&attempt(&["u5"], nat, 99)),
            Gate::Locked(_)
        ));
    }

    #[test]
    fn a_trusted_address_is_not_stopped_by_the_account_lock() {
        let (l, clock) = limiter(100);
        let home = IpAddr::from([192, 0, 2, 10]);
        let guesser = IpAddr::from([198, 51, 100, 66]);
        l.succeed(&attempt(&["alice"], home, 0));
        for p in 1..=3 {
            l.fail_attempt(&attempt(&["alice"], guesser, p));
        }
        assert!(matches!(
            l.gate(&attempt(&["alice"], guesser, 9)),
            Gate::Locked(_)
        ));
        assert!(matches!(
            l.gate(&attempt(&["alice"], IpAddr::from([192, 0, 2, 11]), 9)),
            Gate::Locked(_)
        ));
        assert_eq!(l.gate(&attempt(&["alice"], home, 9)), Gate::Open);
        // Trust is per account: another locked account gets no pass from alice's address.
        for p in 1..=3 {
            l.fail_attempt(&attempt(&["bob"], guesser, p + 10));
        }
        assert!(matches!(
            l.gate(&attempt(&["bob"], home, 9)),
            Gate::Locked(_)
        ));
        // And it ends: an hour later, the lock (renewed by the guesser) stops alice's address too.
        clock.advance(Duration::from_secs(3601));
        for p in 20..=22 {
            l.fail_attempt(&attempt(&["alice"], guesser, p));
        }
        assert!(matches!(
            l.gate(&attempt(&["alice"], home, 9)),
            Gate::Locked(_)
        ));
    }

    #[test]
    fn a_trusted_address_is_still_stopped_by_its_own_lock() {
        let (l, _) = limiter(100);
        let home = IpAddr::from([192, 0, 2, 10]);
        l.succeed(&attempt(&["alice"], home, 0));
        for p in 1..=3 {
            l.fail_attempt(&attempt(&[], home, p));
        }
        assert!(matches!(
            l.gate(&attempt(&["alice"], home, 9)),
            Gate::Locked(_)
        ));
    }

    #[test]
    fn remembered_digests_and_trusted_pairs_stay_bounded() {
        let (l, _) = limiter(100);
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            let a = LoginAttempt {
                accounts: &["x"],
                address: Some(ip),
                password: Some(PasswordDigest(d)),
            };
            l.fail_attempt(&a);
            l.succeed(&a);
        }
        let (w, t) = l.remembered();
        assert!(w <= 100 && t <= 100, "{w} {t}");
    }
}
