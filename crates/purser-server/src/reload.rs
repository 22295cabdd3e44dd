//! Live reload of watched files (policy, htpasswd, htgroup): one mechanism, used three times.
//!
//! A change is noticed two ways: filesystem events on the file's folder (editors and `htpasswd`
//! replace files by rename, so the folder is watched, not the file), and a once-a-second
//! comparison of the file's metadata as a safety net for filesystems that send no events.
//! An event on another name in the folder compares the metadata of the folder's watched files
//! at once: a Kubernetes ConfigMap or Secret volume never touches `policy.yaml` itself (a
//! symbolic link to `..data/policy.yaml`); the kubelet writes a new timestamped folder and
//! renames a `..data_tmp` link over `..data`, so the event names `..data` and only the file the
//! link now reaches has changed.
//! Events are debounced, then the whole new file is parsed by the source's loader; only a
//! complete, valid result is swapped in. A failure keeps the last good version serving and is
//! logged and counted. SIGHUP reloads every source.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::metrics::Metrics;

mod watch;

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

/// What wakes the reload task.
enum Wake {
    /// An event named the source's file: load it again.
    Named(usize),
    /// An event named something else in the source's folder: load it again if what its path
    /// reaches has changed (a moved symbolic link, Kubernetes' `..data`).
    Folder(usize),
    /// Load every source (SIGHUP); the sender, if any, is told when every load has ended.
    All(Option<tokio::sync::oneshot::Sender<()>>),
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct ReloadHandle {
    _watcher: Option<watch::Watching>,
    trigger: mpsc::UnboundedSender<Wake>,
}

impl ReloadHandle {
    /// Reloads every source now (what SIGHUP does).
    pub fn reload_all(&self) {
        let _ = self.trigger.send(Wake::All(None));
    }

    /// Reloads every source and resolves once each load has ended, whatever its outcome.
    pub async fn reload_all_done(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.trigger.send(Wake::All(Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Records the outcome of a load in the metrics and the log. Used for the first load at start too.
pub fn record(metrics: &Metrics, source: &str, path: &Path, result: &Result<String, String>) {
    match result {
        Ok(summary) => {
            // The log line first, then the counters: a reader who saw the count finds the line.
            tracing::info!(source, path = %path.display(), %summary, "loaded");
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
        }
        Err(problem) => {
            // One log line per failure, however many problems the file has.
            let problem = problem.replace('\n', "; ");
            tracing::error!(source, path = %path.display(), %problem, "reload failed; the previous version stays in force");
            metrics
                .reloads
                .with_label_values(&[source, "failure"])
                .inc();
        }
    }
}

/// Files a wake-up under what it asks for: a load, a comparison, or every load and a reply.
fn take(
    msg: Wake,
    sources: usize,
    dirty: &mut HashSet<usize>,
    check: &mut HashSet<usize>,
    done: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) {
    match msg {
        Wake::Named(i) => {
            dirty.insert(i);
        }
        Wake::Folder(i) => {
            check.insert(i);
        }
        Wake::All(reply) => {
            dirty.extend(0..sources);
            done.extend(reply);
        }
    }
}

/// The folder watched for a source: the one its path names (not where a link leads).
fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Starts watching. Call from within a tokio runtime.
pub fn spawn(sources: Vec<Source>, metrics: Metrics) -> ReloadHandle {
    spawn_polling(sources, metrics, POLL)
}

/// [`spawn`] with the metadata polling's interval given (the tests lengthen it to show that
/// file events alone find a change).
fn spawn_polling(sources: Vec<Source>, metrics: Metrics, poll_every: Duration) -> ReloadHandle {
    let sources = Arc::new(sources);
    let (tx, mut rx) = mpsc::unbounded_channel::<Wake>();

    let watcher = watch::watch(
        sources
            .iter()
            .enumerate()
            .map(|(index, s)| watch::Watched {
                index,
                name: s.path.file_name().map(|n| n.to_os_string()),
                folder: folder_of(&s.path),
            })
            .collect(),
        tx.clone(),
    );

    let task_sources = sources.clone();
    tokio::spawn(async move {
        let sources = task_sources;
        let mut prints: Vec<Fingerprint> = sources.iter().map(|s| fingerprint(&s.path)).collect();
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut dirty: HashSet<usize> = HashSet::new();
            let mut check: HashSet<usize> = HashSet::new();
            let mut done = Vec::new();
            let n = sources.len();
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => return,
                    Some(msg) => take(msg, n, &mut dirty, &mut check, &mut done),
                },
                _ = poll.tick() => check.extend(0..sources.len()),
            }
            let changed = |check: &HashSet<usize>, prints: &[Fingerprint]| -> Vec<usize> {
                check
                    .iter()
                    .copied()
                    .filter(|&i| fingerprint(&sources[i].path) != prints[i])
                    .collect()
            };
            dirty.extend(changed(&check, &prints));
            if dirty.is_empty() && done.is_empty() {
                continue;
            }
            // Debounce: collect events until the watched files have been quiet for a moment.
            // Only events naming them (or SIGHUP) extend the wait: other names in the folder
            // are compared at the end, and a busy neighbour never holds a reload back.
            let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
            while let Ok(Some(msg)) = tokio::time::timeout_at(quiet_at, rx.recv()).await {
                if !matches!(msg, Wake::Folder(_)) {
                    quiet_at = tokio::time::Instant::now() + DEBOUNCE;
                }
                take(msg, n, &mut dirty, &mut check, &mut done);
            }
            dirty.extend(changed(&check, &prints));
            for i in dirty {
                let s = &sources[i];
                let deadline = tokio::time::Instant::now() + MISSING_GRACE;
                // A rename-based save can leave the name missing for a moment, and an in-place
                // save truncates before it writes: wait (bounded) for a file with content.
                while !has_content(&s.path) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let print = fingerprint(&s.path);
                // Recorded on the loading thread, right after the swap: whoever sees the new
                // version sees its count and its log line a moment later at most.
                let loaded = {
                    let path = s.path.clone();
                    let sources = sources.clone();
                    let metrics = metrics.clone();
                    tokio::task::spawn_blocking(move || {
                        let result = (sources[i].load)(&path);
                        record(&metrics, sources[i].name, &path, &result);
                    })
                    .await
                };
                if let Err(e) = loaded {
                    record(
                        &metrics,
                        s.name,
                        &s.path,
                        &Err(format!("loader panicked: {e}")),
                    );
                }
                prints[i] = print;
            }
            for reply in done {
                let _ = reply.send(());
            }
        }
    });
    ReloadHandle {
        _watcher: watcher,
        trigger: tx,
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::disallowed_methods,
        reason = "test code: a panic is the failure report, and tests may read the real clock"
    )]

    use std::sync::Mutex;
    use std::time::Instant;

    use purser_testkit::kube::ConfigMapVolume;

    use super::*;

    /// A source whose loader keeps the file's text, refusing a text that starts with `broken`.
    fn source(name: &'static str, path: PathBuf) -> (Source, Arc<Mutex<String>>) {
        let seen = Arc::new(Mutex::new(String::new()));
        let held = seen.clone();
        let load: Loader = Box::new(move |p: &Path| {
            let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
            if text.starts_with("broken") {
                return Err("broken".into());
            }
            *held.lock().unwrap() = text.clone();
            Ok(text)
        });
        (Source { name, path, load }, seen)
    }

    async fn until(what: &str, bound: Duration, cond: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !cond() {
            assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// The kubelet's swap of `..data` names neither file, yet each is reloaded at once from the
    /// folder's events: polling is off (an hour) so that events alone must find it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_configmap_swap_is_found_by_events_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = ConfigMapVolume::create(
            tmp.path(),
            &[("policy.yaml", "p1"), ("users.htpasswd", "u1")],
        );
        let (policy, policy_seen) = source("policy", volume.path("policy.yaml"));
        let (users, users_seen) = source("htpasswd", volume.path("users.htpasswd"));
        *policy_seen.lock().unwrap() = "p1".into();
        *users_seen.lock().unwrap() = "u1".into();
        let registry = prometheus::Registry::new();
        let metrics = Metrics::new(registry).unwrap();
        let handle = spawn_polling(
            vec![policy, users],
            metrics.clone(),
            Duration::from_secs(3600),
        );
        // The first poll tick fires at once: let it pass before editing.
        tokio::time::sleep(Duration::from_millis(50)).await;

        volume.update(&[("policy.yaml", "p2"), ("users.htpasswd", "u1")]);
        until("policy p2", Duration::from_secs(2), || {
            *policy_seen.lock().unwrap() == "p2"
        })
        .await;
        volume.update(&[("policy.yaml", "p2"), ("users.htpasswd", "u2")]);
        until("htpasswd u2", Duration::from_secs(2), || {
            *users_seen.lock().unwrap() == "u2"
        })
        .await;

        // A broken version is refused and counted; the last good one stays.
        let failures = || {
            metrics
                .reloads
                .with_label_values(&["policy", "failure"])
                .get()
        };
        volume.update(&[("policy.yaml", "broken"), ("users.htpasswd", "u2")]);
        until("the failure counted", Duration::from_secs(2), || {
            failures() == 1
        })
        .await;
        assert_eq!(*policy_seen.lock().unwrap(), "p2");
        drop(handle);
    }

    /// A file written without pause beside the watched one (a log in the config folder) holds
    /// no reload back: its events neither start comparisons nor extend the quiet time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_neighbour_does_not_hold_a_reload_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("policy.yaml");
        std::fs::write(&path, "p1").unwrap();
        let (policy, seen) = source("policy", path.clone());
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let _handle = spawn_polling(vec![policy], metrics, Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let noise = {
            let stop = stop.clone();
            let log = tmp.path().join("purser.log");
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(log).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    writeln!(f, "a log line").unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let tmp_file = tmp.path().join(".policy.yaml.tmp");
        std::fs::write(&tmp_file, "p2").unwrap();
        std::fs::rename(&tmp_file, &path).unwrap();
        until("policy p2", Duration::from_secs(2), || {
            *seen.lock().unwrap() == "p2"
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        noise.join().unwrap();
    }

    /// A log written line by line beside the policy, its file kept open, costs the server
    /// nothing: the kernel reports none of those writes (only a close after writing, or a name
    /// made, removed or renamed), while an edit of the policy is still found by events alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_written_beside_the_policy_delivers_no_events() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("policy.yaml");
        std::fs::write(&path, "p1").unwrap();
        // Two logs written in turn: the kernel merges an event into the one queued just before
        // it when they are the same, and alternating names keeps every write its own event.
        let mut logs = [
            std::fs::File::create(tmp.path().join("purser.log")).unwrap(),
            std::fs::File::create(tmp.path().join("access.log")).unwrap(),
        ];
        let (policy, seen) = source("policy", path.clone());
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let handle = spawn_polling(vec![policy], metrics, Duration::from_secs(3600));
        let delivered = handle
            ._watcher
            .as_ref()
            .expect("inotify watches the folder")
            .delivered
            .clone();
        for n in 0..200 {
            writeln!(logs[n % 2], "log line {n}").unwrap();
        }
        // Events arrive in order: once the policy's edit is loaded, any event of the log's
        // writes before it has been delivered and counted.
        std::fs::write(&path, "p2").unwrap();
        until("policy p2", Duration::from_secs(2), || {
            *seen.lock().unwrap() == "p2"
        })
        .await;
        let n = delivered.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..10).contains(&n),
            "{n} events delivered for 200 log lines and one edit of the policy"
        );
        drop(logs);
    }

    /// SIGHUP's reload answers once every source has been loaded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_all_done_resolves_after_the_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("policy.yaml");
        std::fs::write(&path, "p1").unwrap();
        let (policy, seen) = source("policy", path.clone());
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let handle = spawn_polling(vec![policy], metrics, Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(10), handle.reload_all_done())
            .await
            .expect("the reload ends");
        assert_eq!(*seen.lock().unwrap(), "p1");
    }
}
