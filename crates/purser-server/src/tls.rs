//! HTTPS on the token listener (`server.tls`): rustls, with a certificate that follows its files.
//!
//! ACME clients renew certificates in place, so the certificate and key are two more sources of
//! the one reload mechanism ([`crate::reload`]): a change to either file loads both, and only a
//! pair that parses and matches replaces the one being served. Handshakes already under way keep
//! the pair they started with; the next one gets the new pair. A bad pair keeps the old one in
//! service, logged and counted as `purser_reloads_total{source="tls",outcome="failure"}`.
//!
//! ```no_run
//! # fn run() -> Result<(), purser_server::tls::TlsError> {
//! use std::path::Path;
//! let store = purser_server::tls::CertStore::load(Path::new("tls.crt"), Path::new("tls.key"))?;
//! let acceptor = purser_server::tls::acceptor(store.clone());
//! # let _ = acceptor; Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::reload::{Loader, Source};

/// Bound on a TLS handshake: a client that connects and stalls holds no task past this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest certificate or key file read (a long chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A renewal writes two files: a key that does not match the certificate yet is waited for
/// this long (the other file is probably being written) before the reload counts as failed.
const PAIR_GRACE: Duration = Duration::from_secs(3);

/// The reload metrics label of the certificate and key files.
pub const SOURCE: &str = "tls";

/// The key of the certificate file, for problems that are the certificate's.
pub const CERT_KEY: &str = "server.tls.cert_file";
/// The key of the key file, for problems that are the key's (a key that does not belong to the
/// certificate included).
pub const KEY_KEY: &str = "server.tls.key_file";

#[derive(Debug, thiserror::Error)]
#[error("server.tls: {message}")]
pub struct TlsError {
    /// The config key of the file at fault: [`CERT_KEY`] or [`KEY_KEY`].
    pub key: &'static str,
    pub message: String,
}

/// The certificate and key being served, swapped whole when the files change.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    // Never the key: only where it comes from and which certificate is served.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

fn read_bounded(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    purser_fs::read_bytes(path, MAX_PEM_BYTES).map_err(|e| {
        format!(
            "cannot read the {what} {}: {}; check the path and that purser's user may read it",
            path.display(),
            e.kind()
        )
    })
}

/// SHA-256 of a certificate's DER, hex with colons (as `openssl x509 -fingerprint -sha256`).
pub fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the log says about a certificate: its subject and the end of its validity.
fn describe(der: &[u8]) -> (String, Option<std::time::SystemTime>) {
    use x509_cert::der::Decode;
    match x509_cert::Certificate::from_der(der) {
        Ok(c) => (
            c.tbs_certificate.subject.to_string(),
            Some(c.tbs_certificate.validity.not_after.to_system_time()),
        ),
        Err(_) => (String::from("(unparsed)"), None),
    }
}

/// Why a pair did not load.
enum PairError {
    /// Both files parse, but the key is not the certificate's: possibly half of a renewal.
    Mismatch(String),
    /// The certificate file is unreadable or holds no certificate.
    BadCert(String),
    /// The key file is unreadable or holds no usable key.
    BadKey(String),
}

impl PairError {
    fn message(self) -> String {
        match self {
            PairError::Mismatch(m) | PairError::BadCert(m) | PairError::BadKey(m) => m,
        }
    }

    fn into_tls_error(self) -> TlsError {
        let key = match &self {
            PairError::BadCert(_) => CERT_KEY,
            PairError::BadKey(_) | PairError::Mismatch(_) => KEY_KEY,
        };
        TlsError {
            key,
            message: self.message(),
        }
    }
}

/// Reads and checks a certificate chain and its key: the chain must hold at least one
/// certificate, the key must be one rustls signs with, and it must belong to the first
/// certificate.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    read_pair(cert_path, key_path).map_err(PairError::message)
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, PairError> {
    let cert_pem = read_bounded(cert_path, "certificate file").map_err(PairError::BadCert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            PairError::BadCert(format!(
                "{}: not a PEM certificate chain (a block is malformed or cut short)",
                cert_path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(PairError::BadCert(format!(
            "{}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            cert_path.display()
        )));
    }
    let key_pem = read_bounded(key_path, "key file").map_err(PairError::BadKey)?;
    // The parse error is reported without its text: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        PairError::BadKey(format!(
            "{}: no private key (expected PEM PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|_| {
        PairError::BadKey(format!(
            "{}: a key type TLS cannot use (RSA, ECDSA P-256/P-384 or Ed25519 are)",
            key_path.display()
        ))
    })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(PairError::Mismatch(format!(
                "the key {} does not belong to the first certificate of {}; use the key the certificate was issued for",
                key_path.display(),
                cert_path.display()
            )))
        }
    }
    Ok(pair)
}

impl CertStore {
    /// Loads the pair; an error here stops the start.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, TlsError> {
        let pair = read_pair(cert_path, key_path).map_err(PairError::into_tls_error)?;
        let store = Arc::new(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(pair),
        });
        Ok(store)
    }

    /// Reads both files again and swaps the new pair in when it is sound; returns a summary for
    /// the log, or the problem (the old pair stays).
    pub fn reload(&self) -> Result<String, String> {
        let started = std::time::Instant::now();
        let pair = loop {
            match read_pair(&self.cert_path, &self.key_path) {
                Ok(pair) => break pair,
                // Half of a renewal: the key and certificate are written one after the other.
                // This runs on a blocking thread of the reload task, so waiting here is fine.
                Err(PairError::Mismatch(_)) if started.elapsed() < PAIR_GRACE => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.message()),
            }
        };
        let summary = summary(&pair);
        self.current.store(Arc::new(pair));
        Ok(summary)
    }

    /// The SHA-256 fingerprint of the certificate being served.
    pub fn fingerprint(&self) -> String {
        let pair = self.current.load();
        pair.cert
            .first()
            .map(|c| fingerprint_of(c.as_ref()))
            .unwrap_or_default()
    }

    /// A one-line description of the pair in service.
    pub fn summary(&self) -> String {
        summary(&self.current.load())
    }

    /// The certificate and key files as reload sources: a change to either reloads the pair.
    pub fn sources(self: &Arc<Self>) -> Vec<Source> {
        [self.cert_path.clone(), self.key_path.clone()]
            .into_iter()
            .map(|path| {
                let store = self.clone();
                let load: Loader = Box::new(move |_changed: &Path| store.reload());
                Source {
                    name: SOURCE,
                    path,
                    load,
                }
            })
            .collect()
    }
}

fn summary(pair: &CertifiedKey) -> String {
    let Some(leaf) = pair.cert.first() else {
        return String::new();
    };
    let (subject, not_after) = describe(leaf.as_ref());
    let expiry = match not_after {
        Some(t) => {
            let t = time::OffsetDateTime::from(t);
            let text = t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            if t < time::OffsetDateTime::now_utc() {
                tracing::warn!(subject = %subject, not_after = %text, "the TLS certificate has expired: clients will refuse it");
            }
            text
        }
        None => "unknown".into(),
    };
    format!(
        "certificate {subject:?}, {} in chain, valid until {expiry}, sha256 {}",
        pair.cert.len(),
        fingerprint_of(leaf.as_ref())
    )
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls configuration of the token listener: TLS 1.2 and 1.3, HTTP/1.1, no client
/// certificates, the certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The ring provider supports both default protocol versions, so this cannot fail; should
    // it ever, TLS 1.3 alone is still a sound listener.
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3 with the ring provider")
        });
    let mut config = builder.with_no_client_auth().with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS acceptor serving `store`'s current certificate.
pub fn acceptor(store: Arc<CertStore>) -> TlsAcceptor {
    TlsAcceptor::from(server_config(store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Makes a self-signed EC certificate and key with the openssl CLI (required).
    fn openssl_pair(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-subj",
            ])
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl must be installed (Debian package openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (cert, key)
    }

    fn der_of(cert: &Path) -> Vec<u8> {
        let pem = std::fs::read(cert).unwrap();
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn loads_a_pair_and_reloads_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_pair(dir.path(), "a", "first");
        let store = CertStore::load(&cert, &key).unwrap();
        let first = store.fingerprint();
        assert_eq!(first, fingerprint_of(&der_of(&cert)));
        assert!(store.summary().contains("first"), "{}", store.summary());

        let (cert2, key2) = openssl_pair(dir.path(), "b", "second");
        std::fs::copy(&key2, &key).unwrap();
        std::fs::copy(&cert2, &cert).unwrap();
        let summary = store.reload().unwrap();
        assert!(summary.contains("second"), "{summary}");
        assert_ne!(store.fingerprint(), first);
        assert_eq!(store.fingerprint(), fingerprint_of(&der_of(&cert2)));
    }

    #[test]
    fn a_renewal_caught_between_its_two_files_waits_for_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_pair(dir.path(), "a", "first");
        let store = CertStore::load(&cert, &key).unwrap();
        let (cert2, key2) = openssl_pair(dir.path(), "b", "second");
        std::fs::copy(&key2, &key).unwrap();
        let writer = {
            let (cert, cert2) = (cert.clone(), cert2.clone());
            std::thread::spawn(move || {
                // The certificate lands a moment after the key, as an ACME client writes them.
                std::thread::sleep(Duration::from_millis(300));
                std::fs::copy(&cert2, &cert).unwrap();
            })
        };
        let summary = store.reload().unwrap();
        writer.join().unwrap();
        assert!(summary.contains("second"), "{summary}");
        assert_eq!(store.fingerprint(), fingerprint_of(&der_of(&cert2)));
    }

    #[test]
    fn a_bad_replacement_keeps_the_pair_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_pair(dir.path(), "a", "first");
        let store = CertStore::load(&cert, &key).unwrap();
        let before = store.fingerprint();

        // A key that belongs to another certificate.
        let (_, other_key) = openssl_pair(dir.path(), "b", "other");
        std::fs::copy(&other_key, &key).unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        assert_eq!(store.fingerprint(), before);

        // A truncated certificate.
        let good = std::fs::read(&cert).unwrap();
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.contains("not a PEM certificate chain"), "{err}");
        assert_eq!(store.fingerprint(), before);
        std::fs::write(&cert, good).unwrap();

        // No key at all.
        std::fs::remove_file(&key).unwrap();
        let err = store.reload().unwrap_err();
        assert!(
            err.contains("the key file") && err.contains("a.key: cannot read the file"),
            "{err}"
        );
        assert_eq!(store.fingerprint(), before);
    }

    #[test]
    fn load_refuses_a_mismatch_and_never_quotes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = openssl_pair(dir.path(), "a", "first");
        let (_, key) = openssl_pair(dir.path(), "b", "second");
        let err = CertStore::load(&cert, &key).unwrap_err().to_string();
        assert!(err.starts_with("server.tls: "), "{err}");
        let garbage = dir.path().join("garbage.key");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = CertStore::load(&cert, &garbage).unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let dbg = format!(
            "{:?}",
            CertStore::load(&cert, &dir.path().join("a.key")).unwrap()
        );
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
    }

    #[tokio::test]
    async fn serves_the_current_certificate_to_a_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_pair(dir.path(), "a", "localhost");
        let store = CertStore::load(&cert, &key).unwrap();
        let acceptor = acceptor(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (s, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(s).await.unwrap();
                tls.write_all(b"hi").await.unwrap();
                tls.shutdown().await.unwrap();
            }
        });
        // A client that trusts nothing but records what it was shown.
        let seen = |expect: Vec<u8>| {
            let expect = expect.clone();
            async move {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(CertificateDer::from(expect.clone())).unwrap();
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let mut tls = connector.connect(name, tcp).await.unwrap();
                let (_, conn) = tls.get_ref();
                let shown = conn.peer_certificates().unwrap()[0].as_ref().to_vec();
                let mut buf = Vec::new();
                tls.read_to_end(&mut buf).await.unwrap();
                assert_eq!(buf, b"hi");
                shown
            }
        };
        assert_eq!(seen(der_of(&cert)).await, der_of(&cert));
        let (cert2, key2) = openssl_pair(dir.path(), "b", "localhost");
        std::fs::copy(&key2, &key).unwrap();
        std::fs::copy(&cert2, &cert).unwrap();
        store.reload().unwrap();
        assert_eq!(seen(der_of(&cert2)).await, der_of(&cert2));
        server.await.unwrap();
    }
}
