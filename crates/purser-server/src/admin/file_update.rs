//! Changing a file that a running server watches, safely against other writers and readers:
//! an exclusive lock on a sibling `.lock` file serialises writers (twenty concurrent
//! `purser token create` add twenty entries), and the new text goes to a temporary file in the
//! same folder that is renamed over the old one, so a reader sees the old file or the new one,
//! never half of either.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Largest file read back for an update.
const MAX_BYTES: u64 = 16 << 20;

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// The change itself was refused (a duplicate name, a file that does not load).
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

/// Holds the lock of `path` until dropped (closing the file releases it).
struct Locked {
    _file: File,
}

fn lock(path: &Path) -> Result<Locked, UpdateError> {
    let lp = lock_path(path);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lp)
        .map_err(|e| io(&lp, e))?;
    flock(&f, FlockOperation::LockExclusive).map_err(|e| io(&lp, e))?;
    Ok(Locked { _file: f })
}

/// Under the lock: reads the file (`None` when it does not exist yet), lets `change` make the
/// new text, and writes it with a rename. `change` may refuse, and then nothing is written.
/// Returns what `change` returned beside the text.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(Option<&str>) -> Result<(String, T), UpdateError>,
) -> Result<T, UpdateError> {
    locked_update(path, change, true, |_| Ok(()))
}

/// Like [`update`], then `after` runs with the text written, still under the lock (so that
/// files derived from this one are written in the same order as it). A text equal to the
/// file's is not written again.
pub fn update_then<T>(
    path: &Path,
    change: impl FnOnce(Option<&str>) -> Result<(String, T), UpdateError>,
    after: impl FnOnce(&str) -> Result<(), UpdateError>,
) -> Result<T, UpdateError> {
    locked_update(path, change, false, after)
}

fn locked_update<T>(
    path: &Path,
    change: impl FnOnce(Option<&str>) -> Result<(String, T), UpdateError>,
    write_unchanged: bool,
    after: impl FnOnce(&str) -> Result<(), UpdateError>,
) -> Result<T, UpdateError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let _held = lock(path)?;
    let old = if path.exists() {
        Some(purser_fs::read_text(path, MAX_BYTES).map_err(|e| io(path, e))?)
    } else {
        None
    };
    let (text, out) = change(old.as_deref())?;
    if write_unchanged || old.as_deref() != Some(text.as_str()) {
        write_atomically(path, &text)?;
    }
    after(&text)?;
    Ok(out)
}

/// Replaces the whole file under its lock, with a rename.
pub fn replace(path: &Path, text: &str) -> Result<(), UpdateError> {
    update(path, |_| Ok((text.to_string(), ())))
}

/// Reads the file (`None` when it does not exist). No lock is needed: writers rename a whole
/// file into place, so a reader sees one version or the next.
pub fn read(path: &Path) -> Result<Option<String>, UpdateError> {
    if !path.exists() {
        return Ok(None);
    }
    purser_fs::read_text(path, MAX_BYTES)
        .map(Some)
        .map_err(|e| io(path, e))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), UpdateError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        // The old file's mode is kept (a tokens file is often 0640 for the server's group).
        if let Ok(m) = std::fs::metadata(path) {
            let _ = f.set_permissions(std::fs::Permissions::from_mode(m.permissions().mode()));
        }
        f.write_all(text.as_bytes()).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        // The rename itself is made durable by syncing the folder.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_updates_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/list.txt");
        let threads: Vec<_> = (0..20)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    update(&path, |old| Ok((format!("{}{i}\n", old.unwrap_or("")), ()))).unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        // A refused change writes nothing.
        let r = update(&path, |_| {
            Err::<(String, ()), _>(UpdateError::Refused("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            2,
            "no temporary file left"
        );
    }
}
