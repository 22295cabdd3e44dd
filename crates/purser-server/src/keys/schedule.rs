//! `token.rotation: { every, overlap }`: the next key is made `overlap` before the active key
//! is `every` old (counted from its activation) and activated when it is; a retiring key is
//! removed once no token it signed can be valid. Every replica runs the same check; the
//! manifest's lock and a second look under it make the step happen once.

use std::sync::Arc;
use std::time::Duration;

use purser_core::Clock;

use super::admin::{Folder, KeysError};
use super::{retire_after, time_of, KeySet, KeyState, Lifetimes};

/// The schedule, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub every: u64,
    pub overlap: u64,
}

/// What is due now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    MakeNext,
    Activate(String),
    Retire(String),
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// The step due at `now`, if any: one at a time, the most urgent first.
pub fn due(set: &KeySet, r: Rotation, l: Lifetimes, now: i64) -> Option<Step> {
    let active = set.active();
    let since = active
        .entry
        .activated
        .as_deref()
        .map(time_of)
        .unwrap_or(now);
    let next = set.keys.iter().find(|k| k.entry.state == KeyState::Next);
    let activate_at = since.saturating_add(secs(r.every));
    let publish_at = activate_at.saturating_sub(secs(r.overlap));
    match next {
        Some(n) if now >= activate_at => return Some(Step::Activate(n.entry.name.clone())),
        None if now >= publish_at => return Some(Step::MakeNext),
        _ => {}
    }
    set.keys
        .iter()
        .find(|k| {
            k.entry.state == KeyState::Retiring
                && k.entry
                    .deactivated
                    .as_deref()
                    .is_some_and(|d| now >= retire_after(time_of(d), l))
        })
        .map(|k| Step::Retire(k.entry.name.clone()))
}

/// Runs what is due at `now` (each step under the lock, after looking again), until nothing is.
/// Returns the steps taken.
pub fn run_due(folder: &Folder<'_>, r: Rotation, now: i64) -> Result<Vec<Step>, KeysError> {
    let mut taken = Vec::new();
    for _ in 0..4 {
        let set = folder.load()?;
        let Some(step) = due(&set, r, folder.lifetimes, now) else {
            break;
        };
        match &step {
            Step::MakeNext => {
                folder.next(None, now)?;
            }
            Step::Activate(name) => {
                // Under the lock the key must still be next; a replica that did it first wins.
                match folder.activate(Some(name), now, |_, _| Ok(())) {
                    Ok(_) => {}
                    Err(KeysError::Update(crate::admin::file_update::UpdateError::Refused(_))) => {
                        continue
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Retire(name) => match folder.retire(name, now, false) {
                Ok(_) => {}
                Err(KeysError::Update(crate::admin::file_update::UpdateError::Refused(_))) => {
                    continue
                }
                Err(e) => return Err(e),
            },
        }
        tracing::warn!(step = ?step, "key rotation schedule");
        taken.push(step);
    }
    Ok(taken)
}

/// How often a server looks at the schedule: often enough for the overlap, at most a minute.
pub fn check_every(r: Rotation) -> Duration {
    Duration::from_secs((r.overlap / 4).clamp(1, 60))
}

/// The server's task: looks at the schedule every [`check_every`]; the manifest's watcher then
/// loads what changed, in this replica and every other.
pub fn spawn(config: Arc<crate::config::Config>, r: Rotation, clock: Arc<dyn Clock>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check_every(r));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let config = config.clone();
            let clock = clock.clone();
            let result = tokio::task::spawn_blocking(move || {
                let Some(folder) = Folder::of(&config) else {
                    return Ok(Vec::new());
                };
                run_due(&folder, r, purser_authn::tokens::unix_seconds(clock.wall()))
            })
            .await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "key rotation schedule: step failed; tried again at the next check")
                }
                Err(e) => tracing::error!(error = %e, "key rotation schedule: task failed"),
            }
        }
    });
}
