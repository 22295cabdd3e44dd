//! Who the client is: the socket peer, or, behind `server.trusted_proxies`, the hop of
//! `X-Forwarded-For` that the trusted proxies vouch for.
//!
//! Each trusted proxy vouches for the entry to its left, so the chain is walked from the right
//! through trusted addresses; the first hop that is not a trusted proxy is the client, whatever
//! it contains. An entry there that is not an IP address (`unknown`, `203.0.113.9:4711`,
//! `garbage`) is still the client: it becomes [`ClientAddr::Unparsed`], which matches no `ip`
//! rule and has no per-address lockout. Falling back to the proxy's own address would hand the
//! client whatever the proxy's address is allowed.

use std::fmt;
use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use purser_authz::net::{canonical, contains};

/// How much of an unparsed entry is kept for the audit record, in bytes of the header.
pub const MAX_SHOWN: usize = 64;

/// The client of a request, as far as the server can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAddr {
    /// An address (IPv4-mapped addresses as IPv4).
    Ip(IpAddr),
    /// The `X-Forwarded-For` entry of the client hop, when it is not an address: as written,
    /// cut at [`MAX_SHOWN`] bytes, with anything but printable ASCII (and `"`, `\`) escaped as
    /// `\xNN`, so that it is safe in a text log line.
    Unparsed(String),
}

impl ClientAddr {
    /// The address `ip` rules and the per-address lockout see: `None` when unparsed.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            ClientAddr::Ip(ip) => Some(*ip),
            ClientAddr::Unparsed(_) => None,
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Ip(ip) => ip.fmt(f),
            ClientAddr::Unparsed(shown) => f.write_str(shown),
        }
    }
}

/// The client of a request from `peer`. From a peer that is not a trusted proxy,
/// `X-Forwarded-For` is ignored. From a trusted one, the entries of every `X-Forwarded-For`
/// header (in order, as if joined by commas) are walked from the right: trusted proxies are
/// passed, the first other entry is the client. When every entry is a trusted proxy, the
/// leftmost is (the farthest hop the chain vouches for); with no entry at all, the peer is.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| contains(n, ip));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return ClientAddr::Ip(peer);
    }
    let mut farthest = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in value.as_bytes().rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            let parsed = std::str::from_utf8(entry)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok());
            match parsed {
                Some(ip) if is_trusted(ip) => farthest = canonical(ip),
                Some(ip) => return ClientAddr::Ip(canonical(ip)),
                None => return ClientAddr::Unparsed(shown(entry)),
            }
        }
    }
    ClientAddr::Ip(farthest)
}

/// An entry as written, bounded and escaped for a log line.
fn shown(entry: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(entry.len().min(MAX_SHOWN) + 3);
    for &b in entry.iter().take(MAX_SHOWN) {
        if (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if entry.len() > MAX_SHOWN {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn local_proxy() -> Vec<IpNet> {
        vec!["127.0.0.1/32".parse().unwrap()]
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&[b"203.0.113.9, 198.51.100.7, 10.1.1.1"]);
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip(peer, &h, &trusted),
            ClientAddr::Ip(ip("198.51.100.7"))
        );
        let outsider = ip("192.0.2.1");
        assert_eq!(client_ip(outsider, &h, &trusted), ClientAddr::Ip(outsider));
        let garbage = xff(&[b"garbage"]);
        assert_eq!(
            client_ip(outsider, &garbage, &trusted),
            ClientAddr::Ip(outsider)
        );
        // No header: the proxy itself is the client.
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &trusted),
            ClientAddr::Ip(peer)
        );
    }

    #[test]
    fn an_entry_that_is_not_an_address_is_the_client_never_the_proxy() {
        let peer = ip("127.0.0.1");
        for (header, shown) in [
            (&b"garbage, 203.0.113.9"[..], None),
            (b"203.0.113.9:4711", Some("203.0.113.9:4711")),
            (b"unknown", Some("unknown")),
            (b"unknown, 127.0.0.1", Some("unknown")),
            (b"[2001:db8::1]:80", Some("[2001:db8::1]:80")),
            (b"10.1.1.1, , 127.0.0.1", Some("")),
            (b"", Some("")),
            (b"a\"b\\c\xff\te", Some("a\\x22b\\x5cc\\xff\\x09e")),
        ] {
            let got = client_ip(peer, &xff(&[header]), &local_proxy());
            let what = String::from_utf8_lossy(header);
            match shown {
                // The rightmost entry is an address and not trusted: it is the client, and the
                // garbage to its left (written by the client) does not matter.
                None => assert_eq!(got, ClientAddr::Ip(ip("203.0.113.9")), "{what}"),
                Some(s) => {
                    assert_eq!(got, ClientAddr::Unparsed(s.into()), "{what}");
                    assert_eq!(got.ip(), None, "{what}: no address for ip rules or lockout");
                    assert_eq!(got.to_string(), s, "{what}");
                }
            }
            assert_ne!(got, ClientAddr::Ip(peer), "{what}: never the proxy");
        }
        // Garbage to the right of an address is the client.
        let got = client_ip(peer, &xff(&[b"203.0.113.9, garbage"]), &local_proxy());
        assert_eq!(got, ClientAddr::Unparsed("garbage".into()));
    }

    #[test]
    fn an_unparsed_entry_is_bounded_in_the_record() {
        let long = vec![b'x'; 10_000];
        let got = client_ip(ip("127.0.0.1"), &xff(&[&long]), &local_proxy());
        let ClientAddr::Unparsed(shown) = got else {
            panic!("{got:?}")
        };
        assert_eq!(shown, format!("{}...", "x".repeat(MAX_SHOWN)));
    }

    #[test]
    fn several_headers_are_one_chain_in_order() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let peer = ip("127.0.0.1");
        let h = xff(&[
            b"198.51.100.1, 203.0.113.9",
            b"10.0.0.2",
            b"10.0.0.3, 127.0.0.1",
        ]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            ClientAddr::Ip(ip("203.0.113.9"))
        );
        let h = xff(&[b"203.0.113.9", b"garbage", b"10.0.0.3"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            ClientAddr::Unparsed("garbage".into())
        );
        // Every entry a trusted proxy: the farthest of them.
        let h = xff(&[b"10.0.0.9", b"10.0.0.3"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            ClientAddr::Ip(ip("10.0.0.9"))
        );
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_are_ipv4() {
        let peer = ip("::ffff:127.0.0.1");
        let h = xff(&[b"::ffff:203.0.113.9"]);
        assert_eq!(
            client_ip(peer, &h, &local_proxy()),
            ClientAddr::Ip(ip("203.0.113.9"))
        );
        let h = xff(&[b"203.0.113.9, ::ffff:127.0.0.1"]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &local_proxy()),
            ClientAddr::Ip(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &[]),
            ClientAddr::Ip(ip("127.0.0.1"))
        );
    }
}
