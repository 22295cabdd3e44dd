//! A barrage of malformed and hostile requests against a running purser, written byte for byte
//! on raw TCP connections: duplicate credentials, request smuggling shapes, invalid UTF-8 and NUL
//! bytes, random bytes, 1 MiB headers, 10,000 scopes, oversized bodies, and slowloris
//! connections that never finish their headers. Every answer is a 4xx (or a 503 with
//! `Retry-After` when load is shed), the process stays up, and well-formed requests made during
//! the barrage are served.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use purser_testkit::*;
use rand::{Rng, RngCore, SeedableRng};

/// What came back on a raw connection: a status (with its headers), or the connection closed
/// without an answer.
#[derive(Debug)]
enum Answer {
    Status(u16, String),
    Closed,
}

/// Writes `bytes` on a fresh connection and reads the first response head. Write errors are
/// expected (the server may answer and close before a huge request is fully sent).
fn raw(port: u16, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.flush();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            // A reset after the server answered and closed on unread input.
            Err(_) => break,
        }
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer::Closed;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable status line: {head:?}"));
    Answer::Status(status, head)
}

/// What a hostile request may get back.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A 4xx answer.
    ClientError,
    /// A 4xx answer, or the connection closed without one (input the HTTP parser cannot read).
    Refused,
    /// Anything but a server error: the hostile part is ignored (a header purser does not use).
    NoServerError,
    /// A malformed Authorization header: a failed authentication, 401 with the Basic challenge.
    Challenge,
}

/// The verdict on one hostile request. Whatever it was, a 5xx is only ever load shedding (503
/// with `Retry-After`).
fn check_answer(what: &str, answer: &Answer, expect: Expect) {
    match answer {
        Answer::Closed => assert!(
            !matches!(expect, Expect::ClientError),
            "{what}: the connection closed without the 4xx expected"
        ),
        Answer::Status(code, head) => {
            let shed = *code == 503 && head.to_ascii_lowercase().contains("retry-after:");
            assert!(
                *code < 500 || shed,
                "{what}: answered {code}, a server error other than load shedding\n{head}"
            );
            if matches!(expect, Expect::Challenge) && !shed {
                assert_eq!(
                    *code, 401,
                    "{what}: a malformed Authorization header is a failed authentication\n{head}"
                );
                assert!(
                    head.to_ascii_lowercase().contains(&format!(
                        "\r\nwww-authenticate: basic realm=\"{}\"",
                        ISSUER.to_ascii_lowercase()
                    )),
                    "{what}: the 401 carries the Basic challenge\n{head}"
                );
            }
            if !matches!(expect, Expect::NoServerError) {
                assert!(
                    (400..500).contains(code) || shed,
                    "{what}: answered {code}, expected a 4xx\n{head}"
                );
            }
        }
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        BASE64.encode(format!("{user}:{pass}").as_bytes())
    )
}

fn get(target: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

fn post(target: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra_headers}\r\n"
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

const Q: &str = "/token?service=registry.e2e&scope=repository:alice/app:pull";

/// Every hostile request of the barrage, named, with whether it must get a definite 4xx
/// (rather than possibly a closed connection).
fn barrage() -> Vec<(String, Vec<u8>, Expect)> {
    let alice = basic(ALICE.0, ALICE.1);
    let mut v: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: Expect| {
        v.push((name.to_string(), bytes, expect));
    };

    add(
        "duplicate Authorization",
        get(
            Q,
            &format!(
                "Authorization: {alice}\r\nAuthorization: {}\r\n",
                basic("bob", "x")
            ),
        ),
        Expect::Challenge,
    );
    add(
        "duplicate Authorization, both right",
        get(
            Q,
            &format!("Authorization: {alice}\r\nAuthorization: {alice}\r\n"),
        ),
        Expect::Challenge,
    );
    add(
        "Content-Length and Transfer-Encoding",
        post(
            "/token",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\nGET /token HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        Expect::ClientError,
    );
    add(
        "two different Content-Length",
        post(
            "/token",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            b"a=b&c",
        ),
        Expect::ClientError,
    );
    add(
        "negative Content-Length",
        post("/token", "Content-Length: -1\r\n", b""),
        Expect::ClientError,
    );
    add(
        "invalid UTF-8 (percent-encoded) in the query",
        get(
            "/token?service=registry.e2e&scope=repository:%FF%FE:pull",
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    add(
        "invalid UTF-8 (percent-encoded) in account",
        get(
            "/token?service=registry.e2e&account=al%C3ice",
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    let mut raw_query = b"GET /token?service=registry.e2e&account=".to_vec();
    raw_query.extend_from_slice(&[0xFF, 0xC3, 0x28]);
    raw_query.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    add(
        "raw invalid UTF-8 bytes in the request line",
        raw_query,
        Expect::Refused,
    );
    let mut raw_header = b"GET /token?service=registry.e2e HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic \xFF\xFE\xFD\r\n\r\n".to_vec();
    add(
        "raw invalid UTF-8 in Authorization",
        raw_header.clone(),
        Expect::Challenge,
    );
    raw_header = get(
        Q,
        &format!(
            "Authorization: Basic {}\r\n",
            BASE64.encode(b"alice:\xFF\xFEsecret")
        ),
    );
    add(
        "invalid UTF-8 inside Basic credentials",
        raw_header,
        Expect::Challenge,
    );
    add(
        "NUL inside Basic credentials",
        get(
            Q,
            &format!(
                "Authorization: Basic {}\r\n",
                BASE64.encode(b"alice\0:alice-secret")
            ),
        ),
        Expect::Challenge,
    );
    add(
        "NUL (percent-encoded) in the query",
        get(
            "/token?service=registry.e2e&scope=repository:a%00b:pull",
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    add(
        "raw NUL in a header",
        b"GET /token HTTP/1.1\r\nHost: t\r\nX-Thing: a\0b\r\nConnection: close\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "raw NUL in the request line",
        b"GET /tok\0en HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "invalid UTF-8 in a POST body",
        post(
            "/token",
            "Content-Length: 45\r\n",
            b"grant_type=password&username=al\xFFce&password=x",
        ),
        Expect::ClientError,
    );
    add(
        "percent-encoded invalid UTF-8 in a POST body",
        {
            let body = b"grant_type=password&service=registry.e2e&username=%FF&password=x";
            post(
                "/token",
                &format!("Content-Length: {}\r\n", body.len()),
                body,
            )
        },
        Expect::ClientError,
    );
    add(
        "NUL in a POST password",
        {
            let body = b"grant_type=password&service=registry.e2e&username=alice&password=a%00b";
            post(
                "/token",
                &format!("Content-Length: {}\r\n", body.len()),
                body,
            )
        },
        Expect::ClientError,
    );
    let big = "a".repeat(1 << 20);
    add(
        "1 MiB header",
        get(Q, &format!("X-Big: {big}\r\n")),
        Expect::Refused,
    );
    add(
        "1 MiB Authorization header",
        get(Q, &format!("Authorization: Basic {big}\r\n")),
        Expect::Refused,
    );
    let many_small: String = (0..20_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    add("20,000 headers", get(Q, &many_small), Expect::Refused);
    add(
        "1 MiB URL",
        get(&format!("/token?service=registry.e2e&x={big}"), ""),
        Expect::Refused,
    );
    let scopes_query: String = (0..10_000)
        .map(|i| format!("&scope=repository:r{i}:pull"))
        .collect();
    add(
        "10,000 scopes in the query",
        get(
            &format!("/token?service=registry.e2e{scopes_query}"),
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::Refused,
    );
    let scopes_body = format!("grant_type=password&service=registry.e2e&username=alice&password=alice-secret{scopes_query}");
    add(
        "10,000 scopes in a POST body",
        post(
            "/token",
            &format!("Content-Length: {}\r\n", scopes_body.len()),
            scopes_body.as_bytes(),
        ),
        Expect::ClientError,
    );
    let spaced: Vec<String> = (0..700).map(|i| format!("repository:r{i}:pull")).collect();
    let spaced = spaced.join("%20");
    add(
        "700 space-separated scopes in one parameter",
        get(
            &format!("/token?service=registry.e2e&scope={spaced}"),
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    let seventeen: String = (0..17)
        .map(|i| format!("&scope=repository:r{i}:pull"))
        .collect();
    add(
        "one scope more than max_scopes",
        get(
            &format!("/token?service=registry.e2e{seventeen}"),
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    add(
        "a repository name of 300 characters",
        get(
            &format!(
                "/token?service=registry.e2e&scope=repository:{}:pull",
                "a".repeat(300)
            ),
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    add(
        "an action of 100 characters",
        get(
            &format!(
                "/token?service=registry.e2e&scope=repository:a:{}",
                "p".repeat(100)
            ),
            &format!("Authorization: {alice}\r\n"),
        ),
        Expect::ClientError,
    );
    add(
        "a 1 MiB POST body",
        post(
            "/token",
            &format!("Content-Length: {}\r\n", big.len()),
            big.as_bytes(),
        ),
        Expect::ClientError,
    );
    let mut endless = b"POST /token HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..40 {
        endless.extend_from_slice(b"1000\r\n");
        endless.extend_from_slice(&[b'a'; 0x1000]);
        endless.extend_from_slice(b"\r\n");
    }
    add(
        "160 KiB of chunks, never ending",
        endless,
        Expect::ClientError,
    );
    add(
        "Basic with a 20 KiB password",
        get(
            Q,
            &format!("Authorization: {}\r\n", basic("alice", &"p".repeat(20_000))),
        ),
        Expect::ClientError,
    );
    add(
        "Basic with a 20 KiB user name",
        get(
            Q,
            &format!("Authorization: {}\r\n", basic(&"u".repeat(20_000), "p")),
        ),
        Expect::ClientError,
    );
    add(
        "Bearer instead of Basic",
        get(Q, "Authorization: Bearer abc.def.ghi\r\n"),
        Expect::Challenge,
    );
    add(
        "unknown method",
        b"BREW /token HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        Expect::ClientError,
    );
    add(
        "an HTTP/2 preface on HTTP/1.1",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add("a bare newline", b"\r\n\r\n".to_vec(), Expect::Refused);
    add(
        "a request line without a version",
        b"GET /token\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "a path traversal",
        get("/../../etc/passwd", ""),
        Expect::ClientError,
    );
    add(
        "X-Forwarded-For garbage",
        {
            let mut v = get(Q, "X-Forwarded-For: not-an-ip, ");
            v.truncate(v.len() - 2);
            v.extend_from_slice(b"\xFF\r\n\r\n");
            v
        },
        Expect::NoServerError,
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for i in 0..200 {
        let len = rng.gen_range(1..4096);
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        add(
            &format!("random bytes #{i} ({len} bytes)"),
            bytes,
            Expect::Refused,
        );
    }
    for i in 0..100 {
        // Random bytes after a plausible request line, so they reach the header parser.
        let len = rng.gen_range(1..2048);
        let mut bytes = b"GET /token?service=registry.e2e HTTP/1.1\r\n".to_vec();
        let mut tail = vec![0u8; len];
        rng.fill_bytes(&mut tail);
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(b"\r\n\r\n");
        add(&format!("random headers #{i}"), bytes, Expect::Refused);
    }
    v
}

/// A connection that sends part of a request head and then one more header byte at a time,
/// never finishing: the server must close it.
fn slowloris(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<bool> {
    thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        if s.write_all(b"GET /token?service=registry.e2e HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .is_err()
        {
            return true;
        }
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            if s.write_all(b"a").is_err() {
                return true;
            }
            match s.read(&mut byte) {
                // The server answered (a 408) or closed: either way it gave up on us.
                Ok(_) => return true,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    })
}

/// A connection that sends nothing at all.
fn silent(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<bool> {
    thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut byte = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut byte) {
                Ok(_) => return true,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    })
}

#[test]
fn hostile_requests_get_client_errors_and_the_server_keeps_serving() {
    let mut p = Purser::start(base_config(), &[]);
    let port = p.port();
    let stop = Arc::new(AtomicBool::new(false));

    // Slow clients hold connections open for the whole barrage.
    let slow: Vec<_> = (0..64)
        .map(|i| {
            if i % 2 == 0 {
                slowloris(port, stop.clone())
            } else {
                silent(port, stop.clone())
            }
        })
        .collect();

    // Well-formed requests all along.
    let good_stop = Arc::new(AtomicBool::new(false));
    let good = {
        let url = p.token_url();
        let good_stop = good_stop.clone();
        thread::spawn(move || {
            let mut served = 0usize;
            let mut failures = Vec::new();
            while (!good_stop.load(Ordering::Relaxed) || served < 5) && failures.len() < 20 {
                let r = Http::get(&url)
                    .query(&[("service", SERVICE), ("scope", "repository:alice/app:pull")])
                    .basic(ALICE.0, ALICE.1)
                    .send();
                match r {
                    Ok(r) if r.status == 200 => served += 1,
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (served, failures)
        })
    };

    // The barrage, from four threads at once.
    let requests = barrage();
    let chunks: Vec<Vec<(String, Vec<u8>, Expect)>> = {
        let mut chunks = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for (i, r) in requests.into_iter().enumerate() {
            chunks[i % 4].push(r);
        }
        chunks
    };
    let workers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            thread::spawn(move || {
                let mut seen = Vec::new();
                for (name, bytes, expect) in chunk {
                    let answer = raw(port, &bytes);
                    seen.push((name, answer, expect));
                }
                seen
            })
        })
        .collect();
    let mut answered = 0;
    for w in workers {
        for (name, answer, expect) in w.join().expect("barrage thread") {
            check_answer(&name, &answer, expect);
            if matches!(answer, Answer::Status(..)) {
                answered += 1;
            }
        }
    }
    assert!(
        answered > 40,
        "only {answered} hostile requests were answered"
    );

    // The server gives up on every slow connection by itself (header read timeout).
    let started = Instant::now();
    let limit = Duration::from_secs(90);
    let mut closed = 0;
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::park_timeout(limit);
            stop.store(true, Ordering::Relaxed);
        })
    };
    for h in slow {
        if h.join().expect("slow client thread") {
            closed += 1;
        }
    }
    stopper.thread().unpark();
    let _ = stopper.join();
    assert_eq!(
        closed,
        64,
        "the server kept slow connections open past {:?}\n{}",
        started.elapsed(),
        p.log_tail()
    );

    good_stop.store(true, Ordering::Relaxed);
    let (served, failures) = good.join().expect("well-formed client");
    assert!(
        failures.is_empty(),
        "well-formed requests failed during the barrage ({served} served): {failures:?}"
    );

    assert!(p.is_running(), "purser died\n{}", p.log_tail());
    let after = p.token_for(ALICE, &["repository:alice/app:pull"]);
    assert!(!after.is_empty());
    let log = p.log_text();
    assert!(
        !log.contains("panicked"),
        "purser panicked:\n{}",
        p.log_tail()
    );
    assert!(
        !log.contains(ALICE.1),
        "a password appeared in the log:\n{}",
        p.log_tail()
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets: the key, hashes and the LDAP bind password never reach logs or output.

/// Starts purser on an openssl-made key whose file has `mode`; returns it with the key's PEM.
fn start_with_key_mode(mode: u32) -> (Purser, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("purser-e2e-")
        .tempdir()
        .expect("tempdir");
    let key = dir.path().join(KEY_PATH);
    openssl_rsa_key_and_cert(&key, &key.with_file_name("signing.crt"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod key");
    let pem = std::fs::read_to_string(&key).expect("read key");
    std::fs::write(dir.path().join("policy.yaml"), POLICY).expect("write policy");
    let (port, metrics_port) = (free_port(), free_port());
    let mut config = base_config();
    set_path(
        &mut config,
        "server.listen",
        serde_json::json!(format!("127.0.0.1:{port}")),
    );
    set_path(
        &mut config,
        "metrics.listen",
        serde_json::json!(format!("127.0.0.1:{metrics_port}")),
    );
    set_path(&mut config, "log.level", serde_json::json!("trace"));
    let cfg = dir.path().join("purser.yaml");
    std::fs::write(&cfg, serde_json::to_string_pretty(&config).unwrap()).expect("config");
    let cwd = dir.path().to_path_buf();
    let args = vec![
        "serve".to_string(),
        "--config".to_string(),
        cfg.display().to_string(),
    ];
    let p = Purser::launch(dir, &cwd, &args, &[], port, metrics_port, key);
    (p, pem)
}

const READABLE_WARNING: &str = "readable by group or others";

/// No line of the key's base64 body appears in `text`.
fn assert_no_key_material(text: &str, pem: &str) {
    assert!(!text.contains("PRIVATE KEY"), "a PEM header was printed");
    for line in pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
    {
        assert!(!text.contains(line), "key material was printed: {line}");
    }
}

#[test]
fn a_signing_key_readable_by_others_is_warned_about_and_never_logged() {
    let (mut open, pem) = start_with_key_mode(0o644);
    // Use the key, with tracing at its most verbose.
    let token = open.token_for(ALICE, &["repository:alice/app:pull"]);
    open.stop();
    let log = open.log_text();
    let signature = token.rsplit('.').next().expect("a JWS");
    assert!(!log.contains(signature), "an issued token was logged");
    assert!(
        log.contains(READABLE_WARNING),
        "no warning for a 0644 key:\n{}",
        open.log_tail()
    );
    assert_no_key_material(&log, &pem);
    assert!(!log.contains(ALICE.1), "a password was logged");

    let (mut closed, pem) = start_with_key_mode(0o600);
    closed.token_for(ALICE, &["repository:alice/app:pull"]);
    closed.stop();
    let log = closed.log_text();
    assert!(
        !log.contains(READABLE_WARNING),
        "a 0600 key was warned about:\n{}",
        closed.log_tail()
    );
    assert_no_key_material(&log, &pem);
}

#[test]
fn check_config_redacts_hashes_and_the_bind_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bind_password = "bind-Pa55-never-shown";
    let hash = bcrypt_hash(ALICE.1);
    let mut config = base_config();
    set_path(
        &mut config,
        "authn.static.users",
        serde_json::json!({ "alice": { "password_hash": hash, "groups": [] } }),
    );
    set_path(
        &mut config,
        "authn.ldap",
        serde_json::json!({
            "urls": ["ldap://127.0.0.1:1"],
            "bind_dn": "cn=purser,dc=example,dc=org",
            "bind_password": bind_password,
            "user_base": "ou=people,dc=example,dc=org",
        }),
    );
    set_path(
        &mut config,
        "authn.order",
        serde_json::json!(["static", "ldap"]),
    );
    set_path(&mut config, "token.generate_key", serde_json::json!(true));
    std::fs::write(dir.path().join("policy.yaml"), POLICY).expect("policy");
    let cfg = dir.path().join("purser.yaml");
    std::fs::write(&cfg, serde_json::to_string_pretty(&config).unwrap()).expect("config");
    let out = run_purser(
        &["check-config", "--config", &cfg.display().to_string()],
        "",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}{stderr}");
    assert!(
        stdout.contains("<redacted>"),
        "check-config printed no redacted field:\n{all}"
    );
    assert!(stdout.contains("bind_password"), "{all}");
    assert!(
        !all.contains(bind_password),
        "the bind password was printed:\n{all}"
    );
    assert!(!all.contains(&hash), "a password hash was printed:\n{all}");
    assert!(!all.contains("$2"), "a bcrypt hash was printed:\n{all}");
}
