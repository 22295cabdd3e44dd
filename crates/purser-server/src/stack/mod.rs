//! The request path as one tower stack, built once at start and shared by every connection.
//!
//! ```text
//! RequestId          span + x-request-id, for every path
//! Router             /healthz, /readyz, /.well-known/jwks.json answered here, outside the
//!                    bounds below, so probes answer while token requests are shed
//!   Telemetry        metrics and the audit record, from what the endpoint hands up
//!   Timeout          30 s per token request
//!   LoadShed         past the in-flight bound: 503 with Retry-After at once, never a queue
//!   ConcurrencyLimit one bound for the whole server (MAX_IN_FLIGHT), not per connection
//!   Endpoint         HTTP <-> TokenCall: parse, shape checks, the answer's dialect
//!     Limiter        locked accounts and addresses: 429, a wrong password sent again: 401,
//!                    before any password check
//!     Authn          proof -> caller, through the backend chain or the refresh token
//!     Issue          the policy decides every scope; the token is signed
//! ```
//!
//! Order matters where it says why: telemetry sits outside the timeout and the shedding so
//! that requests not served are counted too; the limiter sits outside authentication so that
//! a locked-out guesser costs no hashing; shape checks come before both, so a malformed request
//! is never counted as a failed login.

pub mod authn;
pub mod call;
pub mod endpoint;
pub mod issue;
pub mod limiter;
pub mod request_id;
pub mod telemetry;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::error::{text_response, ApiError, Body, Dialect};
use crate::metrics::Metrics;

pub use call::{Audit, TokenCall, TokenReply};
pub use endpoint::{EndpointSettings, PeerAddr, MAX_BODY};

/// The body type inside the stack: whatever the connection reads, boxed once (a concrete error
/// type keeps the services' bounds simple).
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The token services below the HTTP edge: limiter, authentication, issuing.
type TokenService = limiter::Limiter<authn::Authn<issue::IssueService>>;

/// The token path from telemetry down: one concrete type, so that a request's clone of it is a
/// few reference counts (no boxed service, no allocation).
type TokenHttp = telemetry::Telemetry<
    tower::timeout::Timeout<
        tower::load_shed::LoadShed<
            tower::limit::ConcurrencyLimit<endpoint::Endpoint<TokenService>>,
        >,
    >,
>;

/// The whole stack, as every connection calls it (cloned per request: reference counts only).
pub type HttpService = request_id::RequestIdService<Router>;

/// Token requests handled at once before new ones are shed with 503.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Bound on one token request, from its head being read to the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Readiness of the parts `/readyz` reports on.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync {
    /// What keeps the server from being ready (`/readyz` answers 503).
    async fn problems(&self) -> Vec<String>;
    /// What `/readyz` says while still answering 200: a part running degraded.
    async fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Everything the stack is built from.
pub struct Parts {
    pub endpoint: EndpointSettings,
    pub limiter: Arc<dyn purser_core::LoginLimiter>,
    pub authn: authn::AuthnSettings,
    pub issue: issue::IssueSettings,
    pub metrics: Metrics,
    /// The token path and `/auth/token`.
    pub token_paths: Vec<String>,
    /// The keys, whose JWKS document is served.
    pub keys: Arc<purser_core::Reloadable<crate::keys::Published>>,
    pub readiness: Arc<dyn Readiness>,
    pub max_in_flight: usize,
}

/// Builds the stack once; clones share its bounds and state.
pub fn build(parts: Parts) -> HttpService {
    let realm = parts.endpoint.realm.clone();
    let token = ServiceBuilder::new()
        .layer(limiter::LimiterLayer::new(
            parts.limiter,
            parts.metrics.clone(),
        ))
        .layer(authn::AuthnLayer::new(parts.authn))
        .service(issue::IssueService::new(parts.issue));
    let token_http = ServiceBuilder::new()
        .layer(telemetry::TelemetryLayer::new(
            parts.metrics.clone(),
            &realm,
        ))
        .timeout(REQUEST_TIMEOUT)
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            parts.max_in_flight,
        ))
        .layer(endpoint::EndpointLayer::new(parts.endpoint))
        .service(token);
    let router = Router {
        routes: Arc::new(Routes {
            token_paths: parts.token_paths,
            keys: parts.keys,
            readiness: parts.readiness,
            realm,
        }),
        token: token_http,
    };
    ServiceBuilder::new()
        .layer(request_id::RequestIdLayer)
        .service(router)
}

struct Routes {
    token_paths: Vec<String>,
    keys: Arc<purser_core::Reloadable<crate::keys::Published>>,
    readiness: Arc<dyn Readiness>,
    realm: String,
}

/// Sends token paths down the token stack and answers the others itself.
#[derive(Clone)]
pub struct Router {
    routes: Arc<Routes>,
    token: TokenHttp,
}

// === impl Router ===

impl Service<Request<ReqBody>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let routes = self.routes.clone();
        if routes.token_paths.iter().any(|p| p == req.uri().path()) {
            return Box::pin(self.token.clone().oneshot(req));
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        Box::pin(async move { Ok(routes.answer(&method, &path).await) })
    }
}

impl Routes {
    async fn answer(&self, method: &Method, path: &str) -> Response<Body> {
        match (method, path) {
            (&Method::GET | &Method::HEAD, "/.well-known/jwks.json") => {
                let mut r = Response::new(http_body_util::Full::new(self.keys.load().jwks.clone()));
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
                let notes = self.readiness.notes().await;
                if problems.is_empty() && notes.is_empty() {
                    text_response(StatusCode::OK, "ready\n", "text/plain")
                } else if problems.is_empty() {
                    text_response(
                        StatusCode::OK,
                        format!("ready, degraded: {}\n", notes.join("; ")),
                        "text/plain",
                    )
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
}
