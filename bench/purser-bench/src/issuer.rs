//! A stand-in OpenID issuer for the OIDC scenario: serves its discovery document and JWKS over
//! HTTPS (the certificate of a CA made for the run), so that purser fetches real keys the way
//! it fetches GitHub's; and the ID tokens of the active users, signed RS256 like GitHub's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use purser_core::Signer;
use tokio::net::TcpListener;

use crate::fixtures::{user_name, ActiveUsers, SERVICE, TEAMS};

/// Makes a CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`server.pem`,
/// `server.key`) in `dir`, with openssl.
pub fn make_certs(dir: &Path) -> anyhow::Result<()> {
    let d = |n: &str| dir.join(n).display().to_string();
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n")?;
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
            "-subj",
            "/CN=purser-bench CA",
            "-days",
            "2",
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-out",
            &d("server.pem"),
            "-days",
            "2",
            "-extfile",
            &d("ext.cnf"),
        ],
    ] {
        let status = Command::new("openssl")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run openssl (Debian: openssl)")?;
        if !status.success() {
            bail!("openssl {} failed", args[0]);
        }
    }
    Ok(())
}

/// A new RS256 issuer key: writes its JWKS to `jwks` and returns ID tokens for the active
/// users (user name `oidc`, the token as the password), with the claims the scenario's
/// templates read: `sub` (the account), `team` and `role` (the groups the htgroup file gives
/// the same users).
pub fn write_keys_and_tokens(
    issuer: &str,
    active: &ActiveUsers,
    jwks: &Path,
) -> anyhow::Result<ActiveUsers> {
    let key = purser_token::generate_key(purser_token::Alg::Rs256)?;
    let signer = purser_token::JwsSigner::new(key, purser_token::KeyIdMode::Thumbprint, vec![])?;
    std::fs::write(
        jwks,
        serde_json::to_vec(&serde_json::json!({ "keys": [signer.public_jwk()] }))?,
    )?;
    let now = std::time::UNIX_EPOCH
        .elapsed()
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = active.users.len();
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let mut claims = serde_json::json!({
            "iss": issuer, "aud": SERVICE, "sub": user_name(i), "iat": now, "nbf": now,
            "exp": now + 3 * 3600, "jti": purser_token::new_jti(),
            "team": format!("team{}", i % TEAMS),
        });
        if i == 0 {
            claims["role"] = "admins".into();
        } else if n > 2 && i == n - 1 {
            claims["role"] = "contractors".into();
        }
        let token = signer.sign_payload(&serde_json::to_vec(&claims)?)?;
        users.push(("oidc".to_string(), token));
    }
    Ok(ActiveUsers {
        users,
        hashes: Vec::new(),
    })
}

/// Serves discovery and the JWKS on `addr` over HTTPS until the process is stopped.
pub fn serve(addr: SocketAddr, cert: &Path, key: &Path, jwks: &Path) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let issuer = format!("https://{addr}");
    let discovery = Bytes::from(
        serde_json::json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }).to_string(),
    );
    let jwks = Bytes::from(std::fs::read(jwks)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let (acceptor, discovery, jwks) = (acceptor.clone(), discovery.clone(), jwks.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = match req.uri().path() {
                        "/.well-known/openid-configuration" => Some(discovery.clone()),
                        "/jwks" => Some(jwks.clone()),
                        _ => None,
                    };
                    let mut r = match body {
                        Some(b) => Response::new(Full::new(b)),
                        None => {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    })
}
