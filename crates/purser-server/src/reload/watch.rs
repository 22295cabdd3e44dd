//! The folders of the watched files, watched with inotify.
//!
//! The kernel is asked for names made, removed or renamed in each folder, for files closed
//! after writing and for changed attributes, not for every write (`IN_MODIFY`): a log file
//! written beside the policy (`purser serve 2>>/etc/purser/purser.log`) would otherwise wake
//! the watcher at every line, which cost about half again the CPU of a warm token when the
//! watcher and the server shared a core (docs/performance.md). A file written in place is
//! reported when it is closed; a writer that keeps it open is found by the once-a-second
//! comparison of metadata, like any change on a filesystem without events.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::Wake;

/// One watched source: its index, its file name and the folder watched for it.
pub(super) struct Watched {
    pub index: usize,
    pub name: Option<OsString>,
    pub folder: PathBuf,
}

/// Keeps the folders watched; dropping it stops watching.
pub(super) struct Watching {
    task: tokio::task::AbortHandle,
    /// Events the kernel delivered, whatever they named (the tests count them).
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
    pub delivered: Arc<AtomicU64>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the sources' folders, sending what each event means to `tx`; `None` (and a
/// warning) when the kernel gives no events, which leaves the polling alone to find changes.
/// Call from within a tokio runtime.
#[cfg(target_os = "linux")]
pub(super) fn watch(sources: Vec<Watched>, tx: UnboundedSender<Wake>) -> Option<Watching> {
    use futures::StreamExt;
    use inotify::{EventMask, Inotify, WatchMask};

    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "file events unavailable; changes are found by polling");
            return None;
        }
    };
    let mask = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF;
    let mut watches = inotify.watches();
    let mut folders: Vec<(inotify::WatchDescriptor, PathBuf)> = Vec::new();
    for s in &sources {
        if folders.iter().any(|(_, f)| *f == s.folder) {
            continue;
        }
        match watches.add(&s.folder, mask) {
            Ok(wd) => folders.push((wd, s.folder.clone())),
            Err(e) => {
                tracing::warn!(dir = %s.folder.display(), error = %e, "cannot watch folder; changes are found by polling");
            }
        }
    }
    // The stream owns the instance, and with it the watches: they last as long as the task.
    let mut events = match inotify.into_event_stream(vec![0u8; 4096]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "file events unavailable; changes are found by polling");
            return None;
        }
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let counted = delivered.clone();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "file events stopped; changes are found by polling");
                    return;
                }
            };
            counted.fetch_add(1, Ordering::Relaxed);
            // Events were lost: compare every watched file.
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                for s in &sources {
                    let _ = tx.send(Wake::Folder(s.index));
                }
                continue;
            }
            let Some(folder) = folders
                .iter()
                .find(|(wd, _)| *wd == event.wd)
                .map(|(_, f)| f)
            else {
                continue;
            };
            // A name made, removed or renamed can change what a watched path reaches (a moved
            // symbolic link, Kubernetes' `..data`); so can the folder itself going away.
            let relinks = event.mask.intersects(
                EventMask::CREATE
                    | EventMask::DELETE
                    | EventMask::MOVED_FROM
                    | EventMask::MOVED_TO
                    | EventMask::DELETE_SELF
                    | EventMask::MOVE_SELF
                    | EventMask::IGNORED,
            );
            for s in sources.iter().filter(|s| s.folder == *folder) {
                if event.name.is_some() && event.name == s.name {
                    let _ = tx.send(Wake::Named(s.index));
                } else if relinks {
                    let _ = tx.send(Wake::Folder(s.index));
                }
            }
        }
    });
    Some(Watching {
        task: task.abort_handle(),
        delivered,
    })
}

/// Without inotify the once-a-second comparison of metadata finds every change.
#[cfg(not(target_os = "linux"))]
pub(super) fn watch(_sources: Vec<Watched>, _tx: UnboundedSender<Wake>) -> Option<Watching> {
    tracing::info!("file events are read on Linux only; changes are found by polling");
    None
}
