//! The exchange a client makes, once: `GET /v2/` -> 401 challenge -> token from the realm ->
//! `GET /v2/` with it, each step named when it breaks.

use serde_json::Value as Json;

use super::clock::{check_clock, parse_http_date};
use super::{parse_bearer_challenge, Finding, HttpClient, RegistryToken, UserPassword};
use crate::config::Config;

/// Asks the running registry: its challenge, the realm it names (reachable, and its clock), and
/// with `user` the whole exchange once: a token from the realm, then `GET /v2/` with it.
pub(super) fn online_checks(
    client: &HttpClient,
    config: &Config,
    reg: &RegistryToken,
    registry_url: &str,
    user: Option<&UserPassword>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let base = registry_url.trim_end_matches('/');
    let v2 = format!("{base}/v2/");
    let first = match client.get(&v2, None) {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::problem(
                "registry",
                format!("GET {v2}: {e}"),
                "check --registry and that the registry is running",
            ));
            return out;
        }
    };
    let local_now = purser_core::Clock::wall(&purser_core::SystemClock);

    // The challenge.
    let challenge = first
        .header("www-authenticate")
        .and_then(parse_bearer_challenge);
    let challenge = match (first.status, challenge) {
        (401, Some(c)) => {
            out.push(Finding::ok(
                "challenge",
                format!(
                    "GET /v2/ answers 401 with a Bearer challenge (realm {:?}, service {:?})",
                    c.get("realm").cloned().unwrap_or_default(),
                    c.get("service").cloned().unwrap_or_default()
                ),
            ));
            c
        }
        (status, _) => {
            let (what, fix) = if status == 200 {
                (
                    "GET /v2/ answers 200 without credentials: the running registry does not use token auth".to_string(),
                    "start the registry with the config given to --registry-config (auth.token)".to_string(),
                )
            } else {
                (
                    format!(
                        "GET /v2/ answers {status} {}",
                        first
                            .header("www-authenticate")
                            .unwrap_or("without a Bearer challenge")
                    ),
                    "start the registry with token auth (auth.token in its config)".to_string(),
                )
            };
            out.push(Finding::problem("challenge", what, fix));
            return out;
        }
    };
    let realm = challenge.get("realm").cloned().unwrap_or_default();
    let service = challenge.get("service").cloned().unwrap_or_default();
    if !reg.autoredirect {
        if let Some(cfg_realm) = &reg.realm {
            if *cfg_realm != realm {
                out.push(Finding::warn(
                    "challenge",
                    format!("the running registry announces realm {realm:?}, its config file says {cfg_realm:?}"),
                    "check that the registry runs with the config (and environment) given to doctor",
                ));
            }
        }
    }
    if let Some(cfg_service) = &reg.service {
        if *cfg_service != service {
            out.push(Finding::warn(
                "challenge",
                format!("the running registry announces service {service:?}, its config file says {cfg_service:?}"),
                "check that the registry runs with the config (and environment) given to doctor",
            ));
        }
    }
    if !config.token.service.to_vec().contains(&service) {
        out.push(Finding::problem(
            "challenge",
            format!(
                "the running registry announces service {service:?}, not among purser's token.service"
            ),
            format!("add {service:?} to token.service"),
        ));
    }

    // The token endpoint, anonymously: reachable, and its clock.
    let realm_sep = if realm.contains('?') { '&' } else { '?' };
    let token_url = format!(
        "{realm}{realm_sep}{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("service", &service)
            .finish()
    );
    let purser_date = match client.get(&token_url, None) {
        Ok(r) if matches!(r.status, 200 | 401) => {
            out.push(Finding::ok(
                "realm reachable",
                format!("{realm} answers ({})", r.status),
            ));
            r.header("date").and_then(parse_http_date)
        }
        Ok(r) => {
            out.push(Finding::problem(
                "realm reachable",
                format!(
                    "{realm} answers {} to a token request: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                ),
                "point auth.token.realm at purser's token path",
            ));
            None
        }
        Err(e) => {
            out.push(Finding::problem(
                "realm reachable",
                format!("{realm}: {e}"),
                "start purser, or point auth.token.realm at where it listens",
            ));
            None
        }
    };

    // Clock skew: the registry's clock against purser's (or this machine's).
    out.push(check_clock(
        first.header("date").and_then(parse_http_date),
        purser_date,
        local_now,
    ));

    let Some(user) = user else {
        out.push(Finding::warn(
            "round trip",
            "not tried: give --user USER:PASSWORD to get a token and use it once",
            "",
        ));
        return out;
    };

    // The token.
    let token_url = format!(
        "{realm}{realm_sep}{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("service", &service)
            .append_pair("account", &user.user)
            .finish()
    );
    let basic = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{}:{}", user.user, user.password).as_bytes())
    );
    let token = match client.get(&token_url, Some(&basic)) {
        Ok(r) if r.status == 200 => {
            let body: Json = serde_json::from_slice(&r.body).unwrap_or(Json::Null);
            match body
                .get("token")
                .or_else(|| body.get("access_token"))
                .and_then(Json::as_str)
            {
                Some(t) if !t.is_empty() => t.to_string(),
                _ => {
                    out.push(Finding::problem(
                        "round trip",
                        format!("{realm} answered 200 without a token: it is not a token server"),
                        "point auth.token.realm at purser's token path",
                    ));
                    return out;
                }
            }
        }
        Ok(r) => {
            let msg = error_message(&r.body);
            let (what, fix) = match r.status {
                401 => (
                    format!(
                        "purser refused the credentials of {:?} (401: {msg})",
                        user.user
                    ),
                    "check the user and password given to --user (and purser's authn backends)"
                        .to_string(),
                ),
                400 => (
                    format!("purser refused the token request (400: {msg})"),
                    "make the registry's service one of purser's token.service".to_string(),
                ),
                s => (
                    format!("the token request failed ({s}: {msg})"),
                    "look at purser's log".to_string(),
                ),
            };
            out.push(Finding::problem("round trip", what, fix));
            return out;
        }
        Err(e) => {
            out.push(Finding::problem(
                "round trip",
                format!("token request to {realm}: {e}"),
                "start purser, or point auth.token.realm at it",
            ));
            return out;
        }
    };

    // The token used once.
    match client.get(&v2, Some(&format!("Bearer {token}"))) {
        Ok(r) if r.status == 200 => out.push(Finding::ok(
            "round trip",
            format!(
                "challenge -> token for {:?} from {realm} -> GET /v2/ with it: 200",
                user.user
            ),
        )),
        Ok(r) if r.status == 401 => {
            let detail = r
                .header("www-authenticate")
                .and_then(parse_bearer_challenge)
                .and_then(|c| c.get("error").cloned())
                .unwrap_or_default();
            let header = token_header(&token);
            out.push(Finding::problem(
                "round trip",
                format!(
                    "the registry refused the token purser issued (401{}; token alg {}, kid {})",
                    if detail.is_empty() { String::new() } else { format!(" {detail}") },
                    header.get("alg").and_then(Json::as_str).unwrap_or("?"),
                    header.get("kid").and_then(Json::as_str).unwrap_or("?"),
                ),
                "check rootcertbundle trusts the key: it must hold purser's certificate, with token.key_id libtrust for registry 2.x or thumbprint for 3.x; the registry's log names the reason",
            ));
        }
        Ok(r) => out.push(Finding::problem(
            "round trip",
            format!("GET /v2/ with the token answered {}", r.status),
            "look at the registry's log",
        )),
        Err(e) => out.push(Finding::problem(
            "round trip",
            format!("GET {v2} with the token: {e}"),
            "check that the registry is running",
        )),
    }
    out
}

fn error_message(body: &[u8]) -> String {
    let v: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let msg = v["errors"][0]["message"]
        .as_str()
        .or_else(|| v["error_description"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    msg.chars().take(300).collect()
}

fn token_header(token: &str) -> Json {
    token
        .split('.')
        .next()
        .and_then(|h| data_encoding::BASE64URL_NOPAD.decode(h.as_bytes()).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Json::Null)
}
