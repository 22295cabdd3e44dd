//! The one edge type: every way a request can fail, and the single function that turns it into
//! a status, a body and a challenge header. Clients get a clear, generic message; the detail
//! an operator needs goes to the log at the place the error is made.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::RequestOutcome;

pub type Body = Full<Bytes>;

/// Which protocol the client speaks decides the body shape of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `GET`: the distribution spec's `{"errors":[{"code","message"}]}`.
    Distribution,
    /// `POST`: RFC 6749 §5.2 `{"error","error_description"}`.
    OAuth,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// Wrong or missing credentials.
    Unauthorized(String),
    /// An Authorization header that is not one set of Basic credentials: a failed
    /// authentication (401 with the Basic challenge), in both dialects. The reason names what is
    /// wrong, never the header's content.
    BadCredentials(&'static str),
    /// Malformed input: a scope, too many scopes, a bad header or form.
    Unsupported(String),
    /// Well formed but refused: unknown service, an account that is not the caller.
    Denied(String),
    /// POST only: the grant itself is bad (expired refresh token, removed account).
    InvalidGrant(String),
    /// POST only: a grant_type other than password and refresh_token.
    UnsupportedGrantType(String),
    /// Locked out after failed logins.
    RateLimited {
        retry_after: Duration,
    },
    /// No backend that could decide was reachable, or the server sheds load.
    Unavailable {
        retry_after: Duration,
        message: String,
    },
    NotFound,
    MethodNotAllowed(&'static str),
    PayloadTooLarge,
    Internal,
}

impl ApiError {
    pub fn outcome(&self) -> RequestOutcome {
        match self {
            ApiError::Unauthorized(_) | ApiError::BadCredentials(_) => RequestOutcome::Unauthorized,
            ApiError::InvalidGrant(_) => RequestOutcome::Unauthorized,
            ApiError::RateLimited { .. } => RequestOutcome::RateLimited,
            ApiError::Unavailable { .. } | ApiError::Internal => RequestOutcome::Unavailable,
            _ => RequestOutcome::BadRequest,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::BadCredentials(_) => StatusCode::UNAUTHORIZED,
            ApiError::Unsupported(_) | ApiError::Denied(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidGrant(_) | ApiError::UnsupportedGrantType(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Unauthorized(m)
            | ApiError::Unsupported(m)
            | ApiError::Denied(m)
            | ApiError::InvalidGrant(m)
            | ApiError::UnsupportedGrantType(m) => m.clone(),
            ApiError::BadCredentials(reason) => (*reason).to_string(),
            ApiError::RateLimited { retry_after } => {
                format!(
                    "too many failed logins: try again in {} seconds",
                    retry_after.as_secs().max(1)
                )
            }
            ApiError::Unavailable { message, .. } => message.clone(),
            ApiError::NotFound => "not found".into(),
            ApiError::MethodNotAllowed(allow) => format!("method not allowed; use {allow}"),
            ApiError::PayloadTooLarge => "request body too large".into(),
            ApiError::Internal => "internal error; the server log has the detail".into(),
        }
    }

    fn distribution_code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) | ApiError::BadCredentials(_) | ApiError::InvalidGrant(_) => {
                "UNAUTHORIZED"
            }
            ApiError::Denied(_) => "DENIED",
            ApiError::RateLimited { .. } => "TOOMANYREQUESTS",
            ApiError::Unavailable { .. } => "UNAVAILABLE",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::Internal => "UNKNOWN",
            _ => "UNSUPPORTED",
        }
    }

    fn oauth_code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) | ApiError::BadCredentials(_) | ApiError::InvalidGrant(_) => {
                "invalid_grant"
            }
            ApiError::UnsupportedGrantType(_) => "unsupported_grant_type",
            ApiError::RateLimited { .. } | ApiError::Unavailable { .. } => {
                "temporarily_unavailable"
            }
            ApiError::Internal => "server_error",
            _ => "invalid_request",
        }
    }

    /// The only place an error becomes an HTTP answer.
    pub fn into_response(self, dialect: Dialect, realm: &str) -> Response<Body> {
        let message = self.message();
        let body = match dialect {
            Dialect::Distribution => serde_json::json!({
                "errors": [{ "code": self.distribution_code(), "message": message }]
            }),
            // Docker reads only `errors`, even from the OAuth endpoint, so both shapes are sent:
            // RFC 6749 clients read `error`; docker shows the `errors` message to its user.
            Dialect::OAuth => serde_json::json!({
                "error": self.oauth_code(),
                "error_description": message,
                "errors": [{ "code": self.distribution_code(), "message": message }]
            }),
        };
        let mut status = self.status();
        // RFC 6749 answers a failed password grant with 400 invalid_grant; a missing or wrong
        // Basic header on GET is the 401 challenge. A malformed Authorization header is the 401
        // challenge in both dialects (RFC 6749 §5.2: a client that tried to authenticate with
        // the Authorization header is answered 401 with the challenge of its scheme).
        if dialect == Dialect::OAuth && matches!(self, ApiError::Unauthorized(_)) {
            status = StatusCode::BAD_REQUEST;
        }
        let mut resp = json_response(status, &body);
        let h = resp.headers_mut();
        match &self {
            ApiError::Unauthorized(_) if dialect == Dialect::Distribution => {
                basic_challenge(h, realm);
            }
            ApiError::BadCredentials(_) => basic_challenge(h, realm),
            ApiError::RateLimited { retry_after } | ApiError::Unavailable { retry_after, .. } => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            ApiError::MethodNotAllowed(allow) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

fn basic_challenge(h: &mut http::HeaderMap, realm: &str) {
    let realm = realm.replace(['"', '\\'], "");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
}

/// Every JSON answer, token answers and their errors among them: never stored by a cache
/// (`Cache-Control: no-store`, and `Pragma: no-cache` for HTTP/1.0 caches, RFC 6749 §5.1).
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    json_bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// [`json_response`] for a body already written as JSON.
pub fn json_bytes_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(json)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

pub fn text_response(
    status: StatusCode,
    body: impl Into<String>,
    content_type: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_get_carries_basic_challenge_and_errors_body() {
        let r = ApiError::Unauthorized("invalid username or password".into())
            .into_response(Dialect::Distribution, "purser");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"purser\""
        );
    }

    #[test]
    fn oauth_errors_carry_both_shapes() {
        let r =
            ApiError::InvalidGrant("log in again".into()).into_response(Dialect::OAuth, "purser");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(r.into_body()))
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["error_description"], "log in again");
        assert_eq!(v["errors"][0]["message"], "log in again");
    }

    #[test]
    fn unavailable_has_retry_after() {
        let r = ApiError::Unavailable {
            retry_after: Duration::from_secs(5),
            message: "x".into(),
        }
        .into_response(Dialect::OAuth, "purser");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn malformed_credentials_are_the_basic_challenge_in_both_dialects() {
        for dialect in [Dialect::Distribution, Dialect::OAuth] {
            let r = ApiError::BadCredentials("the Basic credentials are not valid base64")
                .into_response(dialect, "purser");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{dialect:?}");
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"purser\"",
                "{dialect:?}"
            );
            let body = futures::executor::block_on(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED", "{dialect:?}");
        }
    }

    #[test]
    fn every_json_answer_forbids_caching() {
        let answers = [
            json_response(StatusCode::OK, &serde_json::json!({"token": "t"})),
            ApiError::Unauthorized("x".into()).into_response(Dialect::Distribution, "purser"),
            ApiError::InvalidGrant("x".into()).into_response(Dialect::OAuth, "purser"),
        ];
        for r in answers {
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
            assert_eq!(r.headers()[header::PRAGMA], "no-cache");
        }
    }
}
