//! The listeners: accepting connections (plain or TLS), reading HTTP/1.1 with bounded heads,
//! handing each request to the one shared stack (`crate::stack`), and graceful shutdown.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::error::{json_response, text_response};
use crate::metrics::Metrics;
use crate::stack::{HttpService, PeerAddr};

pub use crate::stack::{Readiness, MAX_BODY, MAX_IN_FLIGHT, REQUEST_TIMEOUT};

/// Bound on reading a request head (slow clients).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the request head's size.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long in-flight requests may run after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves one accepted connection: HTTP/1.1 with bounded head reads, watched by the graceful
/// shutdown so that a signal lets its request in flight finish and then closes it.
async fn serve_connection<I>(
    io: I,
    svc: HttpService,
    peer: std::net::SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The stack is shared; this connection only adds its peer address to each request.
    let per_connection = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(|b| b.map_err(std::io::Error::other).boxed_unsync());
        req.extensions_mut().insert(PeerAddr(peer));
        svc.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), per_connection);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves the token listener until `shutdown` resolves, then stops accepting (the listening
/// socket is closed, so new connections are refused) and lets requests in flight finish, bounded
/// by `grace`. With `tls`, every connection is a TLS handshake first, bounded by
/// [`crate::tls::HANDSHAKE_TIMEOUT`].
pub async fn serve_tokens(
    listener: TcpListener,
    svc: HttpService,
    tls: Option<tokio_rustls::TlsAcceptor>,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                // Taken now, before any handshake: a shutdown during the handshake still waits
                // for this connection (and closes it as soon as it is idle).
                let watcher = graceful.watcher();
                match &tls {
                    None => {
                        tokio::spawn(serve_connection(stream, svc, peer, watcher));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(
                                crate::tls::HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls_stream)) => serve_connection(tls_stream, svc, peer, watcher).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => {
                                    tracing::debug!(client = %peer, "TLS handshake timed out")
                                }
                            }
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        grace_seconds = grace.as_secs(),
        "shutting down: no new connections; waiting for requests in flight"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the grace period; stopping anyway");
    } else {
        tracing::info!("every request in flight has been answered");
    }
    Ok(())
}

/// Serves `/metrics` on its own listener.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let metrics = metrics.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            text_response(StatusCode::OK, metrics.render(), "text/plain; version=0.0.4")
                        } else {
                            json_response(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found; metrics are at /metrics"}))
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = &mut shutdown => return,
        }
    }
}
