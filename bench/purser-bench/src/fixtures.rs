//! The benchmark's own users, groups, policies, server configuration and requests, generated
//! fresh at every run (no secret is checked in).

use std::fmt::Write as _;
use std::path::Path;

use data_encoding::BASE64;

/// Teams the active users belong to (group `team<k>`).
pub const TEAMS: usize = 20;
/// Rules of the large policy that precede the ten everyday rules.
pub const PROJECT_RULES: usize = 9_990;
/// The service every request names.
pub const SERVICE: &str = "registry.local";
pub const ISSUER: &str = "purser-bench";

/// The users that send requests: names and passwords, with their bcrypt hashes.
#[derive(Clone, Debug)]
pub struct ActiveUsers {
    pub users: Vec<(String, String)>,
    pub hashes: Vec<String>,
}

pub fn user_name(i: usize) -> String {
    format!("u{i:03}")
}

impl ActiveUsers {
    /// `n` users with distinct passwords hashed at `cost`, on every core (bcrypt is slow on
    /// purpose: 100 hashes at cost 10 are a few seconds of CPU).
    pub fn generate(n: usize, cost: u32) -> anyhow::Result<ActiveUsers> {
        let users: Vec<(String, String)> = (0..n)
            .map(|i| (user_name(i), format!("pw-{i}-{}", random_hex())))
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = n.div_ceil(threads).max(1);
        let hashes = std::thread::scope(|s| {
            let handles: Vec<_> = users
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(_, pw)| {
                                bcrypt::hash(pw, cost).map(|h| h.replacen("$2b$", "$2y$", 1))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("hashing thread"))
                .collect::<Result<Vec<Vec<String>>, _>>()
        })?;
        Ok(ActiveUsers {
            users,
            hashes: hashes.into_iter().flatten().collect(),
        })
    }
}

fn random_hex() -> String {
    data_encoding::HEXLOWER.encode(&rand::random::<[u8; 8]>())
}

/// An htpasswd file of `total` users: the active ones first, then filler accounts that share one
/// hash (a file of 100,000 distinct cost-10 hashes would take over an hour of CPU to make, and
/// the server's cost of holding and looking up a user does not depend on the hash's value).
pub fn write_htpasswd(
    path: &Path,
    active: &ActiveUsers,
    total: usize,
    filler_hash: &str,
) -> std::io::Result<()> {
    let mut text = String::with_capacity(total * 72);
    for ((name, _), hash) in active.users.iter().zip(&active.hashes) {
        let _ = writeln!(text, "{name}:{hash}");
    }
    for i in active.users.len()..total {
        let _ = writeln!(text, "filler{i:06}:{filler_hash}");
    }
    std::fs::write(path, text)
}

/// The groups of the active users: `team<i % 20>`, two admins, two contractors.
pub fn write_htgroup(path: &Path, active: &ActiveUsers) -> std::io::Result<()> {
    let n = active.users.len();
    let mut text = String::new();
    for k in 0..TEAMS {
        let members: Vec<String> = (k..n).step_by(TEAMS).map(user_name).collect();
        if !members.is_empty() {
            let _ = writeln!(text, "team{k}: {}", members.join(" "));
        }
    }
    let _ = writeln!(text, "admins: {}", user_name(0));
    if n > 2 {
        let _ = writeln!(text, "contractors: {}", user_name(n - 1));
    }
    std::fs::write(path, text)
}

/// The ten everyday rules of a registry: admins, own namespaces, team namespaces by group,
/// an explicit deny, public and library reads, a regex, the catalog.
const EVERYDAY_RULES: &str = r#"  - name: admins
    match: { groups: [admins] }
    actions: ["*"]
  - name: nothing for contractors
    match: { groups: [contractors] }
    actions: []
  - name: own namespace
    match: { account: "*", name: "${account}/**" }
    actions: [pull, push, delete]
  - name: team namespaces
    match: { type: repository, name: "${group}/**" }
    actions: [pull, push]
  - name: releases
    match: { account: "*", name: "release/**" }
    actions: [pull]
  - name: library
    match: { name: "library/*" }
    actions: [pull]
  - name: mirrors
    match: { name: "/mirror-[a-z]+/.+/" }
    actions: [pull]
  - name: sandbox
    match: { account: "*", name: "sandbox/**" }
    actions: [pull, push, delete]
  - name: catalog
    match: { groups: [admins], type: registry, name: catalog }
    actions: ["*"]
  - name: public
    match: { name: "public/**" }
    actions: [pull]
"#;

/// A policy of `10` rules, or of `10,000`: 9,990 project rules (each for one team, with
/// glob names of different shapes) before the same ten everyday rules, so that a plain scan
/// would walk nearly all of them for most requests.
pub fn policy(large: bool) -> String {
    let mut text = String::from("rules:\n");
    if large {
        for i in 0..PROJECT_RULES {
            let team = i % TEAMS;
            let name = match i % 3 {
                0 => format!("proj{i:04}/**"),
                1 => format!("proj{i:04}/svc-*"),
                _ => format!("proj{i:04}/*/cache"),
            };
            let _ = writeln!(
                text,
                "  - name: project {i}\n    match: {{ groups: [team{team}], name: \"{name}\" }}\n    actions: [pull, push]"
            );
        }
    }
    text.push_str(EVERYDAY_RULES);
    text
}

/// The scope a user asks for as request number `r` of its rotation, like a fleet of CI jobs:
/// team repositories, their own namespace, library and public images, releases and projects.
pub fn scope_for(user: usize, r: usize) -> String {
    let team = user % TEAMS;
    match r % 6 {
        0 => format!("repository:team{team}/app{}:pull,push", r % 50),
        1 => format!("repository:{}/tool{}:pull,push", user_name(user), r % 10),
        2 => format!("repository:library/alpine{}:pull", r % 5),
        3 => format!("repository:public/base{}:pull", r % 10),
        4 => format!("repository:release/r{}:pull", r % 20),
        _ => format!(
            "repository:proj{:04}/svc-{}:pull",
            (r * 37 + user) % PROJECT_RULES,
            r % 7
        ),
    }
}

/// Percent-encodes a query value as Go's `url.Values` does (what docker and skopeo send).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `count` token requests rotating over the users, each with `scopes` scopes.
pub fn token_requests(active: &ActiveUsers, scopes: usize, count: usize) -> Vec<String> {
    let n = active.users.len();
    (0..count)
        .map(|r| {
            let u = (r * 13) % n;
            let (name, pw) = &active.users[u];
            let mut query = format!("account={name}&client_id=purser-bench&service={SERVICE}");
            for k in 0..scopes {
                let _ = write!(query, "&scope={}", query_escape(&scope_for(u, r + k)));
            }
            let basic = BASE64.encode(format!("{name}:{pw}").as_bytes());
            format!(
                "GET /token?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: purser-bench\r\nAuthorization: Basic {basic}\r\n\r\n"
            )
        })
        .collect()
}

/// One request per active user: sent before a warm-path run so every login is in the cache.
pub fn priming_requests(active: &ActiveUsers) -> Vec<String> {
    let n = active.users.len();
    let all = token_requests(active, 1, n * 13);
    // Request r is for user (r * 13) % n; pick the first request of each user.
    let mut seen = vec![false; n];
    all.into_iter()
        .enumerate()
        .filter(|(r, _)| {
            let u = (r * 13) % n;
            !std::mem::replace(&mut seen[u], true)
        })
        .map(|(_, req)| req)
        .collect()
}

pub const HEALTHZ_REQUEST: &str =
    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: purser-bench\r\n\r\n";

/// The files of one server configuration.
pub struct ServerFiles<'a> {
    pub listen: &'a str,
    pub key_file: &'a Path,
    pub htpasswd: &'a Path,
    pub htgroup: &'a Path,
    pub policy: &'a Path,
    /// `authn.cache_ttl`: `"60s"` for the warm path, `"0s"` for the cold one.
    pub cache_ttl: &'a str,
    /// A tokens file: the chain is `[tokens]` alone.
    pub tokens: Option<&'a Path>,
    /// `state.redis.url` for `state.backend: redis`; `None`: the memory store.
    pub redis_url: Option<&'a str>,
    /// OIDC logins (`authn.order: [oidc]`): the issuer URL and its CA file.
    pub oidc: Option<(&'a str, &'a Path)>,
}

/// purser's configuration for one scenario: defaults everywhere else (log level info, so the
/// audit line of every request is written, as in production).
pub fn server_config(f: &ServerFiles<'_>) -> String {
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("a string");
    let text = format!(
        "server:\n  listen: \"{listen}\"\nmetrics:\n  listen: \"\"\nlog:\n  level: info\ntoken:\n  issuer: \"{ISSUER}\"\n  service: [\"{SERVICE}\"]\n  signing_key_file: {key}\n  generate_key: false\nauthn:\n  order: [htpasswd]\n  cache_ttl: {ttl}\n  htpasswd:\n    file: {htpasswd}\n    groups_file: {htgroup}\nauthz:\n  policy_file: {policy}\n",
        listen = f.listen,
        key = q(f.key_file),
        ttl = f.cache_ttl,
        htpasswd = q(f.htpasswd),
        htgroup = q(f.htgroup),
        policy = q(f.policy),
    ) + &match f.redis_url {
        Some(url) => format!("state:\n  backend: redis\n  redis:\n    url: \"{url}\"\n"),
        None => String::new(),
    };
    let text = match f.oidc {
        // The templates give the same account and groups the htpasswd and htgroup files do.
        Some((issuer, ca)) => text.replace(
            "  order: [htpasswd]\n",
            &format!(
                "  order: [oidc]\n  oidc:\n    issuers:\n      - issuer: \"{issuer}\"\n        audience: [\"{SERVICE}\"]\n        account: \"${{claims.sub}}\"\n        groups: [\"${{claims.team}}\", \"${{claims.role}}\"]\n        algorithms: [RS256]\n        ca_file: {}\n        max_token_lifetime: 4h\n",
                q(ca)
            ),
        ),
        None => text,
    };
    match f.tokens {
        Some(t) => text.replace(
            "  order: [htpasswd]\n",
            &format!("  order: [tokens]\n  tokens:\n    file: {}\n", q(t)),
        ),
        None => text,
    }
}

/// A tokens file with one machine token per active user, named like the user (so the policy's
/// `${account}` rules apply alike); returns the (name, secret) pairs.
pub fn write_tokens(path: &Path, active: &ActiveUsers) -> anyhow::Result<ActiveUsers> {
    use purser_authn::tokens::{generate_secret, secret_sha256, NewToken};
    let mut text = String::new();
    let mut users = Vec::with_capacity(active.users.len());
    for (name, _) in &active.users {
        let secret = generate_secret();
        text.push_str(
            &NewToken {
                name,
                account: name,
                groups: &[],
                scopes: None,
                sha256: &secret_sha256(&secret),
                created: 0,
                expires: None,
                description: "purser-bench",
            }
            .render(),
        );
        users.push((name.clone(), secret));
    }
    std::fs::write(path, text)?;
    Ok(ActiveUsers {
        users,
        hashes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use purser_core::{Identity, RequestContext, ResourceScope};

    fn few_users() -> ActiveUsers {
        ActiveUsers::generate(25, 4).unwrap()
    }

    #[test]
    fn users_are_distinct_and_hashes_verify() {
        let a = few_users();
        assert_eq!(a.users.len(), 25);
        assert_eq!(a.hashes.len(), 25);
        for ((_, pw), h) in a.users.iter().zip(&a.hashes) {
            assert!(h.starts_with("$2y$04$"));
            assert!(bcrypt::verify(pw, h).unwrap());
        }
        let mut names: Vec<_> = a.users.iter().map(|u| &u.0).collect();
        names.dedup();
        assert_eq!(names.len(), 25);
    }

    #[test]
    fn htpasswd_holds_every_user_once() {
        let a = few_users();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        write_htpasswd(&p, &a, 1000, &a.hashes[0]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text.starts_with(&format!("u000:{}\n", a.hashes[0])));
        let g = dir.path().join("groups");
        write_htgroup(&g, &a).unwrap();
        let groups = std::fs::read_to_string(&g).unwrap();
        assert!(groups.contains("team3: u003 u023\n"), "{groups}");
    }

    #[test]
    fn policies_parse_with_the_promised_sizes_and_decide_alike() {
        let small = purser_authz::Policy::parse(&policy(false), "small.yaml").unwrap();
        let large = purser_authz::Policy::parse(&policy(true), "large.yaml").unwrap();
        assert_eq!(small.rule_count(), 10);
        assert_eq!(large.rule_count(), 10_000);
        let ctx = RequestContext::default();
        for u in 0..40 {
            let who = Identity::new(user_name(u), vec![format!("team{}", u % TEAMS)]);
            for r in 0..12 {
                let scope: ResourceScope = scope_for(u, r).parse().unwrap();
                let g_small = small.authorize(&who, &ctx, &scope);
                let g_large = large.authorize(&who, &ctx, &scope);
                if r % 6 == 5 {
                    // Project scopes: only the large policy knows projects.
                    assert!(g_small.actions.is_empty());
                } else {
                    assert!(!g_small.actions.is_empty(), "{scope}");
                    assert_eq!(g_small.actions, g_large.actions, "{scope}");
                }
            }
        }
    }

    #[test]
    fn requests_rotate_users_and_carry_their_scopes() {
        let a = few_users();
        let reqs = token_requests(&a, 16, 100);
        assert_eq!(reqs.len(), 100);
        assert_eq!(reqs[0].matches("&scope=").count(), 16);
        assert!(reqs[0].starts_with("GET /token?account=u000&"));
        assert!(reqs[1].starts_with("GET /token?account=u013&"));
        assert!(reqs[0].ends_with("\r\n\r\n"));
        assert!(reqs[0].contains("scope=repository%3Ateam0%2Fapp0%3Apull%2Cpush"));
        let primes = priming_requests(&a);
        assert_eq!(primes.len(), 25);
        let mut users: Vec<&str> = Vec::new();
        for (i, r) in primes.iter().enumerate() {
            let u = &r["GET /token?account=".len().."GET /token?account=".len() + 4];
            users.push(u);
            assert!(u.starts_with('u'), "{i}: {u}");
        }
        users.sort_unstable();
        users.dedup();
        assert_eq!(users.len(), 25);
    }

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(query_escape("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn config_loads_in_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let yaml = server_config(&ServerFiles {
            listen: "127.0.0.1:1",
            key_file: &p("key.pem"),
            htpasswd: &p("users"),
            htgroup: &p("groups"),
            policy: &p("policy.yaml"),
            cache_ttl: "0s",
            tokens: None,
            redis_url: None,
            oidc: None,
        });
        std::fs::write(p("purser.yaml"), yaml).unwrap();
        let loaded = purser_server::config::Config::load(&purser_server::config::LoadOptions {
            config_file: Some(p("purser.yaml")),
            ..Default::default()
        })
        .unwrap();
        assert!(loaded.config.authn.cache_ttl.0.is_zero());
        assert_eq!(loaded.config.server.listen, "127.0.0.1:1");
        assert_eq!(loaded.config.authz.policy_file, p("policy.yaml"));
        // The redis scenario's section loads too.
        let yaml = server_config(&ServerFiles {
            listen: "127.0.0.1:1",
            key_file: &p("key.pem"),
            htpasswd: &p("users"),
            htgroup: &p("groups"),
            policy: &p("policy.yaml"),
            cache_ttl: "10m",
            tokens: None,
            redis_url: Some("redis://127.0.0.1:6379/0"),
            oidc: None,
        });
        std::fs::write(p("purser.yaml"), yaml).unwrap();
        let loaded = purser_server::config::Config::load(&purser_server::config::LoadOptions {
            config_file: Some(p("purser.yaml")),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            loaded.config.state.backend,
            purser_server::config::StateBackend::Redis
        );
    }
}
