//! The few parts of an `http(s)://` URL the checks compare (realm, `--registry`).

/// The parts of an `http(s)://host[:port]/path?query` URL the checks need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// The path, `/` when empty; without the query.
    pub path: String,
    /// The query, without `?`.
    pub query: String,
}

impl SimpleUrl {
    /// Parses an absolute http or https URL; `None` for anything else.
    pub fn parse(s: &str) -> Option<SimpleUrl> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        Some(SimpleUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
            query: query.to_string(),
        })
    }

    /// `host:port` as a connection target (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request target: the path, and the query when there is one.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_ports_paths_and_ipv6() {
        let u = SimpleUrl::parse("http://127.0.0.1:5001/token?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.query.as_str()),
            ("127.0.0.1", 5001, "/token", "x=1")
        );
        assert_eq!(u.target(), "/token?x=1");
        let u = SimpleUrl::parse("https://Auth.Example.org").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("auth.example.org", 443, "/")
        );
        let u = SimpleUrl::parse("http://[::1]:8080/auth/token").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.authority(), "[::1]:8080");
        assert!(SimpleUrl::parse("ftp://x/").is_none());
        assert!(SimpleUrl::parse("http://x:notaport/").is_none());
    }
}
