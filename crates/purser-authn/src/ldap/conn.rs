//! Opening connections to the directory: URL failover, StartTLS / LDAPS, the trusted CA,
//! and the time bound on connecting.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use rustls::{Certificate, ClientConfig, RootCertStore};
use tokio::time::timeout;

use super::error::{CaFileError, DirectoryError};

/// Largest `ca_file` read (a bundle of every public CA is about 200 KiB).
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Everything needed to open a connection, shared by the service pool and the user binds.
pub(crate) struct Connector {
    urls: Vec<String>,
    start_tls: bool,
    /// `None`: ldap3's default configuration, which trusts the system's roots.
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        urls: Vec<String>,
        start_tls: bool,
        tls: Option<Arc<ClientConfig>>,
        timeout: Duration,
    ) -> Self {
        Connector {
            urls,
            start_tls,
            tls,
            timeout,
        }
    }

    /// Connects to the first URL that answers, in the configured order. The error names the
    /// last URL tried and why it failed.
    pub(crate) async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut last = DirectoryError::NoUrl;
        for url in &self.urls {
            match self.connect_one(url).await {
                Ok(ldap) => return Ok(ldap),
                Err(e) => {
                    tracing::debug!(backend = "ldap", %url, error = %e, "cannot connect to the directory");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn connect_one(&self, url: &str) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        // StartTLS only makes sense on ldap://; ldaps:// is TLS from the first byte.
        if self.start_tls && url.starts_with("ldap://") {
            settings = settings.set_starttls(true);
        }
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = timeout(self.timeout, LdapConnAsync::with_settings(settings, url))
            .await
            .map_err(|_| DirectoryError::ConnectTimeout {
                url: url.to_owned(),
                timeout: self.timeout,
            })?
            .map_err(|source| DirectoryError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let url = url.to_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(backend = "ldap", %url, error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }
}

/// A TLS configuration trusting exactly the certificates of the PEM file `ca_file`.
pub(crate) fn tls_config(ca_file: &Path) -> Result<Arc<ClientConfig>, CaFileError> {
    let bytes = purser_fs::read_bytes(ca_file, MAX_CA_FILE_BYTES)?;
    let blocks = pem::parse_many(&bytes).map_err(|source| CaFileError::NotPem {
        path: ca_file.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        roots
            .add(&Certificate(block.contents().to_vec()))
            .map_err(|source| CaFileError::Unusable {
                path: ca_file.to_path_buf(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(CaFileError::NoCertificate {
            path: ca_file.to_path_buf(),
        });
    }
    Ok(Arc::new(
        ClientConfig::builder()
            .with_safe_defaults()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
