//! Reading a token request: the GET query of the distribution token protocol and the POST form
//! of its OAuth2 variant, and the HTTP Basic header. Everything here is bounded and answers
//! malformed input with a 4xx, never a panic.

use data_encoding::{BASE64, BASE64_NOPAD};
use http::{header, HeaderMap};
use purser_core::Credentials;

use crate::error::ApiError;

/// Longest value of any single parameter we accept (a refresh token is the longest legitimate one).
const MAX_PARAM_LEN: usize = 16 * 1024;
/// Most parameters in one query or form.
const MAX_PARAMS: usize = 1024;

/// The parameters of a request, in a form common to GET and POST.
#[derive(Debug, Default)]
pub struct Params {
    pub service: Option<String>,
    pub scopes: Vec<String>,
    pub account: Option<String>,
    pub client_id: Option<String>,
    pub offline_token: bool,
    pub access_type_offline: bool,
    pub grant_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    /// The token exchange (RFC 8693): the token presented and its type.
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes (a query string or a POST body).
    pub fn parse(raw: &[u8]) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (i, (k, v)) in form_urlencoded::parse(raw).enumerate() {
            if i >= MAX_PARAMS {
                return Err(ApiError::Unsupported("too many parameters".into()));
            }
            if v.len() > MAX_PARAM_LEN {
                return Err(ApiError::Unsupported(format!(
                    "parameter {k:?} is too long"
                )));
            }
            if v.contains('\u{FFFD}') || v.contains('\0') || k.contains('\u{FFFD}') {
                return Err(ApiError::Unsupported(format!(
                    "parameter {k:?} is not valid UTF-8 text"
                )));
            }
            let v = v.into_owned();
            match &*k {
                "service" => p.service = Some(v),
                "scope" => p.scopes.push(v),
                "account" => p.account = Some(v),
                "client_id" => p.client_id = Some(v),
                "offline_token" => p.offline_token = v.eq_ignore_ascii_case("true"),
                "access_type" => p.access_type_offline = v == "offline",
                "grant_type" => p.grant_type = Some(v),
                "username" => p.username = Some(v),
                "password" => p.password = Some(v),
                "refresh_token" => p.refresh_token = Some(v),
                "subject_token" => p.subject_token = Some(v),
                "subject_token_type" => p.subject_token_type = Some(v),
                // Unknown parameters are ignored, as other token servers do: clients add their own.
                _ => {}
            }
        }
        Ok(p)
    }

    /// How many scopes the request names, counted before any parsing so that a request with
    /// thousands of them is refused cheaply.
    pub fn scope_count(&self) -> usize {
        self.scopes
            .iter()
            .map(|s| s.split_ascii_whitespace().count())
            .sum()
    }
}

/// The Basic credentials of a request: `Ok(None)` when there is no Authorization header.
///
/// A header that is not one well-formed set of Basic credentials (another scheme, bad base64,
/// no colon, invalid UTF-8, a NUL byte, more than one header) is a failed authentication, as
/// the distribution token spec has it: [`ApiError::BadCredentials`], a 401 with the Basic
/// challenge. It names no account, so it counts against none, and its content is never logged.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<Credentials>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refused("more than one Authorization header"));
    }
    let value = value.as_bytes();
    let Some(b64) = strip_scheme(value, b"basic") else {
        return Err(refused(
            "the Authorization header must use the Basic scheme",
        ));
    };
    let b64 = b64.trim_ascii();
    let decoded = BASE64
        .decode(b64)
        .or_else(|_| BASE64_NOPAD.decode(b64))
        .map_err(|_| refused("the Basic credentials are not valid base64"))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| refused("the Basic credentials are not valid UTF-8"))?;
    // The user name ends at the first colon; the password may hold more colons.
    let Some((user, pass)) = text.split_once(':') else {
        return Err(refused("the Basic credentials must be user:password"));
    };
    if user.contains('\0') || pass.contains('\0') {
        return Err(refused("the Basic credentials contain a NUL byte"));
    }
    Ok(Some(Credentials::new(user, pass)))
}

/// A refused Authorization header: the reason for the client and the log, never the content.
fn refused(reason: &'static str) -> ApiError {
    tracing::debug!(reason, "Authorization header refused");
    ApiError::BadCredentials(reason)
}

fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = value.split_at_checked(scheme.len())?;
    if head.eq_ignore_ascii_case(scheme) && rest.first() == Some(&b' ') {
        Some(&rest[1..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic_splits_at_first_colon_and_reads_utf8() {
        let c = basic_credentials(&headers("Basic em/DqzpwOnc="))
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "zoë");
        assert_eq!(c.password.expose(), "p:w");
    }

    /// Every malformed header is the same failed authentication: a 401.
    fn assert_refused(h: &HeaderMap, what: &str) {
        match basic_credentials(h) {
            Err(e @ ApiError::BadCredentials(_)) => {
                assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED, "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }

    #[test]
    fn basic_refuses_garbage_as_a_failed_authentication() {
        for v in [
            "Basic !!!",
            "Bearer abc",
            "Basic",
            "Basic dXNlcg==",
            "Basic YWxpY2UAOnNlY3JldA==", // "alice\0:secret"
            "Basic YWxpY2U6//4=",         // "alice:" then bytes that are not UTF-8
            "Digest username=\"alice\"",
        ] {
            assert_refused(&headers(v), v);
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        );
        assert_refused(&h, "raw bytes that are not UTF-8");
        let mut h = headers("Basic YTpi");
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_refused(&h, "two headers");
    }

    #[test]
    fn params_collect_repeated_scopes() {
        let p = Params::parse(b"service=s&scope=repository%3Aa%3Apull&scope=repository:b:push+repository:c:pull&account=zo%C3%AB").unwrap();
        assert_eq!(p.scopes.len(), 2);
        assert_eq!(p.scope_count(), 3);
        assert_eq!(p.account.as_deref(), Some("zoë"));
        assert!(Params::parse(b"account=%FF").is_err());
        assert!(Params::parse(b"account=a%00").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn header_of(bytes: &[u8]) -> Option<HeaderMap> {
            let v = HeaderValue::from_bytes(bytes).ok()?;
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v);
            Some(h)
        }

        proptest! {
            #[test]
            fn any_header_bytes_give_credentials_or_a_401(
                bytes in prop::collection::vec(any::<u8>(), 0..200),
            ) {
                if let Some(h) = header_of(&bytes) {
                    match basic_credentials(&h) {
                        Ok(Some(c)) => {
                            prop_assert!(!c.username.contains(':'));
                            prop_assert!(!c.username.contains('\0'));
                            prop_assert!(!c.password.expose().contains('\0'));
                        }
                        Ok(None) => prop_assert!(false, "a header was present"),
                        Err(e) => prop_assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED),
                    }
                }
            }

            #[test]
            fn any_base64_payload_gives_credentials_or_a_401(
                payload in prop::collection::vec(any::<u8>(), 0..120),
                pad in any::<bool>(),
            ) {
                let b64 = if pad { BASE64.encode(&payload) } else { BASE64_NOPAD.encode(&payload) };
                let h = header_of(format!("Basic {b64}").as_bytes()).unwrap();
                match basic_credentials(&h) {
                    Ok(Some(c)) => {
                        let text = std::str::from_utf8(&payload).expect("accepted text is UTF-8");
                        let (u, p) = text.split_once(':').expect("accepted text has a colon");
                        prop_assert_eq!(c.username.as_str(), u);
                        prop_assert_eq!(c.password.expose(), p);
                    }
                    Ok(None) => prop_assert!(false, "a header was present"),
                    Err(e) => prop_assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED),
                }
            }

            #[test]
            fn encoded_credentials_read_back_exactly(
                user in "[^:\u{0}]{0,40}",
                password in "[^\u{0}]{0,80}",
                pad in any::<bool>(),
                scheme in prop_oneof![Just("Basic"), Just("basic"), Just("BASIC")],
            ) {
                let raw = format!("{user}:{password}");
                let b64 = if pad { BASE64.encode(raw.as_bytes()) } else { BASE64_NOPAD.encode(raw.as_bytes()) };
                let h = header_of(format!("{scheme} {b64}").as_bytes()).unwrap();
                let c = basic_credentials(&h)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
                    .expect("credentials");
                prop_assert_eq!(c.username, user);
                prop_assert_eq!(c.password.expose(), password.as_str());
            }

            #[test]
            fn two_authorization_headers_are_always_refused(
                a in "[ -~]{0,40}",
                b in "[ -~]{0,40}",
            ) {
                let mut h = HeaderMap::new();
                h.append(header::AUTHORIZATION, HeaderValue::from_str(&a).unwrap());
                h.append(header::AUTHORIZATION, HeaderValue::from_str(&b).unwrap());
                prop_assert!(basic_credentials(&h).is_err());
            }

            #[test]
            fn params_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(p) = Params::parse(&raw) {
                    for v in p.scopes.iter().chain(p.account.iter()) {
                        let clean = !v.contains('\0') && !v.contains(char::REPLACEMENT_CHARACTER);
                        prop_assert!(clean, "{:?}", v);
                    }
                }
            }
        }
    }
}
