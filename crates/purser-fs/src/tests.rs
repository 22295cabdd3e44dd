use super::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn reads_up_to_the_bound_and_refuses_one_byte_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "policy.yaml", b"rules: []\n");
    assert_eq!(read_text(&path, 10).unwrap(), "rules: []\n");
    let err = read_text(&path, 9).unwrap_err();
    assert!(
        matches!(err.kind(), ReadErrorKind::TooLarge { bound: 9 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("{}: the file is larger than 9 bytes", path.display())
    );
    assert_eq!(err.path(), path);
}

#[test]
fn empty_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty", b"");
    assert_eq!(read_text(&path, 0).unwrap(), "");
}

#[test]
fn invalid_utf8_names_the_file_and_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "users", b"alice:x\n\xff");
    let err = read_text(&path, 100).unwrap_err();
    assert!(
        matches!(err.kind(), ReadErrorKind::NotUtf8 { offset: 8 }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(read_bytes(&path, 100).unwrap(), b"alice:x\n\xff");
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope");
    let err = read_text(&path, 100).unwrap_err();
    assert!(matches!(err.kind(), ReadErrorKind::Io(_)), "{err}");
    assert!(
        err.to_string().contains("nope: cannot read the file"),
        "{err}"
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_text(dir.path(), 100).unwrap_err();
    assert!(
        matches!(err.kind(), ReadErrorKind::NotRegular(NotRegular::Directory)),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn a_device_is_refused_without_reading_it() {
    // /dev/zero never ends; the bound would stop it, but it must not even be opened.
    let err = read_bytes(Path::new("/dev/zero"), 1 << 30).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ReadErrorKind::NotRegular(NotRegular::CharDevice)
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "/dev/zero: not a regular file (a character device); give the path of a regular file"
    );
}

/// Reading a FIFO waits for a writer forever: the reader must answer at once. The read runs on
/// a thread so that a regression fails the test instead of hanging it.
#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("users.htpasswd");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(read_text(&path, 100).map_err(|e| e.to_string()));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the reader answers without a writer on the FIFO");
    assert_eq!(
        got.unwrap_err(),
        format!(
            "{}: not a regular file (a FIFO); give the path of a regular file",
            fifo.display()
        )
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_to_a_regular_file_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = write(dir.path(), "real", b"x");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(read_text(&link, 1).unwrap(), "x");
}

/// The bound holds on what is read, not on what the metadata says: /proc files report a length
/// of 0 and still have content.
#[cfg(target_os = "linux")]
#[test]
fn the_bound_does_not_trust_the_metadata() {
    let path = Path::new("/proc/self/status");
    assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
    let text = read_text(path, 1 << 20).unwrap();
    assert!(text.contains("Name:"), "{text}");
    let err = read_text(path, 16).unwrap_err();
    assert!(
        matches!(err.kind(), ReadErrorKind::TooLarge { bound: 16 }),
        "{err}"
    );
}
