//! Failed-login limiting (`limits.failed_logins`): per account and per client IP, a sliding
//! window of failures, then a lockout. Memory stays bounded however many accounts and addresses
//! an attacker makes up: past the capacity the oldest entries are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept per kind (accounts, addresses).
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct LockoutSettings {
    /// Failures allowed within `window`; 0 disables limiting.
    pub max: u32,
    pub window: Duration,
    pub lockout: Duration,
}

struct Entry {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Which insertion this entry came from, so a stale slot in `order` is recognised.
    stamp: u64,
}

struct Table<K> {
    map: HashMap<K, Entry>,
    order: VecDeque<(K, u64)>,
    next_stamp: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(capacity: usize) -> Self {
        Table {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            capacity,
        }
    }

    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.map.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failure; true when it starts a lockout.
    fn fail(&mut self, key: &K, now: Instant, s: &LockoutSettings) -> bool {
        if !self.map.contains_key(key) {
            while self.map.len() >= self.capacity {
                let Some((old, stamp)) = self.order.pop_front() else {
                    break;
                };
                if self.map.get(&old).is_some_and(|e| e.stamp == stamp) {
                    self.map.remove(&old);
                }
            }
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.order.push_back((key.clone(), stamp));
            self.map.insert(
                key.clone(),
                Entry {
                    failures: VecDeque::new(),
                    locked_until: None,
                    stamp,
                },
            );
        }
        let Some(e) = self.map.get_mut(key) else {
            return false;
        };
        if e.locked_until.is_some_and(|u| u > now) {
            return false;
        }
        while e
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= s.window)
        {
            e.failures.pop_front();
        }
        e.failures.push_back(now);
        if e.failures.len() >= s.max as usize {
            e.failures.clear();
            e.locked_until = Some(now + s.lockout);
            return true;
        }
        false
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Longest account name remembered as such; longer ones are cut (they still count).
const MAX_KEY_LEN: usize = 256;

pub struct Lockout {
    settings: LockoutSettings,
    accounts: Mutex<Table<String>>,
    ips: Mutex<Table<IpAddr>>,
}

impl Lockout {
    pub fn new(settings: LockoutSettings, capacity: usize) -> Self {
        Lockout {
            settings,
            accounts: Mutex::new(Table::new(capacity)),
            ips: Mutex::new(Table::new(capacity)),
        }
    }

    pub fn disabled() -> Self {
        Lockout::new(
            LockoutSettings {
                max: 0,
                window: Duration::ZERO,
                lockout: Duration::ZERO,
            },
            1,
        )
    }

    fn key(account: &str) -> String {
        let mut end = account.len().min(MAX_KEY_LEN);
        while !account.is_char_boundary(end) {
            end -= 1;
        }
        account[..end].to_string()
    }

    /// How long the caller must wait, when the account or the address is locked.
    pub fn check(&self, account: &str, ip: Option<IpAddr>) -> Option<Duration> {
        if self.settings.max == 0 {
            return None;
        }
        let now = Instant::now();
        let by_account = self.accounts.lock().ok()?.locked(&Self::key(account), now);
        let by_ip = ip.and_then(|ip| self.ips.lock().ok()?.locked(&ip, now));
        by_account.max(by_ip)
    }

    /// Counts a failed login; returns the scopes (`account`, `ip`) that it locked.
    pub fn record_failure(&self, account: &str, ip: Option<IpAddr>) -> Vec<&'static str> {
        let mut locked = Vec::new();
        if self.settings.max == 0 {
            return locked;
        }
        let now = Instant::now();
        if let Ok(mut t) = self.accounts.lock() {
            if t.fail(&Self::key(account), now, &self.settings) {
                locked.push("account");
            }
        }
        if let Some(ip) = ip {
            if let Ok(mut t) = self.ips.lock() {
                if t.fail(&ip, now, &self.settings) {
                    locked.push("ip");
                }
            }
        }
        locked
    }

    /// Entries held (accounts, addresses): for tests of the memory bound.
    pub fn sizes(&self) -> (usize, usize) {
        let a = self.accounts.lock().map(|t| t.len()).unwrap_or(0);
        let i = self.ips.lock().map(|t| t.len()).unwrap_or(0);
        (a, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LockoutSettings {
        LockoutSettings {
            max: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
        }
    }

    #[test]
    fn locks_after_max_failures_per_account_across_ips() {
        let l = Lockout::new(settings(), 100);
        let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        assert!(l.check("alice", Some(ips[0])).is_none());
        assert!(l.record_failure("alice", Some(ips[0])).is_empty());
        assert!(l.record_failure("alice", Some(ips[1])).is_empty());
        assert_eq!(l.record_failure("alice", Some(ips[2])), vec!["account"]);
        let wait = l
            .check("alice", Some(IpAddr::from([10, 0, 0, 9])))
            .expect("locked");
        assert!(wait > Duration::from_secs(290));
        // Another account from another address is untouched.
        assert!(l.check("bob", Some(IpAddr::from([10, 0, 0, 9]))).is_none());
    }

    #[test]
    fn locks_an_address_guessing_many_accounts() {
        let l = Lockout::new(settings(), 100);
        let ip = IpAddr::from([192, 0, 2, 1]);
        l.record_failure("a", Some(ip));
        l.record_failure("b", Some(ip));
        assert_eq!(l.record_failure("c", Some(ip)), vec!["ip"]);
        assert!(l.check("d", Some(ip)).is_some());
        assert!(l.check("d", Some(IpAddr::from([192, 0, 2, 2]))).is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = Lockout::new(settings(), 1000);
        for i in 0..1_000_000u32 {
            l.record_failure(&format!("user{i}"), Some(IpAddr::from(i.to_be_bytes())));
        }
        let (a, i) = l.sizes();
        assert!(a <= 1000 && i <= 1000, "{a} {i}");
    }

    #[test]
    fn disabled_never_locks() {
        let l = Lockout::disabled();
        for _ in 0..100 {
            assert!(l.record_failure("x", None).is_empty());
        }
        assert!(l.check("x", None).is_none());
    }
}
