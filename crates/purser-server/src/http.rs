//! The HTTP side: routing, the tower stack, the listeners and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tracing::Instrument;

use crate::error::{json_response, text_response, ApiError, Body, Dialect};
use crate::forwarded::{client_ip, ClientAddr};
use crate::metrics::{Metrics, RequestOutcome};
use crate::token::{Audit, TokenState};

/// Largest POST body accepted (a form with 16 scopes and a refresh token is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Requests handled at once before new ones are shed with 503.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Bound on one request, from its head being read to the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on reading a request head (slow clients).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the request head's size.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long in-flight requests may run after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Readiness of the parts `/readyz` reports on.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync {
    async fn problems(&self) -> Vec<String>;
}

pub struct App {
    pub token: Arc<TokenState>,
    /// The JWKS document, built once.
    pub jwks: Bytes,
    /// The token path and `/auth/token`.
    pub token_paths: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub readiness: Arc<dyn Readiness>,
    pub metrics: Metrics,
    pub realm: String,
}

impl App {
    async fn route(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_string();
        if self.token_paths.contains(&path) {
            return self.token(req, peer).await;
        }
        match (req.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/.well-known/jwks.json") => {
                let mut r = Response::new(http_body_util::Full::new(self.jwks.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            (&Method::GET | &Method::HEAD, "/healthz") => {
                text_response(StatusCode::OK, "ok\n", "text/plain")
            }
            (&Method::GET | &Method::HEAD, "/readyz") => {
                let problems = self.readiness.problems().await;
                if problems.is_empty() {
                    text_response(StatusCode::OK, "ready\n", "text/plain")
                } else {
                    text_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {}\n", problems.join("; ")),
                        "text/plain",
                    )
                }
            }
            (_, "/.well-known/jwks.json" | "/healthz" | "/readyz") => {
                ApiError::MethodNotAllowed("GET").into_response(Dialect::Distribution, &self.realm)
            }
            _ => ApiError::NotFound.into_response(Dialect::Distribution, &self.realm),
        }
    }

    async fn token(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let client = client_ip(peer.ip(), req.headers(), &self.trusted_proxies);
        // `None` for a client whose forwarded entry is not an address: it matches no `ip` rule
        // and has no per-address lockout.
        let ip = client.ip();
        let method = req.method().clone();
        let mut audit = Audit::default();
        let (dialect, result) = match method {
            Method::GET => {
                let query = req.uri().query().unwrap_or("").as_bytes().to_vec();
                (
                    Dialect::Distribution,
                    self.token.get(req.headers(), &query, ip, &mut audit).await,
                )
            }
            Method::POST => {
                let (parts, body) = req.into_parts();
                match Limited::new(body, MAX_BODY).collect().await {
                    Ok(b) => {
                        let b = b.to_bytes();
                        (
                            Dialect::OAuth,
                            self.token.post(&parts.headers, &b, ip, &mut audit).await,
                        )
                    }
                    Err(e) => {
                        let err = if e
                            .downcast_ref::<http_body_util::LengthLimitError>()
                            .is_some()
                        {
                            ApiError::PayloadTooLarge
                        } else {
                            ApiError::Unsupported("the request body could not be read".into())
                        };
                        (Dialect::OAuth, Err(err))
                    }
                }
            }
            _ => (
                Dialect::Distribution,
                Err(ApiError::MethodNotAllowed("GET, POST")),
            ),
        };
        let method_label = if method == Method::POST {
            "POST"
        } else {
            "GET"
        };
        let outcome = match &result {
            Ok(_) => RequestOutcome::Issued,
            Err(e) => e.outcome(),
        };
        self.metrics
            .token_requests
            .with_label_values(&[method_label, outcome.label()])
            .inc();
        self.metrics
            .token_request_duration
            .with_label_values(&[method_label])
            .observe(started.elapsed().as_secs_f64());
        audit_record(
            &audit,
            &client,
            method_label,
            outcome,
            result.as_ref().err(),
        );
        match result {
            Ok(r) => r,
            Err(e) => e.into_response(dialect, &self.realm),
        }
    }
}

/// The audit record: one structured line per token request. Never a password or a token.
fn audit_record(
    a: &Audit,
    client: &ClientAddr,
    method: &str,
    outcome: RequestOutcome,
    err: Option<&ApiError>,
) {
    let scopes = scopes_json(&a.decisions);
    let groups = serde_json::to_string(&a.groups).unwrap_or_default();
    let error = err.map(|e| format!("{:?}", e.status())).unwrap_or_default();
    tracing::info!(
        target: "purser::audit",
        client_ip = %client,
        method,
        account = a.account.as_deref().unwrap_or(""),
        backend = a.backend.unwrap_or(""),
        groups = %groups,
        scopes = %scopes,
        outcome = outcome.label(),
        status = %error,
        "token request"
    );
}

/// The audit record's `scopes` field: a JSON array with, per requested scope,
/// `{"granted":[..],"rule":{"index":N,"name":".."}|null,"scope":".."}` (keys in this order),
/// written straight into one buffer.
fn scopes_json(decisions: &[(purser_core::ResourceScope, purser_core::Grant)]) -> String {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut out: Vec<u8> = Vec::with_capacity(2 + 96 * decisions.len());
    let mut scope_text = String::new();
    out.push(b'[');
    for (i, (scope, grant)) in decisions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"granted\":");
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &grant.actions);
        out.extend_from_slice(b",\"rule\":");
        match &grant.rule {
            Some(rule) => {
                let _ = write!(out, "{{\"index\":{},\"name\":", rule.index);
                let _ = serde_json::to_writer(&mut out, &rule.name);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"scope\":");
        scope_text.clear();
        let _ = write!(scope_text, "{scope}");
        let _ = serde_json::to_writer(&mut out, &scope_text);
        out.push(b'}');
    }
    out.push(b']');
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default()
}

/// A request id: 64 random bits, shown as 16 hex digits, formatted only where it is written.
#[derive(Clone, Copy)]
struct RequestId(u64);

impl RequestId {
    fn new() -> Self {
        RequestId(rand::random())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl RequestId {
    /// The `x-request-id` header value, without a heap string.
    fn header_value(self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

type Svc = tower::util::BoxCloneService<Request<Incoming>, Response<Body>, Infallible>;

/// The stack for one connection, outermost first: trace (a span with a request id on every log
/// line) -> timeout -> load shed -> concurrency limit -> routing. The limit sits inside the shed
/// so that a full server answers 503 at once instead of queueing without bound; the timeout sits
/// outside both so a request waiting on a slow backend is bounded too.
fn stack(app: Arc<App>, peer: SocketAddr, limit: tower::limit::ConcurrencyLimitLayer) -> Svc {
    let realm = app.realm.clone();
    let inner = ServiceBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .load_shed()
        .layer(limit)
        .service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.route(req, peer).await) }
        });
    let svc = tower::service_fn(move |req: Request<Incoming>| {
        let inner = inner.clone();
        let realm = realm.clone();
        let id = RequestId::new();
        let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
        async move {
            tracing::debug!("request received");
            let mut resp = match inner.oneshot(req).await {
                Ok(r) => r,
                Err(e) => shed_or_timeout(e, &realm),
            };
            resp.headers_mut().insert("x-request-id", id.header_value());
            Ok::<_, Infallible>(resp)
        }
        .instrument(span)
    });
    tower::util::BoxCloneService::new(svc)
}

fn shed_or_timeout(e: BoxError, realm: &str) -> Response<Body> {
    let message = if e.is::<tower::load_shed::error::Overloaded>() {
        "the server is overloaded; try again shortly"
    } else if e.is::<tower::timeout::error::Elapsed>() {
        "the request took too long; try again shortly"
    } else {
        "the server could not handle the request"
    };
    tracing::warn!(error = %e, "request not served");
    ApiError::Unavailable {
        retry_after: Duration::from_secs(1),
        message: message.into(),
    }
    .into_response(Dialect::Distribution, realm)
}

/// Serves one accepted connection: HTTP/1.1 with bounded head reads, watched by the graceful
/// shutdown so that a signal lets its request in flight finish and then closes it.
async fn serve_connection<I>(io: I, svc: Svc, watcher: hyper_util::server::graceful::Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
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
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let limit = tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT);
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
                let svc = stack(app.clone(), peer, limit.clone());
                // Taken now, before any handshake: a shutdown during the handshake still waits
                // for this connection (and closes it as soon as it is idle).
                let watcher = graceful.watcher();
                match &tls {
                    None => {
                        tokio::spawn(serve_connection(stream, svc, watcher));
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
                                Ok(Ok(tls_stream)) => serve_connection(tls_stream, svc, watcher).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use purser_core::{Grant, ResourceScope, RuleRef};

    /// The audit record's scopes, as a JSON value tree would render them.
    fn scopes_via_value(decisions: &[(ResourceScope, Grant)]) -> String {
        let items: Vec<serde_json::Value> = decisions
            .iter()
            .map(|(scope, grant)| {
                let rule = grant
                    .rule
                    .as_ref()
                    .map(|r| serde_json::json!({"index": r.index, "name": r.name}));
                serde_json::json!({"scope": scope.to_string(), "granted": grant.actions, "rule": rule})
            })
            .collect();
        serde_json::Value::Array(items).to_string()
    }

    #[test]
    fn scopes_are_written_as_a_json_value_would_be() {
        let scope = |s: &str| s.parse::<ResourceScope>().unwrap();
        let rule = |index, name: &str| {
            Some(RuleRef {
                index,
                name: name.into(),
            })
        };
        let cases: Vec<Vec<(ResourceScope, Grant)>> = vec![
            vec![],
            vec![(scope("repository:team/app:pull,push"), Grant::none())],
            vec![
                (
                    scope("repository:team/app:pull,push"),
                    Grant {
                        actions: vec!["pull".into()],
                        rule: rule(3, "team \"read\"\\ \u{1}\t\u{7f} é"),
                    },
                ),
                (
                    scope("registry:catalog:*"),
                    Grant {
                        actions: vec!["*".into()],
                        rule: rule(0, ""),
                    },
                ),
                (
                    scope("repository:library/alpine:pull"),
                    Grant {
                        actions: vec![],
                        rule: rule(usize::MAX, "deny"),
                    },
                ),
            ],
        ];
        for decisions in cases {
            let written = scopes_json(&decisions);
            assert_eq!(written, scopes_via_value(&decisions));
            let parsed: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert_eq!(parsed.as_array().unwrap().len(), decisions.len());
        }
    }

    #[test]
    fn request_ids_are_sixteen_hex_digits_in_log_and_header() {
        for n in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = RequestId(n);
            let shown = id.to_string();
            assert_eq!(shown, format!("{n:016x}"));
            assert_eq!(id.header_value().to_str().unwrap(), shown);
        }
    }
}
