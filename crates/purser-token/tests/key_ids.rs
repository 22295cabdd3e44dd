//! Key ids against vectors computed by an independent implementation, and against openssl.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

mod common;

use common::{fixture, openssl};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use purser_core::Signer;
use purser_token::{
    distribution_thumbprint, libtrust_key_id, load_signing_key, public_jwk_from_pem,
    rfc7638_thumbprint, Alg, JwsSigner, KeyIdMode, KeyIds,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Vector {
    key: String,
    libtrust: String,
    rfc7638: String,
    distribution: String,
}

fn vectors() -> Vec<Vector> {
    let v: Value = serde_json::from_str(&fixture("vectors.json")).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| Vector {
            key: e["key"].as_str().unwrap().to_string(),
            libtrust: e["libtrust_kid"].as_str().unwrap().to_string(),
            rfc7638: e["rfc7638_thumbprint"].as_str().unwrap().to_string(),
            distribution: e["distribution_v3_thumbprint"]
                .as_str()
                .unwrap()
                .to_string(),
        })
        .collect()
}

#[test]
fn every_vector_key_has_all_three_ids() {
    let all = vectors();
    assert_eq!(all.len(), 6);
    let mut differing = 0;
    for v in &all {
        let key = load_signing_key(&fixture(&v.key)).unwrap();
        let public = key.public_key();
        assert_eq!(libtrust_key_id(&public), v.libtrust, "{} libtrust", v.key);
        assert_eq!(rfc7638_thumbprint(&public), v.rfc7638, "{} rfc7638", v.key);
        assert_eq!(
            distribution_thumbprint(&public),
            v.distribution,
            "{} distribution",
            v.key
        );
        assert_eq!(
            KeyIds::of_signing_key(&key),
            KeyIds {
                libtrust: v.libtrust.clone(),
                thumbprint: v.distribution.clone()
            }
        );
        if v.rfc7638 != v.distribution {
            differing += 1;
        }
    }
    // The two leading-zero P-256 keys are the ones where the variants differ.
    assert_eq!(differing, 2);
}

#[test]
fn signer_kid_and_jwk_follow_the_mode() {
    for v in vectors() {
        let pem = fixture(&v.key);
        for (mode, want) in [
            (KeyIdMode::Libtrust, &v.libtrust),
            (KeyIdMode::Thumbprint, &v.distribution),
        ] {
            let s = JwsSigner::from_pem(&pem, None, mode).unwrap();
            assert_eq!(s.key_id(), want.as_str(), "{} {mode:?}", v.key);
            let jwk = s.public_jwk();
            assert_eq!(jwk["kid"], want.as_str());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["alg"], s.alg());
            assert!(jwk.get("x5c").is_none());
        }
    }
}

#[test]
fn jwk_ec_coordinates_are_full_length_even_with_leading_zeros() {
    for (name, crv, len) in [
        ("p256-x-leading-zero.pem", "P-256", 32),
        ("p256-y-leading-zero.pem", "P-256", 32),
        ("p256.pem", "P-256", 32),
        ("p384.pem", "P-384", 48),
    ] {
        let s = JwsSigner::from_pem(&fixture(name), None, KeyIdMode::Thumbprint).unwrap();
        let jwk = s.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], crv);
        let x = BASE64URL_NOPAD
            .decode(jwk["x"].as_str().unwrap().as_bytes())
            .unwrap();
        let y = BASE64URL_NOPAD
            .decode(jwk["y"].as_str().unwrap().as_bytes())
            .unwrap();
        assert_eq!((x.len(), y.len()), (len, len), "{name}");
        if name.starts_with("p256-x") {
            assert_eq!(x[0], 0);
        }
        if name.starts_with("p256-y") {
            assert_eq!(y[0], 0);
        }
    }
    let ed = JwsSigner::from_pem(&fixture("ed25519.pem"), None, KeyIdMode::Libtrust).unwrap();
    let jwk = ed.public_jwk();
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let rsa = JwsSigner::from_pem(&fixture("rsa2048.pem"), None, KeyIdMode::Libtrust).unwrap();
    let jwk = rsa.public_jwk();
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["e"], "AQAB");
}

/// The libtrust id computed from openssl's DER public key, with nothing of purser's but the
/// formula: base32(sha256(DER SPKI)[..30]) in groups of 4.
fn libtrust_by_openssl(private_pem: &str) -> String {
    let der = openssl(
        &["pkey", "-pubout", "-outform", "DER"],
        private_pem.as_bytes(),
    );
    let digest = Sha256::digest(&der);
    let b32 = BASE32_NOPAD.encode(&digest[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn libtrust_id_matches_openssl_for_rsa_and_ec() {
    for name in [
        "rsa2048.pem",
        "p256.pem",
        "p256-x-leading-zero.pem",
        "p384.pem",
        "ed25519.pem",
    ] {
        let pem = fixture(name);
        let ours = KeyIds::of_signing_key(&load_signing_key(&pem).unwrap()).libtrust;
        assert_eq!(ours, libtrust_by_openssl(&pem), "{name}");
    }
    // And for keys that were never in the vectors: freshly generated ones.
    for alg in [Alg::Rs256, Alg::Es256] {
        let g = purser_token::generate(alg).unwrap();
        assert_eq!(g.key_ids.libtrust, libtrust_by_openssl(&g.key_pem), "{alg}");
    }
}

#[test]
fn published_public_key_pem_gets_the_same_ids() {
    for v in vectors() {
        let pubpem =
            String::from_utf8(openssl(&["pkey", "-pubout"], fixture(&v.key).as_bytes())).unwrap();
        let lt = public_jwk_from_pem(&pubpem, KeyIdMode::Libtrust).unwrap();
        assert_eq!(lt["kid"], v.libtrust.as_str(), "{}", v.key);
        let tp = public_jwk_from_pem(&pubpem, KeyIdMode::Thumbprint).unwrap();
        assert_eq!(tp["kid"], v.distribution.as_str(), "{}", v.key);
        // The published JWK is the signer's own, member for member.
        let s = JwsSigner::from_pem(&fixture(&v.key), None, KeyIdMode::Thumbprint).unwrap();
        assert_eq!(tp, s.public_jwk());
    }
}
