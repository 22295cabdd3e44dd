//! Opening connections to the directory: URL failover, StartTLS / LDAPS, the trusted CA,
//! and the time bound on connecting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use tokio::time::timeout;

use super::error::DirectoryError;
use super::tls::{TlsReport, Trust};

/// Everything needed to open a connection, shared by the service pool and the user binds.
pub(crate) struct Connector {
    urls: Vec<String>,
    start_tls: bool,
    /// Present when a URL is `ldaps://` or `start_tls` is on.
    trust: Option<Arc<Trust>>,
    timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        urls: Vec<String>,
        start_tls: bool,
        trust: Option<Arc<Trust>>,
        timeout: Duration,
    ) -> Self {
        Connector {
            urls,
            start_tls,
            trust,
            timeout,
        }
    }

    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether a connection to `url` is TLS (LDAPS, or StartTLS on `ldap://`).
    pub(crate) fn uses_tls_for(&self, url: &str) -> bool {
        url.starts_with("ldaps://") || (self.start_tls && url.starts_with("ldap://"))
    }

    /// Connects to the first URL that answers, in the configured order. The error names the
    /// last URL tried and why it failed.
    pub(crate) async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let mut last = DirectoryError::NoUrl;
        for url in &self.urls {
            match self.connect_one(url).await.0 {
                Ok(ldap) => return Ok(ldap),
                Err(e) => {
                    tracing::debug!(backend = "ldap", %url, error = %e, "cannot connect to the directory");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Connects to `url`, and tells what TLS saw of the directory's certificate (`None`: no TLS,
    /// or no certificate reached the verifier).
    pub(crate) async fn connect_one(
        &self,
        url: &str,
    ) -> (Result<Ldap, DirectoryError>, Option<TlsReport>) {
        let report = Arc::new(Mutex::new(None));
        let result = self.open(url, report.clone()).await;
        let report = report.lock().unwrap_or_else(|e| e.into_inner()).take();
        let result = match (result, &report) {
            // A refused certificate: the verifier's words, not rustls' error code.
            (
                Err(_),
                Some(TlsReport {
                    verdict: Err(why), ..
                }),
            ) => Err(DirectoryError::Tls {
                url: url.to_owned(),
                reason: why.clone(),
            }),
            (r, _) => r,
        };
        (result, report)
    }

    async fn open(
        &self,
        url: &str,
        report: Arc<Mutex<Option<TlsReport>>>,
    ) -> Result<Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        // StartTLS only makes sense on ldap://; ldaps:// is TLS from the first byte.
        if self.start_tls && url.starts_with("ldap://") {
            settings = settings.set_starttls(true);
        }
        if let Some(trust) = &self.trust {
            let config = trust
                .client_config(report)
                .map_err(|e| DirectoryError::Tls {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
            settings = settings.set_config(config);
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
