//! The limits of one core: how many tokens the signer makes per second, and how many bcrypt
//! hashes it verifies, with nothing else around them. Run pinned to the server's core.

use std::path::Path;
use std::time::{Duration, Instant};

use purser_core::{Access, Claims, Signer};
use purser_token::{JwsSigner, KeyIdMode};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rate {
    pub what: String,
    pub count: u64,
    pub secs: f64,
    pub per_second: f64,
    /// Per second of CPU the loop actually got (differs from `per_second` when the core is
    /// shared with other work).
    #[serde(default)]
    pub per_cpu_second: Option<f64>,
}

/// Claims the size of a one-scope access token.
pub fn sample_claims() -> Claims {
    Claims {
        iss: "purser-bench".into(),
        sub: "u017".into(),
        aud: "registry.local".into(),
        exp: 1_700_000_300,
        nbf: 1_700_000_000,
        iat: 1_700_000_000,
        jti: purser_token::new_jti(),
        access: vec![Access {
            rtype: "repository".into(),
            name: "team17/app3".into(),
            actions: vec!["pull".into(), "push".into()],
        }],
    }
}

/// Runs `op` for about `secs`, at least once.
pub(crate) fn rate(what: String, secs: Duration, mut op: impl FnMut()) -> Rate {
    let start = Instant::now();
    let cpu_before = crate::procstat::cpu_seconds(std::process::id()).ok();
    let mut count = 0u64;
    loop {
        op();
        count += 1;
        if start.elapsed() >= secs {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(crate::procstat::cpu_seconds(std::process::id()).ok())
        .map(|(b, a)| a - b)
        // Clock ticks are 10 ms: too coarse for very short loops.
        .filter(|c| *c >= 0.5);
    Rate {
        what,
        count,
        secs: elapsed,
        per_second: count as f64 / elapsed,
        per_cpu_second: cpu.map(|c| count as f64 / c),
    }
}

/// `JwsSigner::sign` in a loop with the key file the server uses (claims serialised each time,
/// as the server does).
pub fn sign_rate(key_file: &Path, secs: Duration) -> anyhow::Result<Rate> {
    let signer = JwsSigner::from_files(key_file, None, KeyIdMode::Libtrust)?;
    let claims = sample_claims();
    let alg = signer.alg();
    // Fail before measuring rather than measure a failing path.
    signer.sign(&claims)?;
    Ok(rate(format!("sign {alg}"), secs, || {
        let t = signer.sign(&claims).expect("signing works");
        std::hint::black_box(t);
    }))
}

/// bcrypt verifications of a correct password at `cost`.
pub fn bcrypt_rate(cost: u32, secs: Duration) -> anyhow::Result<Rate> {
    let hash = bcrypt::hash("pw-benchmark", cost)?;
    anyhow::ensure!(
        bcrypt::verify("pw-benchmark", &hash)?,
        "bcrypt round trip failed"
    );
    Ok(rate(format!("bcrypt verify cost {cost}"), secs, || {
        let ok = bcrypt::verify("pw-benchmark", &hash).expect("a valid hash");
        std::hint::black_box(ok);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_rate_counts_real_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let files = purser_token::write_generated(dir.path(), purser_token::Alg::EdDsa).unwrap();
        let r = sign_rate(&files.key, Duration::from_millis(20)).unwrap();
        assert_eq!(r.what, "sign EdDSA");
        assert!(r.count >= 1);
        assert!(r.per_second > 0.0);
    }

    #[test]
    fn bcrypt_rate_runs_at_least_once() {
        let r = bcrypt_rate(4, Duration::ZERO).unwrap();
        assert_eq!(r.count, 1);
    }
}
