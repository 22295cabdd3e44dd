//! The token endpoint's HTTP edge: reads a GET query or a POST form (bounded), checks the
//! request's shape (service, scope count and syntax, grant type, the `account` parameter), hands
//! a [`TokenCall`] to the token stack, and writes its [`TokenReply`] as the distribution or OAuth2
//! answer. The facts for telemetry travel up as a response extension ([`Served`]).
//!
//! Shape checks come first so that a malformed request costs no password hashing and no
//! failed-login accounting.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use ipnet::IpNet;
use purser_core::{Clock, Credentials, ResourceScope};
use tower::{Layer, Service, ServiceExt};

use super::call::{Audit, Issued, Proof, TokenCall, TokenReply};
use super::ReqBody;
use crate::error::{json_bytes_response, ApiError, Body, Dialect};
use crate::forwarded::{client_ip, ClientAddr};
use crate::metrics::RequestOutcome;
use crate::request::{basic_credentials, Params};

/// Largest POST body accepted (a form with 16 scopes and a refresh token is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// The socket peer of a request, put in its extensions by the connection that read it.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// What the endpoint served, handed up to the telemetry layer as a response extension.
#[derive(Clone, Debug)]
pub struct Served {
    pub method: &'static str,
    pub outcome: RequestOutcome,
    pub status: StatusCode,
    pub client: ClientAddr,
    pub audit: Arc<Audit>,
}

/// What the endpoint needs to know, built once.
pub struct EndpointSettings {
    pub services: Vec<String>,
    pub max_scopes: usize,
    pub anonymous: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub realm: String,
    pub clock: Arc<dyn Clock>,
}

#[derive(Clone)]
pub struct EndpointLayer {
    settings: Arc<EndpointSettings>,
}

impl EndpointLayer {
    pub fn new(settings: EndpointSettings) -> Self {
        EndpointLayer {
            settings: Arc::new(settings),
        }
    }
}

impl<S> Layer<S> for EndpointLayer {
    type Service = Endpoint<S>;
    fn layer(&self, inner: S) -> Endpoint<S> {
        Endpoint {
            settings: self.settings.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Endpoint<S> {
    settings: Arc<EndpointSettings>,
    inner: S,
}

// === impl Endpoint ===

impl<S> Service<Request<ReqBody>> for Endpoint<S>
where
    S: Service<TokenCall, Response = TokenReply, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let settings = self.settings.clone();
        let inner = self.inner.clone();
        Box::pin(async move { Ok(serve(&settings, inner, req).await) })
    }
}

async fn serve<S>(settings: &EndpointSettings, inner: S, req: Request<ReqBody>) -> Response<Body>
where
    S: Service<TokenCall, Response = TokenReply, Error = Infallible>,
{
    let peer = req
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let client = client_ip(peer, req.headers(), &settings.trusted_proxies);
    let (method, dialect) = match *req.method() {
        Method::POST => ("POST", Dialect::OAuth),
        _ => ("GET", Dialect::Distribution),
    };
    let reply = match parse(settings, req, client.clone()).await {
        Ok(call) => match inner.oneshot(call).await {
            Ok(reply) => reply,
            Err(never) => match never {},
        },
        Err((error, audit)) => TokenReply::refused(error, audit),
    };
    let (response, outcome) = match reply.result {
        Ok(issued) => (answer(dialect, &issued), RequestOutcome::Issued),
        Err(e) => {
            let outcome = e.outcome();
            (e.into_response(dialect, &settings.realm), outcome)
        }
    };
    let mut response = response;
    let served = Served {
        method,
        outcome,
        status: response.status(),
        client,
        audit: Arc::new(reply.audit),
    };
    response.extensions_mut().insert(served);
    response
}

type Refusal = (ApiError, Audit);

/// Reads and checks the request into a call; a refusal carries what the audit record knows.
async fn parse(
    settings: &EndpointSettings,
    req: Request<ReqBody>,
    client: ClientAddr,
) -> Result<TokenCall, Refusal> {
    let plain = |e: ApiError| (e, Audit::default());
    let (parts, body) = req.into_parts();
    let (dialect, params, proof, want_refresh) = match parts.method {
        Method::GET => {
            let params =
                Params::parse(parts.uri.query().unwrap_or("").as_bytes()).map_err(plain)?;
            let proof = get_proof(settings, &parts.headers, &params).map_err(plain)?;
            let offline = params.offline_token;
            (Dialect::Distribution, params, proof, offline)
        }
        Method::POST => {
            let form = match Limited::new(body, MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let err = if e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::Unsupported("the request body could not be read".into())
                    };
                    return Err(plain(err));
                }
            };
            let params = Params::parse(&form).map_err(plain)?;
            let proof = post_proof(&parts.headers, &params).map_err(plain)?;
            let offline = params.access_type_offline;
            (Dialect::OAuth, params, proof, offline)
        }
        _ => return Err(plain(ApiError::MethodNotAllowed("GET, POST"))),
    };
    let audit = || Audit {
        account: match &proof {
            Proof::Password(c) => Some(c.username.clone()),
            _ => None,
        },
        ..Audit::default()
    };
    let service = check_service(settings, params.service.as_deref()).map_err(|e| (e, audit()))?;
    if params.scope_count() > settings.max_scopes {
        return Err((
            ApiError::Unsupported(format!(
                "too many scopes: at most {} per request",
                settings.max_scopes
            )),
            audit(),
        ));
    }
    let scopes = ResourceScope::parse_all(params.scopes.iter().map(String::as_str))
        .map_err(|e| (ApiError::Unsupported(e.to_string()), audit()))?;
    let now = settings
        .clock
        .wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(TokenCall {
        dialect,
        proof,
        service,
        scopes,
        want_refresh,
        client,
        now,
        caller: None,
    })
}

/// GET: Basic credentials, anonymous, and the `account` parameter's agreement with them.
fn get_proof(
    settings: &EndpointSettings,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Proof, ApiError> {
    match basic_credentials(headers)? {
        Some(c) => {
            if let Some(acct) = params.account.as_deref() {
                if !acct.is_empty() && acct != c.username {
                    return Err(ApiError::Denied(format!(
                        "account {acct:?} does not match the user name of the credentials"
                    )));
                }
            }
            Ok(Proof::Password(c))
        }
        None if params.account.as_deref().is_some_and(|a| !a.is_empty()) => {
            Err(ApiError::Unauthorized(format!(
                "credentials are required for account {:?}",
                params.account.as_deref().unwrap_or_default()
            )))
        }
        None if settings.anonymous => Ok(Proof::Anonymous),
        None => Err(ApiError::Unauthorized("authentication required".into())),
    }
}

/// The RFC 8693 token exchange grant, and the subject token types it takes (an OIDC ID token).
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// POST: the OAuth2 password and refresh-token grants, and the token exchange.
fn post_proof(headers: &HeaderMap, params: &Params) -> Result<Proof, ApiError> {
    match params.grant_type.as_deref() {
        Some("password") => {
            let (Some(u), Some(p)) = (params.username.as_deref(), params.password.as_deref())
            else {
                return Err(ApiError::Unsupported(
                    "the password grant needs username and password".into(),
                ));
            };
            Ok(Proof::Password(Credentials::new(u, p)))
        }
        Some("refresh_token") => match params.refresh_token.as_deref() {
            Some(t) if !t.is_empty() => Ok(Proof::Refresh(t.to_string())),
            _ => Err(ApiError::Unsupported(
                "the refresh_token grant needs refresh_token".into(),
            )),
        },
        Some(TOKEN_EXCHANGE) => {
            match params.subject_token_type.as_deref() {
                Some(JWT_TYPE | ID_TOKEN_TYPE) => {}
                Some(_) => {
                    return Err(ApiError::Unsupported(format!(
                        "subject_token_type must be {JWT_TYPE} or {ID_TOKEN_TYPE}"
                    )))
                }
                None => {
                    return Err(ApiError::Unsupported(
                        "the token exchange needs subject_token_type".into(),
                    ))
                }
            }
            match params.subject_token.as_deref() {
                Some(t) if !t.is_empty() => Ok(Proof::SubjectToken(purser_core::Password::new(t))),
                _ => Err(ApiError::Unsupported(
                    "the token exchange needs subject_token".into(),
                )),
            }
        }
        Some(other) => Err(ApiError::UnsupportedGrantType(format!(
            "grant_type {:?} is not supported; use password, refresh_token or {TOKEN_EXCHANGE}",
            other.chars().take(40).collect::<String>()
        ))),
        // A form without a grant but with Basic credentials is a GET in disguise; some clients
        // do that. Without credentials it is an incomplete request.
        None => match basic_credentials(headers)? {
            Some(c) => Ok(Proof::Password(c)),
            None => Err(ApiError::Unsupported("grant_type is required".into())),
        },
    }
}

fn check_service(settings: &EndpointSettings, requested: Option<&str>) -> Result<String, ApiError> {
    match requested {
        Some(s) if settings.services.iter().any(|x| x == s) => Ok(s.to_string()),
        Some(s) => Err(ApiError::Denied(format!(
            "unknown service {:?}: this token server serves {}",
            s.chars().take(100).collect::<String>(),
            settings.services.join(", ")
        ))),
        None if settings.services.len() == 1 => Ok(settings.services[0].clone()),
        None => Err(ApiError::Unsupported(
            "the service parameter is required".into(),
        )),
    }
}

fn answer(dialect: Dialect, issued: &Issued) -> Response<Body> {
    let scope = issued.granted_scopes.join(" ");
    let body = match dialect {
        Dialect::Distribution => TokenAnswer {
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at: rfc3339(issued.iat),
            refresh_token: issued.refresh_token.as_deref(),
            token: Some(&issued.token),
            scope: None,
            token_type: None,
        },
        Dialect::OAuth => TokenAnswer {
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at: rfc3339(issued.iat),
            refresh_token: issued.refresh_token.as_deref(),
            token: None,
            scope: Some(&scope),
            token_type: Some("Bearer"),
        },
    };
    json_bytes_response(StatusCode::OK, body.to_json())
}

fn rfc3339(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How long a client is told to wait when no backend could decide.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// The answer to a token request. Fields are in alphabetical order, the order the answers have
/// always had; the JSON is written directly (see [`TokenAnswer::to_json`]).
struct TokenAnswer<'a> {
    access_token: &'a str,
    expires_in: i64,
    issued_at: String,
    refresh_token: Option<&'a str>,
    /// POST (OAuth2) only.
    scope: Option<&'a str>,
    /// GET (distribution) only.
    token: Option<&'a str>,
    /// POST (OAuth2) only.
    token_type: Option<&'static str>,
}

impl TokenAnswer<'_> {
    /// The answer as compact JSON, byte for byte what serde_json writes for the same object.
    /// The token is there twice in a distribution answer (`token`, `access_token`) and is most
    /// of its bytes: a JWS is base64url and dots, which JSON strings hold as they are, so it is
    /// copied, not run through the escaper character by character.
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 * self.access_token.len() + 256);
        out.extend_from_slice(b"{\"access_token\":");
        json_str(&mut out, self.access_token);
        out.extend_from_slice(b",\"expires_in\":");
        out.extend_from_slice(self.expires_in.to_string().as_bytes());
        out.extend_from_slice(b",\"issued_at\":");
        json_str(&mut out, &self.issued_at);
        let optional = [
            ("refresh_token", self.refresh_token),
            ("scope", self.scope),
            ("token", self.token),
            ("token_type", self.token_type),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
                json_str(&mut out, value);
            }
        }
        out.push(b'}');
        out
    }
}

/// Appends `s` as a JSON string: copied between quotes when no character of it needs an escape
/// (the whole test runs over every byte, without a branch per byte), else through serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a string into a Vec does not fail; were it to, the answer stays valid JSON.
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use super::TokenAnswer;

    #[test]
    fn answers_serialise_as_the_json_objects_they_replace() {
        // serde_json's objects sort their keys: the struct must give the same bytes.
        let get = TokenAnswer {
            access_token: "t",
            expires_in: 300,
            issued_at: "2026-01-01T00:00:00Z".into(),
            refresh_token: Some("r"),
            token: Some("t"),
            scope: None,
            token_type: None,
        };
        let want = serde_json::json!({
            "token": "t", "access_token": "t", "expires_in": 300,
            "issued_at": "2026-01-01T00:00:00Z", "refresh_token": "r",
        });
        assert_eq!(get.to_json(), serde_json::to_vec(&want).unwrap());
        let post = TokenAnswer {
            access_token: "t",
            expires_in: 60,
            issued_at: "2026-01-01T00:00:00Z".into(),
            refresh_token: None,
            token: None,
            scope: Some("repository:a:pull"),
            token_type: Some("Bearer"),
        };
        let want = serde_json::json!({
            "access_token": "t", "scope": "repository:a:pull", "expires_in": 60,
            "issued_at": "2026-01-01T00:00:00Z", "token_type": "Bearer",
        });
        assert_eq!(post.to_json(), serde_json::to_vec(&want).unwrap());
    }

    #[test]
    fn answers_escape_what_json_strings_cannot_hold_as_is() {
        // Only the token is copied as is when it can be; anything else goes through the escaper.
        for odd in [
            "a\"b",
            "back\\slash",
            "line\nfeed",
            "\u{1}",
            "é ✓ \u{7f}",
            "",
            "eyJ0eXAiOiJKV1QifQ.e30.c2ln-_",
        ] {
            let a = TokenAnswer {
                access_token: odd,
                expires_in: -1,
                issued_at: odd.into(),
                refresh_token: Some(odd),
                token: Some(odd),
                scope: Some(odd),
                token_type: Some("Bearer"),
            };
            let want = serde_json::json!({
                "access_token": odd, "expires_in": -1, "issued_at": odd, "refresh_token": odd,
                "scope": odd, "token": odd, "token_type": "Bearer",
            });
            assert_eq!(
                String::from_utf8(a.to_json()).unwrap(),
                serde_json::to_string(&want).unwrap(),
                "{odd:?}"
            );
        }
    }
}
