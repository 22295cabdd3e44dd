//! Scheduling password checks: the shared limiter ([`hash_limiter`]), the blocking pool they
//! run on ([`run_limited`]) and the count of the work done ([`HashWork`]). What a check
//! computes is [`crate::hash`]'s business; this module only decides where and when it runs.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use purser_core::{BackendError, BackendName};
use tokio::sync::Semaphore;

/// Counts the expensive hash checks a backend ran, so tests can show that unknown users and
/// wrong passwords cost the same work (and operators can see the load).
#[derive(Debug, Default)]
pub(crate) struct HashWork {
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
    pub(crate) fn snapshot(&self) -> HashWorkSnapshot {
        HashWorkSnapshot {
            bcrypt_checks: self.bcrypt_checks.load(Ordering::Relaxed),
            bcrypt_rounds: self.bcrypt_cost_total.load(Ordering::Relaxed),
            other_checks: self.other_checks.load(Ordering::Relaxed),
        }
    }
}

/// How long a password check may expect to wait for its turn before it is refused at once
/// ([`CheckRefused::Busy`]): a burst then costs its clients a fast retry, not a long hang.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(3);

/// What one round of a check (a bcrypt key expansion: a cost-c check is `2^c` rounds) is
/// assumed to take before any check has been measured: a cost-10 bcrypt is then 100 ms, about
/// what one core of a slow machine takes. Guessing high only shortens the first queue.
const FIRST_NANOS_PER_ROUND: u64 = 100_000;

/// The rounds of a bcrypt check of `cost`, the unit the limiter's queue is measured in. Other
/// formats (apr1, SHA-1, crypt) are a fraction of a millisecond: one round.
pub(crate) fn bcrypt_rounds(cost: u32) -> u64 {
    1u64 << cost.min(31)
}

/// The limiter of password checks: one permit per CPU this process may use
/// (`available_parallelism`, which follows CPU affinity and cgroup quotas), at least one, and a
/// bound on the queue in front of it.
///
/// Give the same limiter to every hashing backend
/// ([`crate::StaticAuthenticator::with_hash_limiter`],
/// [`crate::HtpasswdAuthenticator::with_hash_limiter`]): logins beyond the number of cores
/// then wait their turn (first come, first served) instead of as runnable threads competing
/// with the async workers, so the server keeps answering (`/healthz`, cache hits) while bcrypt
/// saturates the cores. A check that would wait longer than its bound (the checks ahead of it,
/// times the measured time of one, shared by the permits) is refused before it queues.
#[derive(Debug)]
pub struct HashLimiter {
    semaphore: Arc<Semaphore>,
    permits: usize,
    max_wait: Duration,
    /// Rounds of the checks waiting for a permit or running.
    queued_rounds: AtomicU64,
    /// Moving average of the time one round takes, in nanoseconds.
    nanos_per_round: AtomicU64,
}

impl HashLimiter {
    /// `permits` checks at once; a check expecting to wait longer than `max_wait` is refused.
    pub fn new(permits: usize, max_wait: Duration) -> Self {
        let permits = permits.max(1);
        HashLimiter {
            semaphore: Arc::new(Semaphore::new(permits)),
            permits,
            max_wait,
            queued_rounds: AtomicU64::new(0),
            nanos_per_round: AtomicU64::new(FIRST_NANOS_PER_ROUND),
        }
    }

    /// How long a check arriving now may expect to wait for a permit: the rounds ahead of it,
    /// at the measured time per round, shared by the permits.
    pub fn expected_wait(&self) -> Duration {
        let ahead = self.queued_rounds.load(Ordering::Acquire) / self.permits as u64;
        Duration::from_nanos(ahead.saturating_mul(self.nanos_per_round.load(Ordering::Relaxed)))
    }

    fn measured(&self, took: Duration, rounds: u64) {
        // Quick to rise (slower checks mean longer waits now), slow to fall (about the last
        // eight checks): the bound errs on the side of refusing early.
        let sample = (took.as_nanos() / u128::from(rounds.max(1))).min(u128::from(u64::MAX)) as u64;
        let old = self.nanos_per_round.load(Ordering::Relaxed);
        let new = if sample > old {
            old / 2 + sample / 2
        } else {
            old - old / 8 + sample / 8
        };
        self.nanos_per_round.store(new.max(1), Ordering::Relaxed);
    }

    /// Permits free now (all of them when no check runs).
    pub fn available_permits(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Closes the limiter: checks not yet running are refused.
    pub fn close(&self) {
        self.semaphore.close();
    }
}

/// One limiter for this machine (see [`HashLimiter`]), with the default queue bound.
pub fn hash_limiter() -> Arc<HashLimiter> {
    let permits = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    Arc::new(HashLimiter::new(permits, MAX_QUEUE_WAIT))
}

/// Why a password check did not give an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckRefused {
    /// Too many checks ahead of this one: it would wait longer than the limiter's bound.
    #[error("too many password checks are waiting; try again shortly")]
    Busy,
    /// The limiter was closed or the check panicked.
    #[error("the password check did not complete")]
    Failed,
}

/// The backend error for a check that gave no answer: busy is its own error (the server
/// answers 503 with a short `Retry-After`), anything else is the backend being unavailable.
pub(crate) fn refused(backend: BackendName, e: CheckRefused) -> BackendError {
    match e {
        CheckRefused::Busy => BackendError::Busy { backend },
        CheckRefused::Failed => BackendError::Unavailable {
            backend,
            reason: e.to_string(),
        },
    }
}

/// Leaves the queue when a check ends, however it ends.
struct Queued<'a>(&'a HashLimiter, u64);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued_rounds.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// Runs one password check of about `rounds` rounds (see [`bcrypt_rounds`]) on the blocking
/// pool, after taking a permit of `limiter` (held until the check ends), unless it would wait
/// too long for one.
pub(crate) async fn run_limited<T, F>(
    limiter: &Arc<HashLimiter>,
    work: &Arc<HashWork>,
    rounds: u64,
    check: F,
) -> Result<T, CheckRefused>
where
    T: Send + 'static,
    F: FnOnce(&HashWork) -> T + Send + 'static,
{
    if limiter.expected_wait() > limiter.max_wait {
        return Err(CheckRefused::Busy);
    }
    let rounds = rounds.max(1);
    limiter.queued_rounds.fetch_add(rounds, Ordering::AcqRel);
    let _queued = Queued(limiter, rounds);
    let permit = Arc::clone(&limiter.semaphore)
        .acquire_owned()
        .await
        .map_err(|_| CheckRefused::Failed)?;
    let work = Arc::clone(work);
    // Timed inside the blocking task: the hashing itself, not the hand-off to the pool, is
    // what the queue ahead of a new check costs per round.
    let (result, took) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _running = work.enter();
        let started = Instant::now();
        let result = check(&work);
        (result, started.elapsed())
    })
    .await
    .map_err(|_| CheckRefused::Failed)?;
    limiter.measured(took, rounds);
    Ok(result)
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
        let limiter = Arc::new(HashLimiter::new(1, MAX_QUEUE_WAIT));
        limiter.close();
        let work = Arc::new(HashWork::default());
        assert_eq!(
            run_limited(&limiter, &work, 1, |_| 1).await,
            Err(CheckRefused::Failed)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_that_would_wait_too_long_are_refused_at_once() {
        // One permit, checks of 50 ms, and a queue bound of 200 ms: about four may wait.
        let limiter = Arc::new(HashLimiter::new(1, Duration::from_millis(200)));
        let work = Arc::new(HashWork::default());
        let slow = |_: &HashWork| std::thread::sleep(Duration::from_millis(50));
        // Teach the limiter what a check costs.
        run_limited(&limiter, &work, 1, slow).await.unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (limiter, work) = (limiter.clone(), work.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    (run_limited(&limiter, &work, 1, slow).await, t.elapsed())
                })
            })
            .collect();
        let mut ran = 0;
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                (Ok(()), _) => ran += 1,
                (Err(CheckRefused::Busy), took) => {
                    busy += 1;
                    assert!(took < Duration::from_millis(20), "refused after {took:?}");
                }
                (Err(e), _) => panic!("{e}"),
            }
        }
        assert!(busy > 0 && ran > 0, "ran {ran}, refused {busy}");
        assert!(ran <= 8, "{ran} checks were let wait behind a 200 ms bound");
        // What was let in finished within the bound plus one check, roughly.
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(limiter.queued_rounds.load(Ordering::Acquire), 0);
    }
}
