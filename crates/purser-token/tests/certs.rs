//! Generated certificates as openssl sees them, and certificate chains in tokens and the JWKS.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

mod common;

use common::{openssl, openssl_text, try_openssl};
use data_encoding::BASE64;
use purser_core::Signer;
use purser_token::{
    generate, jwks_document, load_cert_chain, public_jwk_from_file, public_jwk_from_pem,
    write_generated, Alg, JwsSigner, KeyIdMode, TokenError,
};

#[test]
fn generated_certificates_pass_openssl_for_every_alg() {
    let dir = tempfile::tempdir().unwrap();
    for alg in Alg::ALL {
        let g = generate(alg).unwrap();
        let cert = dir.path().join(format!("{alg}.crt"));
        std::fs::write(&cert, &g.cert_pem).unwrap();
        let cert = cert.to_str().unwrap();

        let text = openssl_text(&["x509", "-noout", "-text", "-in", cert], b"");
        assert!(text.contains("Version: 3 (0x2)"), "{alg}: {text}");
        assert!(
            text.contains("Subject: CN = purser token signer"),
            "{alg}: {text}"
        );
        assert!(
            text.contains("Issuer: CN = purser token signer"),
            "{alg}: {text}"
        );
        assert!(text.contains("CA:FALSE"), "{alg}: {text}");
        assert!(text.contains("Digital Signature"), "{alg}: {text}");

        let out = try_openssl(&["verify", "-CAfile", cert, cert], b"");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(": OK"),
            "{alg}: openssl verify: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The certificate holds the generated key: openssl derives the same public key from both.
        let from_cert = openssl(&["x509", "-noout", "-pubkey", "-in", cert], b"");
        let from_key = openssl(&["pkey", "-pubout"], g.key_pem.as_bytes());
        assert_eq!(from_cert, from_key, "{alg}");

        // Ten years, give or take the day boundaries.
        let end = openssl_text(
            &[
                "x509",
                "-noout",
                "-checkend",
                &(9 * 365 * 86400).to_string(),
                "-in",
                cert,
            ],
            b"",
        );
        assert!(end.contains("will not expire"), "{alg}: {end}");
        let out = try_openssl(
            &[
                "x509",
                "-noout",
                "-checkend",
                &(11 * 365 * 86400).to_string(),
                "-in",
                cert,
            ],
            b"",
        );
        assert!(!out.status.success(), "{alg}: valid past eleven years");
    }
}

#[test]
fn serials_are_random() {
    let serial = |pem: &str| openssl_text(&["x509", "-noout", "-serial"], pem.as_bytes());
    let a = generate(Alg::EdDsa).unwrap();
    let b = generate(Alg::EdDsa).unwrap();
    assert_ne!(serial(&a.cert_pem), serial(&b.cert_pem));
}

#[test]
fn chain_goes_into_header_and_jwk_as_x5c() {
    let g = generate(Alg::Es256).unwrap();
    let signer = JwsSigner::from_pem(&g.key_pem, Some(&g.cert_pem), KeyIdMode::Thumbprint).unwrap();
    let der = load_cert_chain(&g.cert_pem).unwrap();
    let token = signer.sign_payload(b"{}").unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.x5c.unwrap(), vec![BASE64.encode(&der[0])]);
    assert_eq!(signer.verify(&token).unwrap(), b"{}");

    let jwk = signer.public_jwk();
    assert_eq!(jwk["x5c"][0], BASE64.encode(&der[0]));
    assert_eq!(jwk["kid"], g.key_ids.thumbprint);

    // The certificate published on its own gives the same JWK.
    assert_eq!(
        public_jwk_from_pem(&g.cert_pem, KeyIdMode::Thumbprint).unwrap(),
        jwk
    );
}

#[test]
fn a_certificate_of_another_key_is_refused() {
    let a = generate(Alg::Es256).unwrap();
    let b = generate(Alg::Es256).unwrap();
    let err = JwsSigner::from_pem(&a.key_pem, Some(&b.cert_pem), KeyIdMode::Libtrust).unwrap_err();
    assert!(matches!(err, TokenError::KeyCertMismatch), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    let cert = dir.path().join("other.crt");
    std::fs::write(&key, a.key_pem.as_bytes()).unwrap();
    std::fs::write(&cert, &b.cert_pem).unwrap();
    let err = JwsSigner::from_files(&key, Some(&cert), KeyIdMode::Libtrust)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other.crt") && err.contains("does not belong"),
        "{err}"
    );
}

#[test]
fn jwks_lists_active_first_then_rotated_keys_once() {
    let dir = tempfile::tempdir().unwrap();
    let active = write_generated(&dir.path().join("new"), Alg::Es256).unwrap();
    let old = write_generated(&dir.path().join("old"), Alg::EdDsa).unwrap();
    let signer =
        JwsSigner::from_files(&active.key, Some(&active.cert), KeyIdMode::Libtrust).unwrap();
    let extra = vec![
        public_jwk_from_file(&old.cert, KeyIdMode::Libtrust).unwrap(),
        // The active certificate listed again in publish_keys: not duplicated.
        public_jwk_from_file(&active.cert, KeyIdMode::Libtrust).unwrap(),
    ];
    let doc = jwks_document(&signer, &extra);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], active.key_ids.libtrust);
    assert_eq!(keys[1]["kid"], old.key_ids.libtrust);
    assert_eq!(keys[1]["alg"], "EdDSA");

    // Every key of the document is one jsonwebtoken accepts as a JWK set.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(doc.clone()).unwrap();
    assert!(set.find(&active.key_ids.libtrust).is_some());

    let err = public_jwk_from_file(&active.key, KeyIdMode::Libtrust)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("signing.pem") && err.contains("private key"),
        "{err}"
    );
}
