//! An OIDC issuer's keys over HTTPS: its discovery document
//! (`<issuer>/.well-known/openid-configuration`), then the `jwks_uri` it names. HTTPS only, the
//! system's roots plus the issuer's `ca_file`, no redirects, each document at most
//! [`MAX_DOCUMENT_BYTES`], each step bounded by the timeout. The addresses come from the
//! configuration and the issuer's own discovery document, never from a token.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use purser_authn::oidc::{JwksSource, MAX_DOCUMENT_BYTES};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The fetcher of one issuer's keys.
pub(crate) struct HttpsJwks {
    issuer: String,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl HttpsJwks {
    pub(crate) fn new(issuer: &str, tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        HttpsJwks {
            issuer: issuer.to_string(),
            tls: tokio_rustls::TlsConnector::from(tls),
            timeout,
        }
    }

    /// The discovery document's URL: the issuer with `/.well-known/openid-configuration`
    /// appended (OpenID Connect Discovery 1.0, section 4).
    fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }

    /// One GET of an `https://` URL; the body of a 200 answer.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{url} is not an https URL: keys are fetched over HTTPS only"
            ));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("{url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        let target = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let cannot = |e: String| format!("cannot fetch {url}: {e}");
        let step = |what: &'static str| cannot(format!("{what} timed out"));
        let tcp = timeout(self.timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| step("connecting"))?
            .map_err(|e| cannot(e.to_string()))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| cannot(e.to_string()))?;
        let tls = timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| step("the TLS handshake"))?
            .map_err(|e| cannot(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| cannot(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let _abort = AbortOnDrop(driver);
        let req = http::Request::get(target)
            .header(HOST, authority)
            .header(USER_AGENT, concat!("purser/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| cannot(e.to_string()))?;
        let resp = timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| step("waiting for the answer"))?
            .map_err(|e| cannot(e.to_string()))?;
        if resp.status() != http::StatusCode::OK {
            return Err(cannot(format!("answered {}", resp.status())));
        }
        let body = timeout(
            self.timeout,
            Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES).collect(),
        )
        .await
        .map_err(|_| step("reading the answer"))?
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                cannot(format!(
                    "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
                ))
            } else {
                cannot(e.to_string())
            }
        })?;
        Ok(body.to_bytes().to_vec())
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[async_trait::async_trait]
impl JwksSource for HttpsJwks {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let url = self.discovery_url();
        let doc = self.get(&url).await?;
        let d: Discovery = serde_json::from_slice(&doc)
            .map_err(|_| format!("{url} is not a discovery document (issuer, jwks_uri)"))?;
        // The document must be the issuer's own (Discovery 1.0, section 4.3).
        if d.issuer != self.issuer {
            return Err(format!(
                "{url} names issuer {:?}, not {:?}",
                d.issuer.chars().take(200).collect::<String>(),
                self.issuer
            ));
        }
        if !d.jwks_uri.starts_with("https://") {
            return Err(format!(
                "{url} names a jwks_uri that is not https: keys are fetched over HTTPS only"
            ));
        }
        self.get(&d.jwks_uri).await
    }
}

/// The TLS client configuration for an issuer: the system's roots, plus the certificates of
/// `ca_file` (PEM) when given.
pub(crate) fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(pem) = ca_pem {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate cannot be used as a root: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("holds no PEM certificate".into());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
