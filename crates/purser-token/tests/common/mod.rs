//! Helpers shared by the integration tests: fixtures and the `openssl` command line.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/key-id-vectors")
}

pub(crate) fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name)).unwrap()
}

/// Runs `openssl ARGS` with `stdin`, returns stdout. Panics (the test fails) when openssl is
/// missing or the command fails: these tests check purser against an independent implementation.
pub(crate) fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = try_openssl(args, stdin);
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Like [`openssl`] but returns the whole output, success or not.
pub(crate) fn try_openssl(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` ({e}): install it (Debian: apt-get install openssl)")
        });
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub(crate) fn openssl_text(args: &[&str], stdin: &[u8]) -> String {
    String::from_utf8(openssl(args, stdin)).unwrap()
}
