//! Key files in every PEM shape openssl writes, and the keys purser refuses.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

mod common;

use common::{fixture, openssl_text};
use purser_token::{
    load_signing_key, load_signing_key_file, public_jwk_from_pem, Alg, KeyIdMode, KeyIds,
    TokenError,
};

fn ids(pem: &str) -> KeyIds {
    KeyIds::of_signing_key(&load_signing_key(pem).unwrap())
}

#[test]
fn pkcs1_and_sec1_load_as_the_same_keys_as_pkcs8() {
    for (name, first_line, alg) in [
        ("rsa2048.pem", "-----BEGIN RSA PRIVATE KEY-----", Alg::Rs256),
        ("p256.pem", "-----BEGIN EC PRIVATE KEY-----", Alg::Es256),
        ("p384.pem", "-----BEGIN EC PRIVATE KEY-----", Alg::Es384),
    ] {
        let pkcs8 = fixture(name);
        let traditional = openssl_text(&["pkey", "-traditional"], pkcs8.as_bytes());
        assert!(traditional.starts_with(first_line), "{traditional:.40}");
        let key = load_signing_key(&traditional).unwrap();
        assert_eq!(key.alg(), alg);
        assert_eq!(KeyIds::of_signing_key(&key), ids(&pkcs8), "{name}");
    }
    let ed = load_signing_key(&fixture("ed25519.pem")).unwrap();
    assert_eq!(ed.alg(), Alg::EdDsa);
}

#[test]
fn ec_parameters_block_before_the_key_is_skipped() {
    // What `openssl ecparam -genkey` writes: EC PARAMETERS, then EC PRIVATE KEY.
    let pem = openssl_text(&["ecparam", "-name", "secp384r1", "-genkey"], b"");
    assert!(pem.starts_with("-----BEGIN EC PARAMETERS-----"));
    assert_eq!(load_signing_key(&pem).unwrap().alg(), Alg::Es384);
}

fn refused(pem: &str) -> TokenError {
    load_signing_key(pem).expect_err("key should be refused")
}

fn says_what_is_supported(err: &TokenError) {
    let msg = err.to_string();
    assert!(
        msg.contains(
            "supported: RSA (RS256), EC P-256 (ES256), EC P-384 (ES384) and Ed25519 (EdDSA)"
        ),
        "{msg}"
    );
}

#[test]
fn unsupported_keys_name_what_is_supported() {
    let p521_pkcs8 = openssl_text(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
        ],
        b"",
    );
    let err = refused(&p521_pkcs8);
    assert!(err.to_string().contains("P-521"), "{err}");
    says_what_is_supported(&err);

    let p521_sec1 = openssl_text(&["pkey", "-traditional"], p521_pkcs8.as_bytes());
    assert!(p521_sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let err = refused(&p521_sec1);
    assert!(err.to_string().contains("P-521"), "{err}");
    says_what_is_supported(&err);

    let k256 = openssl_text(&["ecparam", "-name", "secp256k1", "-genkey", "-noout"], b"");
    let err = refused(&k256);
    assert!(err.to_string().contains("secp256k1"), "{err}");

    let ed448 = openssl_text(&["genpkey", "-algorithm", "ED448"], b"");
    let err = refused(&ed448);
    assert!(err.to_string().contains("Ed448"), "{err}");
    says_what_is_supported(&err);

    let dsa_params = openssl_text(
        &[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DSA",
            "-pkeyopt",
            "dsa_paramgen_bits:1024",
        ],
        b"",
    );
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("dsa.params");
    std::fs::write(&params, dsa_params).unwrap();
    let dsa = openssl_text(&["genpkey", "-paramfile", params.to_str().unwrap()], b"");
    let err = refused(&dsa);
    assert!(err.to_string().contains("DSA"), "{err}");
    says_what_is_supported(&err);
    let dsa_traditional = openssl_text(&["pkey", "-traditional"], dsa.as_bytes());
    let err = refused(&dsa_traditional);
    assert!(err.to_string().contains("DSA"), "{err}");

    let rsa1024 = openssl_text(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ],
        b"",
    );
    let err = refused(&rsa1024);
    assert!(err.to_string().contains("1024 bits"), "{err}");
}

#[test]
fn encrypted_keys_are_refused_with_the_fix() {
    let pkcs8 = fixture("p256.pem");
    let enc8 = openssl_text(
        &["pkey", "-aes256", "-passout", "pass:secret"],
        pkcs8.as_bytes(),
    );
    assert!(enc8.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let err = refused(&enc8);
    assert!(matches!(err, TokenError::EncryptedKey), "{err}");
    assert!(err.to_string().contains("openssl pkey"), "{err}");

    let enc_trad = openssl_text(
        &["pkey", "-traditional", "-aes256", "-passout", "pass:secret"],
        fixture("rsa2048.pem").as_bytes(),
    );
    assert!(
        enc_trad.contains("Proc-Type: 4,ENCRYPTED"),
        "{enc_trad:.100}"
    );
    assert!(matches!(refused(&enc_trad), TokenError::EncryptedKey));
}

#[test]
fn errors_name_the_file_and_carry_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.pem");
    let pem = fixture("p256.pem");
    // Corrupt the key inside valid base64: the parse fails inside the DER.
    let broken = pem.replacen(
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH",
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEI",
        1,
    );
    std::fs::write(&path, &broken).unwrap();
    let err = load_signing_key_file(&path).unwrap_err().to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "error echoes key material: {err}");
    }
    let missing = dir.path().join("nope.pem");
    let err = load_signing_key_file(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.pem"), "{err}");
}

/// Key files go through the shared bounded reader: over the bound, or not a regular file, they
/// are refused with the file named, without reading them whole.
#[test]
fn oversized_and_non_regular_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pem");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(purser_token::MAX_PEM_FILE_BYTES + 1)
        .unwrap();
    let err = load_signing_key_file(&big).unwrap_err();
    assert!(matches!(err, TokenError::Read(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the file is larger than {} bytes",
            big.display(),
            purser_token::MAX_PEM_FILE_BYTES
        )
    );
    let err = load_signing_key_file(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file (a directory)"), "{err}");
}

#[test]
fn publish_keys_entries_must_be_public() {
    let err = public_jwk_from_pem(&fixture("p256.pem"), KeyIdMode::Libtrust).unwrap_err();
    assert!(matches!(err, TokenError::PrivateKeyNotAllowed(_)), "{err}");
    let rsa_pub_pkcs1 = openssl_text(
        &["pkey", "-pubout", "-traditional"],
        fixture("rsa2048.pem").as_bytes(),
    );
    let rsa_pub_pkcs1 = if rsa_pub_pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        rsa_pub_pkcs1
    } else {
        openssl_text(
            &["rsa", "-RSAPublicKey_out"],
            fixture("rsa2048.pem").as_bytes(),
        )
    };
    assert!(rsa_pub_pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    let jwk = public_jwk_from_pem(&rsa_pub_pkcs1, KeyIdMode::Libtrust).unwrap();
    assert_eq!(jwk["kid"], ids(&fixture("rsa2048.pem")).libtrust);
    let err = public_jwk_from_pem(
        "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
        KeyIdMode::Libtrust,
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"FOO\""), "{err}");
}
