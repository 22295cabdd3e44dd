//! The failed-login state in Redis (`state.backend: redis`), shared by every replica: the same
//! rules as [`MemoryLimiter`], each operation one Lua script run atomically by the server
//! (EVALSHA, and EVAL when the server has not seen the script, e.g. after a restart), so
//! replicas never double-count or miss. Time is the Redis server's (`TIME`), so replicas with
//! skewed clocks agree. Every key has an expiry; account names are hashed into keys.
//!
//! Keys, under `state.redis.key_prefix`:
//!
//! ```text
//! k                    the digest key (random, created once with SET NX; 7 days, renewed)
//! a:<sha256(account)>  the account's failures in the window (a sorted set; window)
//! al:<sha256(account)> the account's lock (lockout)
//! i:<address>          the address's failures (window)    il:<address>  its lock (lockout)
//! b:<digest>           a wrong (account, password) pair remembered (window)
//! t:<sha256(account)>:<address>  the address trusted by the account (trusted_address_ttl)
//! ```
//!
//! When Redis cannot answer within `state.redis.timeout` (down, slow, restarting), the replica
//! says so once in the log, counts `purser_state_errors_total{op}`, sets
//! `purser_state_backend_up` to 0, and either counts in its own [`MemoryLimiter`]
//! (`on_error: local`) or refuses (`closed`: the limiter answers an error, which the stack turns
//! into 503). While down, at most one operation a second tries Redis again (and `/readyz` pings
//! it); the first that succeeds resumes shared counting, without a restart. Locks taken locally
//! during an outage keep holding in this replica until they end.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use purser_core::{Clock, DigestKey, Gate, LimiterError, LockScope, LoginAttempt, LoginLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use super::memory::{Expiring, LockoutSettings, MemoryLimiter, DEFAULT_CAPACITY};
use crate::config::OnStateError;
use crate::metrics::Metrics;

/// How often a replica re-reads the digest key (each read renews its expiry).
const KEY_REFRESH: Duration = Duration::from_secs(60);
/// The digest key's expiry in Redis: renewed by every replica's reads, so it outlives them all.
const KEY_TTL_SECS: u64 = 7 * 86400;
/// How long after writing an address's trust to Redis this replica writes it again at most: a
/// warm login then costs one round trip, not two (the trust lasts `trusted_address_ttl` less at
/// most this much).
const TRUST_REFRESH: Duration = Duration::from_secs(3600);
/// While Redis is down, how often an operation tries it again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether an account is locked (and not by a trusted address), then the address, then a
/// remembered wrong password. KEYS: n account locks, then (with an address) n trust keys and
/// the address lock, then (with a digest) the digest key. ARGV: n, has_address, has_digest.
/// Returns {0, 0} open, {1, wait_ms} locked, {2, 0} known bad.
const CHECK: &str = r"
local n = tonumber(ARGV[1])
local has_ip = ARGV[2] == '1'
local has_bad = ARGV[3] == '1'
local wait = 0
for i = 1, n do
  local t = redis.call('PTTL', KEYS[i])
  if t > 0 and not (has_ip and redis.call('EXISTS', KEYS[n + i]) == 1) then
    if t > wait then wait = t end
  end
end
local k = n + 1
if has_ip then
  k = 2 * n + 1
  local t = redis.call('PTTL', KEYS[k])
  if t > wait then wait = t end
  k = k + 1
end
if wait > 0 then return {1, wait} end
if has_bad and redis.call('EXISTS', KEYS[k]) == 1 then return {2, 0} end
return {0, 0}
";

/// Counts one failure. KEYS: n pairs (failures, lock) of accounts, then (with an address) its
/// pair, then (with a digest) the digest key. ARGV: n, has_address, has_digest, max,
/// per_address_max, window_ms, lockout_ms, a unique member. Returns {account_locked,
/// address_locked}: nothing counts when the digest was remembered already.
const FAIL: &str = r"
local n = tonumber(ARGV[1])
local has_ip = ARGV[2] == '1'
local has_bad = ARGV[3] == '1'
local max = tonumber(ARGV[4])
local ip_max = tonumber(ARGV[5])
local window = tonumber(ARGV[6])
local lockout = tonumber(ARGV[7])
local member = ARGV[8]
local k = 2 * n + 1
if has_ip then k = k + 2 end
if has_bad then
  if not redis.call('SET', KEYS[k], '1', 'NX', 'PX', window) then return {0, 0} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fail(z, l, limit)
  if limit == 0 or redis.call('EXISTS', l) == 1 then return 0 end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
  redis.call('ZADD', z, now, member)
  if redis.call('ZCARD', z) >= limit then
    redis.call('DEL', z)
    redis.call('SET', l, '1', 'PX', lockout)
    return 1
  end
  redis.call('PEXPIRE', z, window)
  return 0
end
local account = 0
for i = 1, n do
  if fail(KEYS[2 * i - 1], KEYS[2 * i], max) == 1 then account = 1 end
end
local address = 0
if has_ip then address = fail(KEYS[2 * n + 1], KEYS[2 * n + 2], ip_max) end
return {account, address}
";

/// The digest key: the one there, or this one when there is none; renewed either way.
const KEY: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1])
  v = ARGV[1]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return v
";

/// `state.redis`, as the limiter uses it.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_error: OnStateError,
}

/// The failed-login limiter on a Redis server shared by replicas.
pub struct RedisLimiter {
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    settings: LockoutSettings,
    redis: RedisSettings,
    /// Counts while Redis is down (`on_error: local`), and keeps what it locked then.
    local: MemoryLimiter,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    up: AtomicBool,
    next_probe: Mutex<Instant>,
    key: Mutex<Option<(DigestKey, Instant)>>,
    /// The (account, address) pairs whose trust this replica wrote within [`TRUST_REFRESH`];
    /// forgotten when Redis comes back (it may have restarted empty).
    trust_written: Mutex<Expiring<(String, IpAddr)>>,
    check: redis::Script,
    fail: redis::Script,
    key_script: redis::Script,
}

/// What one operation on Redis came to.
enum Outcome<T> {
    Done(T),
    /// Redis did not answer: the local store (or a refusal) answers instead.
    Unavailable,
}

impl RedisLimiter {
    /// Nothing is contacted here: the connection is made at the first operation.
    pub fn new(
        client: redis::Client,
        settings: LockoutSettings,
        redis: RedisSettings,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        metrics.state_backend_up.set(1);
        RedisLimiter {
            client,
            manager: Mutex::new(None),
            local: MemoryLimiter::new(settings, DEFAULT_CAPACITY, clock.clone()),
            settings,
            redis,
            next_probe: Mutex::new(clock.now()),
            clock,
            metrics,
            up: AtomicBool::new(true),
            key: Mutex::new(None),
            trust_written: Mutex::new(Expiring::new(DEFAULT_CAPACITY)),
            check: redis::Script::new(CHECK),
            fail: redis::Script::new(FAIL),
            key_script: redis::Script::new(KEY),
        }
    }

    /// Whether the last operation on Redis succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Asks Redis whether it is there (for `/readyz`); true when it answered.
    pub async fn ping(&self) -> bool {
        let r = self
            .run("check", |mut c| async move {
                redis::cmd("PING").query_async::<()>(&mut c).await
            })
            .await;
        matches!(r, Outcome::Done(()))
    }

    fn manager(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut m = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.as_ref() {
            return Ok(c.clone());
        }
        let t = self.redis.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(1)
            .set_max_delay(PROBE_INTERVAL);
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *m = Some(c.clone());
        Ok(c)
    }

    /// While down, whether this operation is the one that tries Redis again.
    fn probe_due(&self) -> bool {
        let now = self.clock.now();
        let mut next = self.next_probe.lock().unwrap_or_else(|p| p.into_inner());
        if now >= *next {
            *next = now + PROBE_INTERVAL;
            true
        } else {
            false
        }
    }

    /// Runs one operation within the timeout, and keeps the store's state (logged once per
    /// change, counted, exported).
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Outcome<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() && !self.probe_due() {
            return Outcome::Unavailable;
        }
        let result = match self.manager() {
            Ok(c) => tokio::time::timeout(self.redis.timeout, f(c))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                }),
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => {
                if !self.up.swap(true, Ordering::AcqRel) {
                    self.metrics.state_backend_up.set(1);
                    // Redis may have restarted empty, with a new digest key.
                    *self.key.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.trust_written
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                    tracing::info!("the shared failed-login store (Redis) answers again: counting is shared again");
                }
                Outcome::Done(v)
            }
            Err(e) => {
                self.metrics.state_errors.with_label_values(&[op]).inc();
                *self.next_probe.lock().unwrap_or_else(|p| p.into_inner()) =
                    self.clock.now() + PROBE_INTERVAL;
                if self.up.swap(false, Ordering::AcqRel) {
                    self.metrics.state_backend_up.set(0);
                    let then = match self.redis.on_error {
                        OnStateError::Local => {
                            "counting failed logins in this replica until it is back"
                        }
                        OnStateError::Closed => "refusing password logins (503) until it is back",
                    };
                    // The error's text names no password: the URL is not in it.
                    tracing::warn!(op, error = %e.category(), "the shared failed-login store (Redis) does not answer: {then}");
                }
                Outcome::Unavailable
            }
        }
    }

    fn unavailable<T>(&self) -> Result<T, LimiterError> {
        Err(LimiterError {
            reason: "Redis does not answer".into(),
        })
    }

    fn account_key(&self, kind: &str, account: &str) -> String {
        let h = Sha256::digest(account.as_bytes());
        format!(
            "{}{kind}:{}",
            self.redis.key_prefix,
            data_encoding::HEXLOWER.encode(&h[..16])
        )
    }

    fn address_key(&self, kind: &str, ip: IpAddr) -> String {
        format!("{}{kind}:{ip}", self.redis.key_prefix)
    }

    fn trust_key(&self, account: &str, ip: IpAddr) -> String {
        let h = Sha256::digest(account.as_bytes());
        format!(
            "{}t:{}:{ip}",
            self.redis.key_prefix,
            data_encoding::HEXLOWER.encode(&h[..16])
        )
    }

    fn digest_key_name(&self, attempt: &LoginAttempt<'_>) -> Option<String> {
        attempt.password.map(|d| {
            format!(
                "{}b:{}",
                self.redis.key_prefix,
                data_encoding::HEXLOWER.encode(&d.0)
            )
        })
    }

    fn accounts(attempt: &LoginAttempt<'_>) -> Vec<String> {
        let mut a: Vec<String> = attempt.accounts.iter().map(|s| s.to_string()).collect();
        a.sort_unstable();
        a.dedup();
        a
    }
}

#[async_trait]
impl LoginLimiter for RedisLimiter {
    async fn digest_key(&self) -> Result<DigestKey, LimiterError> {
        let now = self.clock.now();
        let cached = self.key.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((k, at)) = &cached {
            if now.duration_since(*at) < KEY_REFRESH {
                return Ok(k.clone());
            }
        }
        let mine = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
        let name = format!("{}k", self.redis.key_prefix);
        let script = &self.key_script;
        let r = self
            .run("key", |mut c| async move {
                script
                    .key(name)
                    .arg(mine)
                    .arg(KEY_TTL_SECS)
                    .invoke_async::<String>(&mut c)
                    .await
            })
            .await;
        if let Outcome::Done(hex) = r {
            let mut k = [0u8; 32];
            match data_encoding::HEXLOWER.decode(hex.as_bytes()) {
                Ok(b) if b.len() == 32 => {
                    k.copy_from_slice(&b);
                    let key = DigestKey(k);
                    *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some((key.clone(), now));
                    return Ok(key);
                }
                _ => tracing::warn!(
                    "the digest key in Redis is not 64 hex digits: using this replica's own"
                ),
            }
        }
        match (cached, self.redis.on_error) {
            // An older copy still makes the digests the others make.
            (Some((k, _)), _) => Ok(k),
            (None, OnStateError::Local) => self.local.digest_key().await,
            (None, OnStateError::Closed) => self.unavailable(),
        }
    }

    async fn locked(&self, attempt: &LoginAttempt<'_>) -> Result<Gate, LimiterError> {
        if self.settings.max == 0 {
            return Ok(Gate::Open);
        }
        let accounts = Self::accounts(attempt);
        let script = &self.check;
        let mut inv = script.prepare_invoke();
        for a in &accounts {
            inv.key(self.account_key("al", a));
        }
        if let Some(ip) = attempt.address {
            for a in &accounts {
                inv.key(self.trust_key(a, ip));
            }
            inv.key(self.address_key("il", ip));
        }
        let bad = self.digest_key_name(attempt);
        if let Some(b) = &bad {
            inv.key(b);
        }
        inv.arg(accounts.len())
            .arg(u8::from(attempt.address.is_some()))
            .arg(u8::from(bad.is_some()));
        let r = self
            .run("check", |mut c| async move {
                inv.invoke_async::<(u8, u64)>(&mut c).await
            })
            .await;
        let local = self.local.gate(attempt);
        let shared = match r {
            Outcome::Done((1, ms)) => Gate::Locked(Duration::from_millis(ms)),
            Outcome::Done((2, _)) => Gate::KnownBad,
            Outcome::Done(_) => Gate::Open,
            Outcome::Unavailable => match self.redis.on_error {
                OnStateError::Local => return Ok(local),
                OnStateError::Closed => return self.unavailable(),
            },
        };
        // Locks this replica took during an outage still hold.
        Ok(match (shared, local) {
            (Gate::Locked(a), Gate::Locked(b)) => Gate::Locked(a.max(b)),
            (Gate::Locked(w), _) | (_, Gate::Locked(w)) => Gate::Locked(w),
            (Gate::KnownBad, _) | (_, Gate::KnownBad) => Gate::KnownBad,
            _ => Gate::Open,
        })
    }

    async fn record_failure(
        &self,
        attempt: &LoginAttempt<'_>,
    ) -> Result<Vec<LockScope>, LimiterError> {
        let s = &self.settings;
        if s.max == 0 {
            return Ok(Vec::new());
        }
        let accounts = Self::accounts(attempt);
        let script = &self.fail;
        let mut inv = script.prepare_invoke();
        for a in &accounts {
            inv.key(self.account_key("a", a))
                .key(self.account_key("al", a));
        }
        if let Some(ip) = attempt.address {
            inv.key(self.address_key("i", ip))
                .key(self.address_key("il", ip));
        }
        let bad = self.digest_key_name(attempt);
        if let Some(b) = &bad {
            inv.key(b);
        }
        let member = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 12]>());
        inv.arg(accounts.len())
            .arg(u8::from(attempt.address.is_some()))
            .arg(u8::from(bad.is_some()))
            .arg(s.max)
            .arg(s.per_address_max)
            .arg(millis(s.window))
            .arg(millis(s.lockout))
            .arg(member);
        let r = self
            .run("failure", |mut c| async move {
                inv.invoke_async::<(u8, u8)>(&mut c).await
            })
            .await;
        match r {
            Outcome::Done((account, address)) => {
                let mut locked = Vec::new();
                if account == 1 {
                    locked.push(LockScope::Account);
                }
                if address == 1 {
                    locked.push(LockScope::Address);
                }
                Ok(locked)
            }
            Outcome::Unavailable => match self.redis.on_error {
                OnStateError::Local => Ok(self.local.fail_attempt(attempt)),
                OnStateError::Closed => self.unavailable(),
            },
        }
    }

    async fn record_success(&self, attempt: &LoginAttempt<'_>) -> Result<(), LimiterError> {
        let s = &self.settings;
        let Some(ip) = attempt.address else {
            return Ok(());
        };
        if s.max == 0 || s.trusted_address_ttl.is_zero() {
            return Ok(());
        }
        // Kept here too, so that an outage does not make the owner's address a stranger.
        self.local.succeed(attempt);
        let now = self.clock.now();
        let fresh: Vec<String> = {
            let mut written = self.trust_written.lock().unwrap_or_else(|p| p.into_inner());
            Self::accounts(attempt)
                .into_iter()
                .filter(|a| written.insert_new((a.clone(), ip), now, TRUST_REFRESH))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for a in &fresh {
            pipe.cmd("SET")
                .arg(self.trust_key(a, ip))
                .arg(1)
                .arg("PX")
                .arg(millis(s.trusted_address_ttl))
                .ignore();
        }
        let r = self
            .run("success", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        if let Outcome::Unavailable = r {
            // Not written: the next login writes it.
            let mut written = self.trust_written.lock().unwrap_or_else(|p| p.into_inner());
            for a in fresh {
                written.remove(&(a, ip));
            }
            if self.redis.on_error == OnStateError::Closed {
                return self.unavailable();
            }
        }
        Ok(())
    }
}

/// Milliseconds for Redis, at least 1 (a zero expiry is an error there).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
