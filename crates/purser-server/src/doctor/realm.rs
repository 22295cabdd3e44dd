//! The realm: where the registry sends clients for a token, which must be purser's token path.

use super::{Finding, RegistryToken, SimpleUrl, AUTOREDIRECT_PATH};
use crate::config::Config;

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_unspecified(host: &str) -> bool {
    host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
}

/// `server.listen` as (host, port).
fn listen_parts(listen: &str) -> Option<(String, u16)> {
    let (h, p) = listen.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    Some((h.to_ascii_lowercase(), p.parse().ok()?))
}

fn served_paths(config: &Config) -> Vec<String> {
    let mut v = vec![config.server.path.clone()];
    if config.server.path != AUTOREDIRECT_PATH {
        v.push(AUTOREDIRECT_PATH.to_string());
    }
    v
}

/// The realm must reach purser's token path: scheme, host and port against `server.listen`,
/// path against `server.path` (or `/auth/token`); with `autoredirect`, the path clients are sent
/// to instead. A host that is not purser's may be a proxy, so that is a warning, not a problem.
pub(super) fn check_realm(config: &Config, reg: &RegistryToken) -> Vec<Finding> {
    let mut out = Vec::new();
    let tls = !config.server.tls.cert_file.as_os_str().is_empty();
    let our_scheme = if tls { "https" } else { "http" };
    let paths = served_paths(config);
    let listen = listen_parts(&config.server.listen);
    let example = match &listen {
        Some((h, p)) => {
            let host = if is_unspecified(h) {
                "HOST"
            } else {
                h.as_str()
            };
            format!("{our_scheme}://{host}:{p}{}", config.server.path)
        }
        None => format!("{our_scheme}://HOST:PORT{}", config.server.path),
    };
    if reg.autoredirect {
        let path = reg
            .autoredirectpath
            .clone()
            .unwrap_or_else(|| AUTOREDIRECT_PATH.to_string());
        if paths.contains(&path) {
            out.push(Finding::warn(
                "realm",
                format!(
                    "autoredirect is on: clients are sent to the host they used for the registry, path {path}, whatever realm says"
                ),
                format!(
                    "make that host route {path} to purser ({example}), e.g. with the reverse proxy in front of the registry; or set autoredirect: false and realm: {example}"
                ),
            ));
        } else {
            out.push(Finding::problem(
                "realm",
                format!(
                    "autoredirect is on and sends clients to path {path}, which purser does not serve (it serves {})",
                    paths.join(" and ")
                ),
                format!("set autoredirectpath: {AUTOREDIRECT_PATH}, or server.path: {path:?} in purser's config"),
            ));
        }
        return out;
    }
    let Some(realm) = &reg.realm else {
        out.push(Finding::problem(
            "realm",
            "the registry's auth.token.realm is not set",
            format!("set auth.token.realm: {example}"),
        ));
        return out;
    };
    let Some(url) = SimpleUrl::parse(realm) else {
        out.push(Finding::problem(
            "realm",
            format!("the registry's realm {realm:?} is not an http(s) URL"),
            format!("set auth.token.realm: {example}"),
        ));
        return out;
    };
    let mut wrong = Vec::new();
    if !paths.contains(&url.path) {
        wrong.push(format!(
            "its path {} is not purser's token path ({})",
            url.path,
            paths.join(" or ")
        ));
    }
    if url.scheme != our_scheme {
        wrong.push(format!(
            "it uses {} but purser serves {our_scheme}",
            url.scheme
        ));
    }
    let mut proxied = None;
    if let Some((lhost, lport)) = &listen {
        let direct = is_loopback_name(&url.host)
            || url.host == *lhost
            || (is_unspecified(lhost) && url.host.parse::<std::net::IpAddr>().is_ok());
        if url.port != *lport {
            if direct {
                wrong.push(format!(
                    "it points at port {} but purser listens on {}",
                    url.port, config.server.listen
                ));
            } else {
                proxied = Some(format!(
                    "the realm's host {} port {} is not purser's listen address {}",
                    url.host, url.port, config.server.listen
                ));
            }
        } else if is_loopback_name(lhost) && !is_loopback_name(&url.host) {
            proxied = Some(format!(
                "purser listens on loopback ({}) but the realm names host {}",
                config.server.listen, url.host
            ));
        }
        if wrong.is_empty() && is_loopback_name(&url.host) {
            out.push(Finding::warn(
                "realm",
                format!(
                    "the realm {realm} is a loopback address: only clients on the registry's machine can reach it"
                ),
                "use a name or address clients can reach, unless this is a local setup",
            ));
        }
    }
    if !wrong.is_empty() {
        out.push(Finding::problem(
            "realm",
            format!(
                "the realm {realm} does not reach purser: {}",
                wrong.join("; ")
            ),
            format!("set auth.token.realm: {example}"),
        ));
    } else if let Some(p) = proxied {
        out.push(Finding::warn(
            "realm",
            format!("{p}: fine only when a proxy forwards it to purser"),
            format!("make sure {realm} is forwarded to purser, or set auth.token.realm: {example}"),
        ));
    } else {
        out.push(Finding::ok(
            "realm",
            format!("{realm} reaches purser's token path"),
        ));
    }
    out
}
