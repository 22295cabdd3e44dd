//! The signing libraries side by side: the same messages signed with aws-lc (what purser signs
//! with), ring and ed25519-dalek, on keys made here, in rounds that alternate between them so a
//! machine whose speed drifts treats each alike. `purser-bench libraries` prints the table behind
//! the choice of signer in docs/architecture.md.

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::rates::Rate;

type Op = Box<dyn FnMut()>;

/// A signing-input-sized message (header and claims of a one-scope token, base64url).
const MESSAGE_LEN: usize = 420;

fn candidates() -> anyhow::Result<Vec<(String, Op)>> {
    use aws_lc_rs::encoding::AsDer;
    let msg = vec![b'e'; MESSAGE_LEN];
    let mut out: Vec<(String, Op)> = Vec::new();

    // RS256: one RSA-2048 key, PKCS#8, loaded by both libraries.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow!("aws-lc: RSA key generation"))?;
    let rsa_pkcs8: aws_lc_rs::encoding::Pkcs8V1Der = rsa
        .as_der()
        .map_err(|_| anyhow!("aws-lc: RSA key encoding"))?;
    let ring_rsa = ring::signature::RsaKeyPair::from_pkcs8(rsa_pkcs8.as_ref())
        .map_err(|e| anyhow!("ring: RSA key: {e}"))?;
    {
        let (m, rng) = (msg.clone(), aws_lc_rs::rand::SystemRandom::new());
        let mut sig = vec![0u8; rsa.public_modulus_len()];
        out.push((
            "RS256 aws-lc".into(),
            Box::new(move || {
                rsa.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, &m, &mut sig)
                    .expect("aws-lc signs");
            }),
        ));
    }
    {
        let (m, rng) = (msg.clone(), ring::rand::SystemRandom::new());
        let mut sig = vec![0u8; ring_rsa.public().modulus_len()];
        out.push((
            "RS256 ring".into(),
            Box::new(move || {
                ring_rsa
                    .sign(&ring::signature::RSA_PKCS1_SHA256, &rng, &m, &mut sig)
                    .expect("ring signs");
            }),
        ));
    }

    // ES256: one P-256 key.
    let ring_rng = ring::rand::SystemRandom::new();
    let p256 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring_rng,
    )
    .map_err(|_| anyhow!("ring: P-256 key generation"))?;
    {
        let k = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            p256.as_ref(),
        )
        .map_err(|e| anyhow!("aws-lc: P-256 key: {e}"))?;
        let (m, rng) = (msg.clone(), aws_lc_rs::rand::SystemRandom::new());
        out.push((
            "ES256 aws-lc".into(),
            Box::new(move || {
                std::hint::black_box(k.sign(&rng, &m).expect("aws-lc signs"));
            }),
        ));
    }
    {
        let k = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            p256.as_ref(),
            &ring_rng,
        )
        .map_err(|e| anyhow!("ring: P-256 key: {e}"))?;
        let (m, rng) = (msg.clone(), ring::rand::SystemRandom::new());
        out.push((
            "ES256 ring".into(),
            Box::new(move || {
                std::hint::black_box(k.sign(&rng, &m).expect("ring signs"));
            }),
        ));
    }

    // EdDSA: one Ed25519 seed.
    let seed: [u8; 32] = rand::random();
    {
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = dalek.verifying_key().to_bytes();
        let k = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(&seed, &public)
            .map_err(|e| anyhow!("aws-lc: Ed25519 key: {e}"))?;
        let m = msg.clone();
        out.push((
            "EdDSA aws-lc".into(),
            Box::new(move || {
                std::hint::black_box(k.sign(&m));
            }),
        ));
        let k = ring::signature::Ed25519KeyPair::from_seed_and_public_key(&seed, &public)
            .map_err(|e| anyhow!("ring: Ed25519 key: {e}"))?;
        let m = msg.clone();
        out.push((
            "EdDSA ring".into(),
            Box::new(move || {
                std::hint::black_box(k.sign(&m));
            }),
        ));
        let m = msg;
        out.push((
            "EdDSA ed25519-dalek".into(),
            Box::new(move || {
                use ed25519_dalek::Signer as _;
                std::hint::black_box(dalek.sign(&m));
            }),
        ));
    }
    Ok(out)
}

/// Every candidate, `rounds` times in turn, `secs` each time; one rate per candidate over all
/// its rounds.
pub fn compare(rounds: usize, secs: Duration) -> anyhow::Result<Vec<Rate>> {
    let mut ops = candidates().context("preparing the keys")?;
    let mut totals: Vec<(u64, f64)> = vec![(0, 0.0); ops.len()];
    for _ in 0..rounds.max(1) {
        for ((name, op), total) in ops.iter_mut().zip(totals.iter_mut()) {
            let r = crate::rates::rate(name.clone(), secs, op);
            total.0 += r.count;
            total.1 += r.secs;
        }
    }
    Ok(ops
        .iter()
        .zip(totals)
        .map(|((name, _), (count, secs))| Rate {
            what: name.clone(),
            count,
            secs,
            per_second: count as f64 / secs,
            per_cpu_second: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_signs_every_algorithm() {
        let rates = compare(1, Duration::ZERO).unwrap();
        let names: Vec<&str> = rates.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            names,
            [
                "RS256 aws-lc",
                "RS256 ring",
                "ES256 aws-lc",
                "ES256 ring",
                "EdDSA aws-lc",
                "EdDSA ring",
                "EdDSA ed25519-dalek"
            ]
        );
        assert!(rates.iter().all(|r| r.count == 1 && r.per_second > 0.0));
    }
}
