//! Several keys behind one [`Signer`]: the active key signs, every published key (the next one
//! and those retiring) still verifies what it signed, so a refresh token outlives a rotation.

use std::sync::Arc;

use purser_core::{SignError, Signer, VerifyError};
use serde_json::Value;

use crate::jws::JwsSigner;

/// The active signer and the other published keys, verify-only.
#[derive(Clone, Debug)]
pub struct KeyRing {
    active: Arc<JwsSigner>,
    others: Vec<Arc<JwsSigner>>,
}

impl KeyRing {
    /// One key: the active one.
    pub fn single(active: Arc<JwsSigner>) -> Self {
        KeyRing {
            active,
            others: Vec::new(),
        }
    }

    /// The active key and the others (next, retiring), which only verify.
    pub fn new(active: Arc<JwsSigner>, others: Vec<Arc<JwsSigner>>) -> Self {
        KeyRing { active, others }
    }

    pub fn active(&self) -> &Arc<JwsSigner> {
        &self.active
    }

    /// Every key, the active one first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<JwsSigner>> {
        std::iter::once(&self.active).chain(self.others.iter())
    }
}

impl Signer for KeyRing {
    fn alg(&self) -> &'static str {
        self.active.alg()
    }
    fn key_id(&self) -> &str {
        self.active.key_id()
    }
    fn sign_payload(&self, payload_json: &[u8]) -> Result<String, SignError> {
        self.active.sign_payload(payload_json)
    }
    /// The key the token names (by `kid` and `alg`) verifies it; a token no published key
    /// claims is [`VerifyError::WrongKey`].
    fn verify(&self, token: &str) -> Result<Vec<u8>, VerifyError> {
        let mut last = VerifyError::WrongKey;
        for key in self.all() {
            match key.verify(token) {
                Err(VerifyError::WrongKey) => continue,
                Err(e @ VerifyError::Malformed) => return Err(e),
                Err(e) => last = e,
                Ok(payload) => return Ok(payload),
            }
        }
        Err(last)
    }
    fn public_jwk(&self) -> Value {
        self.active.public_jwk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate_key, Alg, KeyIdMode};

    fn signer(alg: Alg) -> Arc<JwsSigner> {
        Arc::new(JwsSigner::new(generate_key(alg).unwrap(), KeyIdMode::Libtrust, vec![]).unwrap())
    }

    #[test]
    fn the_active_key_signs_and_every_published_key_verifies() {
        let (old, new) = (signer(Alg::Es256), signer(Alg::Es256));
        let by_old = old.sign_payload(b"{}").unwrap();
        let ring = KeyRing::new(new.clone(), vec![old.clone()]);
        assert_eq!(ring.key_id(), new.key_id());
        let by_ring = ring.sign_payload(b"{}").unwrap();
        assert!(new.verify(&by_ring).is_ok());
        assert_eq!(ring.verify(&by_old).unwrap(), b"{}");
        // Once the old key is gone, its tokens are another key's.
        let without = KeyRing::single(new);
        assert_eq!(without.verify(&by_old), Err(VerifyError::WrongKey));
        // A tampered token of a published key stays a bad signature.
        let mut forged = by_old.clone();
        forged.pop();
        forged.push(if by_old.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            ring.verify(&forged),
            Err(VerifyError::BadSignature | VerifyError::Malformed)
        ));
    }
}
