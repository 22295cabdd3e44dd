//! Certificate chains for the signing key (the `x5c` header and JWK member).

use std::path::Path;
use std::time::SystemTime;

use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use crate::error::TokenError;
use crate::key::{pem_blocks, PublicKey};

/// Parses every `CERTIFICATE` block of a PEM chain (leaf first) and returns their DER.
/// Other blocks are ignored; a chain without certificates is an error.
pub fn load_cert_chain(pem_text: &str) -> Result<Vec<Vec<u8>>, TokenError> {
    let blocks = pem_blocks(pem_text)?;
    let chain: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if chain.is_empty() {
        return Err(TokenError::NoCertificate);
    }
    for (i, der) in chain.iter().enumerate() {
        parse_certificate(der, i)?;
    }
    Ok(chain)
}

/// Reads a certificate chain file; errors name the file.
pub fn load_cert_chain_file(path: &Path) -> Result<Vec<Vec<u8>>, TokenError> {
    let text = purser_fs::read_text(path, crate::MAX_PEM_FILE_BYTES)?;
    load_cert_chain(&text).map_err(|e| e.in_file(path))
}

pub(crate) fn parse_certificate(der: &[u8], index: usize) -> Result<Certificate, TokenError> {
    Certificate::from_der(der).map_err(|e| TokenError::InvalidCertificate {
        index,
        reason: e.to_string(),
    })
}

pub(crate) fn public_key_of_cert(cert: &Certificate) -> Result<PublicKey, TokenError> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| TokenError::InvalidCertificate {
            index: 0,
            reason: e.to_string(),
        })?;
    PublicKey::from_spki_der(&spki)
}

/// The public key in a DER certificate.
pub fn cert_public_key(der: &[u8]) -> Result<PublicKey, TokenError> {
    public_key_of_cert(&parse_certificate(der, 0)?)
}

/// Checks that a DER certificate holds the given public key.
pub fn check_cert_matches_key(leaf_der: &[u8], key: &PublicKey) -> Result<(), TokenError> {
    if cert_public_key(leaf_der)? == *key {
        Ok(())
    } else {
        Err(TokenError::KeyCertMismatch)
    }
}

/// When a DER certificate stops being valid (for expiry checks).
pub fn cert_not_after(der: &[u8]) -> Result<SystemTime, TokenError> {
    let cert = parse_certificate(der, 0)?;
    Ok(cert.tbs_certificate.validity.not_after.to_system_time())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate;
    use crate::key::{load_signing_key, Alg};

    #[test]
    fn chain_loads_and_matches_its_key_only() {
        let a = generate(Alg::Es256).unwrap();
        let b = generate(Alg::Es256).unwrap();
        let chain = load_cert_chain(&a.cert_pem).unwrap();
        assert_eq!(chain.len(), 1);
        let key_a = load_signing_key(&a.key_pem).unwrap().public_key();
        let key_b = load_signing_key(&b.key_pem).unwrap().public_key();
        check_cert_matches_key(&chain[0], &key_a).unwrap();
        let err = check_cert_matches_key(&chain[0], &key_b).unwrap_err();
        assert!(matches!(err, TokenError::KeyCertMismatch));
        assert!(err
            .to_string()
            .contains("does not belong to the signing key"));

        let two = format!("{}{}", a.cert_pem, b.cert_pem);
        assert_eq!(load_cert_chain(&two).unwrap().len(), 2);

        let ten_years = std::time::Duration::from_secs(10 * 365 * 86400);
        let not_after = cert_not_after(&chain[0]).unwrap();
        assert!(
            not_after
                > purser_core::Clock::wall(&purser_core::SystemClock) + ten_years
                    - std::time::Duration::from_secs(86400)
        );
    }

    #[test]
    fn a_key_is_not_a_chain_and_garbage_is_refused() {
        let a = generate(Alg::EdDsa).unwrap();
        assert!(matches!(
            load_cert_chain(&a.key_pem),
            Err(TokenError::NoCertificate)
        ));
        let bogus = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let err = load_cert_chain(&bogus).unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidCertificate { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chain.crt");
        std::fs::write(&p, "not pem").unwrap();
        let err = load_cert_chain_file(&p).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()), "{err}");
        let missing = dir.path().join("missing.crt");
        let err = load_cert_chain_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.crt"), "{err}");
    }
}
