//! Client addresses and the networks of `ip` rules, with IPv4 and its IPv6-mapped form
//! (`::ffff:a.b.c.d`) treated as one address.
//!
//! A dual-stack socket shows an IPv4 client as `::ffff:10.1.2.3`, and an operator may write a
//! range either way (`10.0.0.0/8` or `::ffff:10.0.0.0/104`). Both sides are brought to one
//! spelling: a mapped address becomes IPv4, a mapped network of prefix 96 or more becomes the
//! IPv4 network of prefix - 96. An IPv6 network shorter than /96 that holds the mapped space
//! (`::/0`, `::ffff:0:0/95`) holds every IPv4 address too, since each IPv4 address *is* an
//! address of that space; [`contains`] answers so, rather than refusing such networks at load.
//!
//! ```
//! use purser_authz::net::{contains, normalise};
//! let mapped: ipnet::IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
//! assert_eq!(normalise(mapped).to_string(), "10.0.0.0/8");
//! assert!(contains(&mapped, "10.1.2.3".parse().unwrap()));
//! assert!(contains(&"10.0.0.0/8".parse().unwrap(), "::ffff:10.1.2.3".parse().unwrap()));
//! assert!(contains(&"::/0".parse().unwrap(), "192.0.2.1".parse().unwrap()));
//! ```

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A network inside the mapped space `::ffff:0:0/96` as the IPv4 network it covers; any other
/// network truncated to its prefix (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn normalise(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .unwrap_or_else(|_| Ipv4Net::from(Ipv4Addr::UNSPECIFIED));
                return IpNet::V4(v4.trunc());
            }
        }
    }
    net
}

/// Whether `net` holds `ip`, either spelling of an IPv4 address on either side.
pub fn contains(net: &IpNet, ip: IpAddr) -> bool {
    holds(&normalise(*net), canonical(ip))
}

/// [`contains`] for a network already [`normalise`]d and an address already [`canonical`]
/// (the policy does both once, at load and per request).
pub(crate) fn holds(net: &IpNet, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => net.contains(&ip) || net.contains(&IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => net.contains(&ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_networks_become_ipv4() {
        for (written, want) in [
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:10.1.2.3/104", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:192.0.2.7/128", "192.0.2.7/32"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("fd00::1/8", "fd00::/8"),
            // Shorter than /96: an IPv6 network, kept as written.
            ("::ffff:0:0/95", "::fffe:0:0/95"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(normalise(net(written)), net(want), "{written}");
        }
    }

    #[test]
    fn either_spelling_of_a_client_matches_either_spelling_of_a_range() {
        for range in ["10.0.0.0/8", "::ffff:10.0.0.0/104", "::ffff:a00:0/104"] {
            for client in ["10.1.2.3", "::ffff:10.1.2.3"] {
                assert!(contains(&net(range), ip(client)), "{range} holds {client}");
            }
            for client in ["11.1.2.3", "::ffff:11.1.2.3", "::a01:203", "fd00::1"] {
                assert!(!contains(&net(range), ip(client)), "{range} lacks {client}");
            }
        }
    }

    #[test]
    fn ipv6_networks_holding_the_mapped_space_hold_ipv4_clients() {
        for range in ["::/0", "::ffff:0:0/95", "::/64", "::/80"] {
            for client in ["10.1.2.3", "::ffff:10.1.2.3", "0.0.0.0", "255.255.255.255"] {
                assert!(contains(&net(range), ip(client)), "{range} holds {client}");
            }
        }
        // Networks beside the mapped space hold no IPv4 client.
        for range in [
            "fd00::/8",
            "2001:db8::/32",
            "::fffe:0:0/96",
            "::1/128",
            "64:ff9b::/96",
        ] {
            for client in ["10.1.2.3", "::ffff:10.1.2.3"] {
                assert!(!contains(&net(range), ip(client)), "{range} lacks {client}");
            }
        }
        assert!(contains(&net("::/0"), ip("fd00::1")));
        assert!(!contains(&net("0.0.0.0/0"), ip("fd00::1")));
    }
}
