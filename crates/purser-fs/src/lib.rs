//! Reading the files purser is given (policy, htpasswd, htgroup, keys, certificates): one
//! bounded reader, so every file gets the same checks and the same messages.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("users.htgroup");
//! std::fs::write(&path, "admins: alice\n").unwrap();
//! assert_eq!(purser_fs::read_text(&path, 1024).unwrap(), "admins: alice\n");
//!
//! let err = purser_fs::read_text(&path, 4).unwrap_err();
//! assert!(err.to_string().ends_with("users.htgroup: the file is larger than 4 bytes"));
//! ```
//!
//! The reader
//! - refuses anything but a regular file (after following symlinks): reading a FIFO would wait
//!   for a writer forever, and a device (`/dev/zero`) never ends;
//! - reads at most `bound + 1` bytes, whatever the file's metadata says (a file can grow
//!   between `stat` and `read`, and `/proc` files report a size of 0), and refuses the file
//!   when there was more than `bound`;
//! - names the file in every error.
//!
//! It is its own crate because purser-core does no I/O by its charter, and the crates that
//! read files (purser-authn, purser-authz, purser-token, purser-server) do not depend on one
//! another.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A file that could not be read, or was refused: the path and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct ReadError {
    path: PathBuf,
    #[source]
    kind: ReadErrorKind,
}

/// Why a file was not read. `Display` does not repeat the path (see [`ReadError`]).
#[derive(Debug, thiserror::Error)]
pub enum ReadErrorKind {
    /// Opening or reading failed (missing file, permissions, I/O error).
    #[error("cannot read the file: {0}")]
    Io(#[source] io::Error),
    /// A FIFO, a device, a socket or a directory.
    #[error("not a regular file ({0}); give the path of a regular file")]
    NotRegular(NotRegular),
    /// More than the bound.
    #[error("the file is larger than {bound} bytes")]
    TooLarge { bound: u64 },
    /// The bytes are not UTF-8.
    #[error("the file is not valid UTF-8 (near byte {offset}); save it as UTF-8")]
    NotUtf8 { offset: usize },
}

/// What a refused non-regular file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRegular {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Other,
}

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotRegular::Directory => "a directory",
            NotRegular::Fifo => "a FIFO",
            NotRegular::CharDevice => "a character device",
            NotRegular::BlockDevice => "a block device",
            NotRegular::Socket => "a socket",
            NotRegular::Other => "not a regular file",
        })
    }
}

impl NotRegular {
    fn of(t: FileType) -> NotRegular {
        if t.is_dir() {
            return NotRegular::Directory;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                return NotRegular::Fifo;
            }
            if t.is_char_device() {
                return NotRegular::CharDevice;
            }
            if t.is_block_device() {
                return NotRegular::BlockDevice;
            }
            if t.is_socket() {
                return NotRegular::Socket;
            }
        }
        NotRegular::Other
    }
}

impl ReadError {
    fn new(path: &Path, kind: ReadErrorKind) -> Self {
        ReadError {
            path: path.to_path_buf(),
            kind,
        }
    }

    /// The file, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why it was not read.
    pub fn kind(&self) -> &ReadErrorKind {
        &self.kind
    }
}

/// Reads the whole file as UTF-8 text, refusing it when it is not a regular file, holds more
/// than `bound` bytes or is not UTF-8.
pub fn read_text(path: &Path, bound: u64) -> Result<String, ReadError> {
    let bytes = read_bytes(path, bound)?;
    String::from_utf8(bytes).map_err(|e| {
        ReadError::new(
            path,
            ReadErrorKind::NotUtf8 {
                offset: e.utf8_error().valid_up_to(),
            },
        )
    })
}

/// Reads the whole file, refusing it when it is not a regular file or holds more than `bound`
/// bytes.
pub fn read_bytes(path: &Path, bound: u64) -> Result<Vec<u8>, ReadError> {
    let io = |e| ReadError::new(path, ReadErrorKind::Io(e));
    let not_regular = |t| ReadError::new(path, ReadErrorKind::NotRegular(NotRegular::of(t)));

    // Checked before opening, so that a device is never opened at all...
    let before = std::fs::metadata(path).map_err(io)?;
    if !before.is_file() {
        return Err(not_regular(before.file_type()));
    }
    let file = open_nonblocking(path).map_err(io)?;
    // ...and again on what was opened, in case the path was replaced in between. The open
    // itself cannot hang on a FIFO: it is non-blocking.
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        return Err(not_regular(opened.file_type()));
    }

    // The metadata's length only sizes the buffer: the bound is enforced on what is read.
    let hint = opened.len().min(bound).saturating_add(1);
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0).min(1 << 20));
    file.take(bound.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > bound {
        return Err(ReadError::new(path, ReadErrorKind::TooLarge { bound }));
    }
    Ok(bytes)
}

fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on reads of a regular file; it only keeps `open` of a FIFO from waiting
        // for a writer.
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

#[cfg(test)]
mod tests;
