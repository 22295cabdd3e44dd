//! `purser-bench cache-memory`: the credential cache's memory, measured in this process's
//! resident set. A backend in memory (no hashing: the cache is what is measured) knows
//! `real` users and, as a large directory would, a million `member` accounts:
//!
//! 1. the real users log in (cached);
//! 2. one million invented user names and passwords are tried, with a real user's login every
//!    thousand: none is accepted, so none takes a place, and the real users keep hitting;
//! 3. one million distinct *accepted* logins (the worst case: a directory with more users than
//!    the bound) fill the cache to its bound, with a real user's login every hundred: the
//!    resident set grows by the bound times the memory per entry, and no further.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use purser_authn::cache::{AnswerSource, CacheSettings, Cached};
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity, SystemClock,
};
use serde::Serialize;

/// Accepts `real<i>` with `pw<i>` below `real`, and `member<i>` with `pw`; nobody else.
struct Directory {
    real: usize,
}

#[async_trait]
impl Authenticator for Directory {
    fn name(&self) -> BackendName {
        "ldap"
    }
    async fn authenticate(&self, c: &Credentials) -> Result<AuthnOutcome, BackendError> {
        let groups = || vec!["developers".to_owned(), "team07".to_owned()];
        let pw = c.password.expose();
        if let Some(i) = c.username.strip_prefix("real") {
            return Ok(match i.parse::<usize>() {
                Ok(i) if i < self.real && pw == format!("pw{i}") => {
                    AuthnOutcome::Accepted(Identity::new(c.username.clone(), groups()))
                }
                Ok(i) if i < self.real => AuthnOutcome::REJECTED,
                _ => AuthnOutcome::UnknownUser,
            });
        }
        if c.username.starts_with("member") && pw == "pw" {
            return Ok(AuthnOutcome::Accepted(Identity::new(
                c.username.clone(),
                groups(),
            )));
        }
        Ok(AuthnOutcome::UnknownUser)
    }
    async fn lookup(&self, _: &str) -> Result<Option<Identity>, BackendError> {
        Ok(None)
    }
}

#[derive(Debug, Serialize)]
pub struct CacheMemory {
    pub max_entries: usize,
    pub real_users: usize,
    pub rss_start_kib: u64,
    pub rss_real_cached_kib: u64,
    pub invented_pairs: usize,
    pub entries_after_invented: usize,
    pub rss_after_invented_kib: u64,
    pub real_hits_during_invented: (usize, usize),
    pub accepted_logins: usize,
    pub entries_after_accepted: usize,
    pub rss_after_accepted_kib: u64,
    pub real_hits_during_accepted: (usize, usize),
    /// (RSS after the fill - RSS before it) / entries added.
    pub bytes_per_entry: f64,
    pub secs: f64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the three phases; `pairs` invented pairs and as many accepted logins.
pub fn measure(max_entries: usize, real: usize, pairs: usize) -> anyhow::Result<CacheMemory> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async move {
        let rss_start_kib = rss_kib();
        let cache = Cached::with_settings(
            Arc::new(Directory { real }),
            CacheSettings {
                ttl: Duration::from_secs(3600),
                max_entries,
                stale_if_unavailable: Duration::ZERO,
            },
            Arc::new(SystemClock),
        );
        let login = |i: usize| Credentials::new(format!("real{i}"), format!("pw{i}"));
        for i in 0..real {
            cache.answer(&login(i)).await;
        }
        let rss_real_cached_kib = rss_kib();

        let mut hits = (0, 0);
        for n in 0..pairs {
            let user = if n % 2 == 0 {
                format!("invented{n}")
            } else {
                format!("real{}", n % real.max(1))
            };
            let a = cache
                .answer(&Credentials::new(user, format!("guess-{n:x}")))
                .await;
            anyhow::ensure!(
                !matches!(a.result, Ok(AuthnOutcome::Accepted(_))),
                "an invented pair was accepted"
            );
            if n % 1000 == 0 {
                let a = cache.answer(&login(n / 1000 % real.max(1))).await;
                hits.1 += 1;
                hits.0 += usize::from(a.source == AnswerSource::Cache);
            }
        }
        let entries_after_invented = cache.cache().len();
        let rss_after_invented_kib = rss_kib();
        let real_hits_during_invented = hits;

        let mut hits = (0, 0);
        for n in 0..pairs {
            cache
                .answer(&Credentials::new(format!("member{n}"), "pw"))
                .await;
            if n % 100 == 0 {
                let a = cache.answer(&login(n / 100 % real.max(1))).await;
                hits.1 += 1;
                hits.0 += usize::from(a.source == AnswerSource::Cache);
            }
        }
        let entries_after_accepted = cache.cache().len();
        let rss_after_accepted_kib = rss_kib();
        let added = entries_after_accepted.saturating_sub(entries_after_invented);
        let bytes_per_entry = if added == 0 {
            0.0
        } else {
            rss_after_accepted_kib.saturating_sub(rss_after_invented_kib) as f64 * 1024.0
                / added as f64
        };
        Ok(CacheMemory {
            max_entries,
            real_users: real,
            rss_start_kib,
            rss_real_cached_kib,
            invented_pairs: pairs,
            entries_after_invented,
            rss_after_invented_kib,
            real_hits_during_invented,
            accepted_logins: pairs,
            entries_after_accepted,
            rss_after_accepted_kib,
            real_hits_during_accepted: hits,
            bytes_per_entry,
            secs: started.elapsed().as_secs_f64(),
        })
    })
}
