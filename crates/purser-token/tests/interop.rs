//! Tokens checked by an independent JWT implementation (jsonwebtoken), both ways.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

mod common;

use std::sync::OnceLock;

use common::{fixture, openssl_text};
use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use purser_core::{Access, Claims, Signer, VerifyError};
use purser_token::{generate, new_jti, Alg, JwsSigner, KeyIdMode};

fn claims() -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Claims {
        iss: "purser".into(),
        sub: "zoë".into(),
        aud: "registry.local".into(),
        exp: now + 300,
        nbf: now,
        iat: now,
        jti: new_jti(),
        access: vec![Access {
            rtype: "repository".into(),
            name: "localhost:5000/team/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }],
    }
}

fn jwt_alg(alg: Alg) -> Algorithm {
    match alg {
        Alg::Rs256 => Algorithm::RS256,
        Alg::Es256 => Algorithm::ES256,
        Alg::Es384 => Algorithm::ES384,
        Alg::EdDsa => Algorithm::EdDSA,
    }
}

fn validation(alg: Alg) -> Validation {
    let mut v = Validation::new(jwt_alg(alg));
    v.set_audience(&["registry.local"]);
    v.set_issuer(&["purser"]);
    v
}

/// The decoding key from openssl's PEM of the public key: nothing of purser's in it.
fn decoding_key_from_openssl(alg: Alg, private_pem: &str) -> DecodingKey {
    let pubpem = openssl_text(&["pkey", "-pubout"], private_pem.as_bytes());
    match alg {
        Alg::Rs256 => DecodingKey::from_rsa_pem(pubpem.as_bytes()),
        Alg::Es256 | Alg::Es384 => DecodingKey::from_ec_pem(pubpem.as_bytes()),
        Alg::EdDsa => DecodingKey::from_ed_pem(pubpem.as_bytes()),
    }
    .unwrap()
}

/// Another key of the algorithm, made once per test binary (RSA key generation is slow).
fn other_key(alg: Alg) -> &'static str {
    static KEYS: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
    let i = Alg::ALL.iter().position(|a| *a == alg).unwrap();
    KEYS[i].get_or_init(|| generate(alg).unwrap().key_pem.to_string())
}

fn check_with_jsonwebtoken(alg: Alg, key_pem: &str, cert_pem: Option<&str>, mode: KeyIdMode) {
    let signer = JwsSigner::from_pem(key_pem, cert_pem, mode).unwrap();
    assert_eq!(signer.alg(), alg.as_str());
    let c = claims();
    let token = signer.sign(&c).unwrap();

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jwt_alg(alg));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some(signer.key_id()));
    match cert_pem {
        Some(_) => {
            let x5c = header.x5c.expect("x5c header");
            assert_eq!(x5c.len(), signer.chain().len());
        }
        None => assert!(header.x5c.is_none()),
    }

    // With the public key as openssl writes it.
    let data = jsonwebtoken::decode::<Claims>(
        &token,
        &decoding_key_from_openssl(alg, key_pem),
        &validation(alg),
    )
    .unwrap_or_else(|e| panic!("{alg}: jsonwebtoken refused the token: {e}"));
    assert_eq!(data.claims, c, "{alg}: claims round-trip");

    // With the JWK purser publishes.
    let jwk: Jwk = serde_json::from_value(signer.public_jwk()).unwrap();
    let data = jsonwebtoken::decode::<Claims>(
        &token,
        &DecodingKey::from_jwk(&jwk).unwrap(),
        &validation(alg),
    )
    .unwrap_or_else(|e| panic!("{alg}: refused with the published JWK: {e}"));
    assert_eq!(data.claims, c);

    // A token from another key of the same algorithm does not verify with this one.
    let other_token = JwsSigner::from_pem(other_key(alg), None, mode)
        .unwrap()
        .sign(&c)
        .unwrap();
    assert!(jsonwebtoken::decode::<Claims>(
        &other_token,
        &decoding_key_from_openssl(alg, key_pem),
        &validation(alg)
    )
    .is_err());
    assert!(signer.verify(&other_token).is_err());
}

#[test]
fn tokens_from_vector_keys_verify_with_jsonwebtoken() {
    for (name, alg) in [
        ("rsa2048.pem", Alg::Rs256),
        ("p256.pem", Alg::Es256),
        ("p256-x-leading-zero.pem", Alg::Es256),
        ("p256-y-leading-zero.pem", Alg::Es256),
        ("p384.pem", Alg::Es384),
        ("ed25519.pem", Alg::EdDsa),
    ] {
        for mode in [KeyIdMode::Libtrust, KeyIdMode::Thumbprint] {
            check_with_jsonwebtoken(alg, &fixture(name), None, mode);
        }
    }
}

#[test]
fn tokens_with_x5c_verify_with_jsonwebtoken() {
    for alg in Alg::ALL {
        let g = generate(alg).unwrap();
        check_with_jsonwebtoken(alg, &g.key_pem, Some(&g.cert_pem), KeyIdMode::Libtrust);
    }
}

#[test]
fn our_verify_accepts_tokens_made_by_jsonwebtoken_with_our_key() {
    for (name, alg) in [
        ("rsa2048.pem", Alg::Rs256),
        ("p256.pem", Alg::Es256),
        ("p384.pem", Alg::Es384),
        ("ed25519.pem", Alg::EdDsa),
    ] {
        let pem = fixture(name);
        let signer = JwsSigner::from_pem(&pem, None, KeyIdMode::Libtrust).unwrap();
        let key = match alg {
            Alg::Rs256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Alg::Es256 | Alg::Es384 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Alg::EdDsa => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut header = Header::new(jwt_alg(alg));
        header.kid = Some(signer.key_id().to_string());
        let c = claims();
        let token = jsonwebtoken::encode(&header, &c, &key).unwrap();
        let payload = signer
            .verify(&token)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        let back: Claims = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back, c);

        // The same key under HS256 (the classic confusion attack) is refused.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(signer.verify(&hs), Err(VerifyError::WrongKey));
    }
}
