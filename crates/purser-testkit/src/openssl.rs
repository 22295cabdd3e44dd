//! Keys, certificates and key ids made with the openssl command, independently of purser's
//! own code.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use data_encoding::BASE32_NOPAD;

use crate::process::require_on_path;

/// Writes a fresh RSA-2048 key (PKCS#8 PEM) and a self-signed certificate for it.
pub fn openssl_rsa_key_and_cert(key: &Path, cert: &Path) {
    openssl_key_and_cert(key, cert, &["rsa:2048"], "purser e2e");
}

/// Writes a fresh key made by `openssl req -newkey NEWKEY..` (e.g. `["rsa:2048"]`,
/// `["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]`, `["ed25519"]`; PKCS#8 PEM) and a self-signed
/// certificate for it with subject `CN=cn`, valid for two days.
pub fn openssl_key_and_cert(key: &Path, cert: &Path, newkey: &[&str], cn: &str) {
    fs::create_dir_all(key.parent().expect("parent")).expect("mkdir");
    let (key, cert, subject) = (
        key.display().to_string(),
        cert.display().to_string(),
        format!("/CN={cn}"),
    );
    let mut args = vec!["req", "-x509", "-newkey"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-nodes", "-keyout", &key, "-out", &cert, "-subj", &subject, "-days", "2",
    ]);
    openssl_stdout(&args);
}

/// Runs `openssl ARGS` and returns its stdout; panics on failure.
pub fn openssl_stdout(args: &[&str]) -> Vec<u8> {
    let bin = require_on_path("openssl", "openssl");
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The libtrust key id (registry 2.x) of a certificate's or key's public key, computed with
/// openssl: `base32(sha256(DER SubjectPublicKeyInfo)[:30])` in 12 groups of 4 joined by ':'.
/// `is_cert` tells whether `pem` is an X.509 certificate or a private key.
pub fn libtrust_kid_openssl(pem: &Path, is_cert: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let pubkey = dir.path().join("pub.pem");
    let der = dir.path().join("pub.der");
    let p = pem.display().to_string();
    let pubkey_pem = if is_cert {
        openssl_stdout(&["x509", "-in", &p, "-pubkey", "-noout"])
    } else {
        openssl_stdout(&["pkey", "-in", &p, "-pubout"])
    };
    fs::write(&pubkey, pubkey_pem).expect("write pub");
    openssl_stdout(&[
        "pkey",
        "-pubin",
        "-in",
        &pubkey.display().to_string(),
        "-outform",
        "DER",
        "-out",
        &der.display().to_string(),
    ]);
    let digest = openssl_stdout(&["dgst", "-sha256", "-binary", &der.display().to_string()]);
    assert_eq!(digest.len(), 32, "sha256 is 32 bytes");
    let b32 = BASE32_NOPAD.encode(&digest[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join(":")
}
