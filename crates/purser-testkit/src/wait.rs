//! Bounded waits: poll a condition until it holds, never sleep a fixed time.

use std::time::{Duration, Instant};

/// How long a process may take to become ready. Generous: a debug build of purser generating
/// an RSA key takes seconds, and tests run in parallel on small machines. Only a failing run
/// waits this long.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `cond` at short, growing intervals until it holds or `timeout` passes; then panics
/// naming `what` and appending `context()` (typically a process's log tail).
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what} did not become ready within {timeout:?}\n{}",
                context()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
