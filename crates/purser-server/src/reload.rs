//! Live reload of watched files (policy, htpasswd, htgroup): one mechanism, used three times.
//!
//! A change is noticed two ways: filesystem events on the file's folder (editors and `htpasswd`
//! replace files by rename, so the folder is watched, not the file), and a once-a-second
//! comparison of the file's metadata as a safety net for filesystems that send no events.
//! Events are debounced, then the whole new file is parsed by the source's loader; only a
//! complete, valid result is swapped in. A failure keeps the last good version serving and is
//! logged and counted. SIGHUP reloads every source.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Parses the file at its path and, only when that fully succeeds, swaps the new value in.
/// Returns a short summary for the log (`"42 rules"`), or the problem.
pub type Loader = Box<dyn Fn(&Path) -> Result<String, String> + Send + Sync>;

pub struct Source {
    /// `policy`, `htpasswd` or `htgroup`: the metrics label.
    pub name: &'static str,
    pub path: PathBuf,
    pub load: Loader,
}

/// Quiet time after the last event before a reload: an editor's save is several events.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A file missing during a rename is retried for this long before it counts as a failure.
const MISSING_GRACE: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Option<(u64, u128, u64)>);

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    Fingerprint(std::fs::metadata(path).ok().map(|m| {
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        (m.len(), mtime, m.ino())
    }))
}

/// The file exists and is not empty. An empty file is still loaded once the grace period is over
/// (an empty htpasswd file is legitimate), but never in the middle of a save.
fn has_content(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct ReloadHandle {
    _watcher: Option<notify::RecommendedWatcher>,
    trigger: mpsc::UnboundedSender<Option<usize>>,
}

impl ReloadHandle {
    /// Reloads every source now (what SIGHUP does).
    pub fn reload_all(&self) {
        let _ = self.trigger.send(None);
    }
}

/// Records the outcome of a load in the metrics and the log. Used for the first load at start too.
pub fn record(metrics: &Metrics, source: &str, path: &Path, result: &Result<String, String>) {
    match result {
        Ok(summary) => {
            metrics
                .reloads
                .with_label_values(&[source, "success"])
                .inc();
            let now = purser_core::Clock::wall(&purser_core::SystemClock)
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            metrics
                .reload_last_success
                .with_label_values(&[source])
                .set(now);
            tracing::info!(source, path = %path.display(), %summary, "loaded");
        }
        Err(problem) => {
            // One log line per failure, however many problems the file has.
            let problem = problem.replace('\n', "; ");
            metrics
                .reloads
                .with_label_values(&[source, "failure"])
                .inc();
            tracing::error!(source, path = %path.display(), %problem, "reload failed; the previous version stays in force");
        }
    }
}

/// Starts watching. Call from within a tokio runtime.
pub fn spawn(sources: Vec<Source>, metrics: Metrics) -> ReloadHandle {
    let sources = Arc::new(sources);
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<usize>>();

    let watcher = {
        let sources = sources.clone();
        let tx = tx.clone();
        let names: Vec<(usize, Option<std::ffi::OsString>)> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.path.file_name().map(|n| n.to_os_string())))
            .collect();
        let handler = move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            for p in &ev.paths {
                for (i, name) in &names {
                    if p.file_name().map(|n| n.to_os_string()) == *name {
                        let _ = tx.send(Some(*i));
                    }
                }
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => {
                let mut dirs = HashSet::new();
                for s in sources.iter() {
                    let dir = s
                        .path
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new("."))
                        .to_path_buf();
                    if dirs.insert(dir.clone()) {
                        if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch folder; changes are found by polling");
                        }
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file events unavailable; changes are found by polling");
                None
            }
        }
    };

    let task_sources = sources.clone();
    tokio::spawn(async move {
        let sources = task_sources;
        let mut prints: Vec<Fingerprint> = sources.iter().map(|s| fingerprint(&s.path)).collect();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut dirty: HashSet<usize> = HashSet::new();
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Some(i)) => { dirty.insert(i); }
                    Some(None) => dirty.extend(0..sources.len()),
                },
                _ = poll.tick() => {
                    for (i, s) in sources.iter().enumerate() {
                        if fingerprint(&s.path) != prints[i] {
                            dirty.insert(i);
                        }
                    }
                }
            }
            if dirty.is_empty() {
                continue;
            }
            // Debounce: collect events until the folder has been quiet for a moment.
            while let Ok(Some(msg)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                match msg {
                    Some(i) => {
                        dirty.insert(i);
                    }
                    None => dirty.extend(0..sources.len()),
                }
            }
            for i in dirty {
                let s = &sources[i];
                let deadline = tokio::time::Instant::now() + MISSING_GRACE;
                // A rename-based save can leave the name missing for a moment, and an in-place
                // save truncates before it writes: wait (bounded) for a file with content.
                while !has_content(&s.path) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let print = fingerprint(&s.path);
                let result = {
                    let path = s.path.clone();
                    let sources = sources.clone();
                    tokio::task::spawn_blocking(move || (sources[i].load)(&path))
                        .await
                        .unwrap_or_else(|e| Err(format!("loader panicked: {e}")))
                };
                prints[i] = print;
                record(&metrics, s.name, &s.path, &result);
            }
        }
    });
    ReloadHandle {
        _watcher: watcher,
        trigger: tx,
    }
}
