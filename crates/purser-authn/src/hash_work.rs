//! Scheduling password checks: the shared limiter ([`hash_limiter`]), the blocking pool they
//! run on ([`run_limited`]) and the count of the work done ([`HashWork`]). What a check
//! computes is [`crate::hash`]'s business; this module only decides where and when it runs.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Counts the expensive hash checks a backend ran, so tests can show that unknown users and
/// wrong passwords cost the same work (and operators can see the load).
#[derive(Debug, Default)]
pub struct HashWork {
    bcrypt_checks: AtomicU64,
    bcrypt_cost_total: AtomicU64,
    other_checks: AtomicU64,
    /// Checks running right now, and the most ever seen at once.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// Marks one check as running while it lives.
struct InFlight<'a>(&'a HashWork);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A snapshot of [`HashWork`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashWorkSnapshot {
    /// bcrypt verifications run.
    pub bcrypt_checks: u64,
    /// Sum of `2^cost` over those verifications: the number of key-expansion rounds.
    pub bcrypt_rounds: u64,
    /// Verifications of other formats (apr1, SHA-1, crypt).
    pub other_checks: u64,
}

impl HashWork {
    pub(crate) fn count_bcrypt(&self, cost: u32) {
        self.bcrypt_checks.fetch_add(1, Ordering::Relaxed);
        self.bcrypt_cost_total
            .fetch_add(1u64 << cost.min(63), Ordering::Relaxed);
    }
    pub(crate) fn count_other(&self) {
        self.other_checks.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(self)
    }
    /// The most checks that ever ran at the same time.
    #[cfg(test)]
    pub(crate) fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Acquire)
    }
    pub fn snapshot(&self) -> HashWorkSnapshot {
        HashWorkSnapshot {
            bcrypt_checks: self.bcrypt_checks.load(Ordering::Relaxed),
            bcrypt_rounds: self.bcrypt_cost_total.load(Ordering::Relaxed),
            other_checks: self.other_checks.load(Ordering::Relaxed),
        }
    }
}

/// A limiter for password checks: one permit per CPU this process may use
/// (`available_parallelism`, which follows CPU affinity and cgroup quotas), at least one.
///
/// Give the same limiter to every hashing backend
/// ([`crate::StaticAuthenticator::with_hash_limiter`],
/// [`crate::HtpasswdAuthenticator::with_hash_limiter`]): logins beyond the number of cores
/// then wait their turn in the semaphore (first come, first served) instead of as runnable
/// threads competing with the async workers, so the server keeps answering (`/healthz`, cache
/// hits) while bcrypt saturates the cores, at the same login throughput.
pub fn hash_limiter() -> Arc<Semaphore> {
    let permits = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    Arc::new(Semaphore::new(permits.max(1)))
}

/// Runs one password check on the blocking pool, after taking a permit of `limiter` (held
/// until the check ends). `None` if the check could not run (the limiter was closed or the
/// check panicked).
pub(crate) async fn run_limited<T, F>(
    limiter: &Arc<Semaphore>,
    work: &Arc<HashWork>,
    check: F,
) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&HashWork) -> T + Send + 'static,
{
    let permit = Arc::clone(limiter).acquire_owned().await.ok()?;
    let work = Arc::clone(work);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _running = work.enter();
        check(&work)
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rounds_as_powers_of_two() {
        let work = HashWork::default();
        work.count_bcrypt(4);
        work.count_bcrypt(10);
        work.count_other();
        assert_eq!(
            work.snapshot(),
            HashWorkSnapshot {
                bcrypt_checks: 2,
                bcrypt_rounds: 16 + 1024,
                other_checks: 1,
            }
        );
    }

    #[tokio::test]
    async fn a_closed_limiter_runs_nothing() {
        let limiter = Arc::new(Semaphore::new(1));
        limiter.close();
        let work = Arc::new(HashWork::default());
        assert_eq!(run_limited(&limiter, &work, |_| 1).await, None);
    }
}
