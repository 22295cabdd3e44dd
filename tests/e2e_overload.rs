//! Overload is shed, not queued: more concurrent token requests than the server's in-flight
//! bound, each needing a slow password check of its own (cost-12 bcrypt, credential cache off;
//! every request but one in a hundred sends a different wrong password, since identical logins
//! in flight share one check). Every
//! request past the bound, and every one that would wait too long for a password check, is
//! answered 503 with `Retry-After` at once; none waits for the 30-s request timeout; `/healthz`
//! answers throughout.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use purser_server::stack::MAX_IN_FLIGHT;
use purser_testkit::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// More than the server's in-flight bound ([`MAX_IN_FLIGHT`], 1,024).
const REQUESTS: usize = 1_300;
/// How quickly a shed request must be answered.
const SHED_WITHIN: Duration = Duration::from_secs(1);
/// Far below the request timeout (30 s): nobody may wait that long.
const NOBODY_WAITS: Duration = Duration::from_secs(15);

struct Answer {
    status: u16,
    retry_after: bool,
    took: Duration,
}

/// One GET over a fresh connection; the status, whether `Retry-After` came, and the time.
async fn request(port: u16, path: String, auth: Option<String>) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    // Timed from the request, not the connection: a burst of connections may wait in the
    // kernel's accept queue, which is not the server's answer.
    let started = Instant::now();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: Basic {a}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let head_end = text.find("\r\n\r\n").unwrap_or(text.len());
    let retry_after = text[..head_end]
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
    Ok(Answer {
        status,
        retry_after,
        took: started.elapsed(),
    })
}

fn config() -> Value {
    let mut c = base_config();
    let hash = bcrypt::hash("slow-secret", 12).expect("bcrypt");
    set_path(
        &mut c,
        "authn.static.users.slow",
        json!({ "password_hash": hash, "groups": [] }),
    );
    set_path(&mut c, "authn.cache_ttl", json!("0s"));
    c
}

#[test]
fn a_flood_past_the_in_flight_bound_is_shed_at_once_and_health_answers_throughout() {
    let p = Purser::start(config(), &[]);
    let port = p.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (answers, health) = rt.block_on(async move {
        let done = Arc::new(AtomicBool::new(false));
        // /healthz every 100 ms while the flood lasts.
        let probe = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !done.load(Ordering::Acquire) {
                    let a = tokio::time::timeout(
                        Duration::from_secs(5),
                        request(port, "/healthz".into(), None),
                    )
                    .await;
                    seen.push(match a {
                        Ok(Ok(a)) => (a.status, a.took),
                        _ => (0, Duration::from_secs(5)),
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seen
            })
        };
        let path = format!("/token?service={SERVICE}&scope=repository:slow/app:pull");
        let flood: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let password = if i % 100 == 0 {
                    "slow-secret".to_owned()
                } else {
                    format!("wrong-{i}")
                };
                let auth = BASE64.encode(format!("slow:{password}").as_bytes());
                let path = path.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(40), request(port, path, Some(auth)))
                        .await
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(REQUESTS);
        for f in flood {
            match f.await.expect("task") {
                Ok(Ok(a)) => answers.push(a),
                Ok(Err(e)) => panic!("a token request failed on the wire: {e}"),
                Err(_) => panic!("a token request got no answer within 40 s"),
            }
        }
        done.store(true, Ordering::Release);
        (answers, probe.await.expect("probe"))
    });

    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    // Served: answered after a password check, right (200) or wrong (401).
    let served = answers
        .iter()
        .filter(|a| a.status == 200 || a.status == 401)
        .count();
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    println!(
        "{REQUESTS} requests: {served} served, {} shed, slowest answer {slowest:?}; {} health probes",
        shed.len(),
        health.len()
    );
    assert!(
        answers
            .iter()
            .all(|a| a.status == 200 || a.status == 401 || a.status == 503),
        "statuses other than 200, 401 and 503: {:?}",
        answers
            .iter()
            .map(|a| a.status)
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        shed.len() >= REQUESTS - MAX_IN_FLIGHT,
        "only {} of {REQUESTS} requests were shed, though {} are past the in-flight bound",
        shed.len(),
        REQUESTS - MAX_IN_FLIGHT
    );
    assert!(served > 0, "no request was served");
    for a in &shed {
        assert!(a.retry_after, "a 503 without Retry-After");
        assert!(
            a.took < SHED_WITHIN,
            "a shed request waited {:?} for its 503",
            a.took
        );
    }
    assert!(
        slowest < NOBODY_WAITS,
        "a request waited {slowest:?}: requests are queued, not shed"
    );
    assert!(!health.is_empty(), "no health probe ran during the flood");
    for (status, took) in &health {
        assert_eq!(*status, 200, "/healthz failed during the flood");
        assert!(
            *took < SHED_WITHIN,
            "/healthz took {took:?} during the flood"
        );
    }
    let log = p.log_text();
    assert!(!log.contains("panicked"), "purser panicked:\n{log}");
}
