//! The client against one-shot servers on raw sockets, so each answer is exactly the bytes given.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// Serves one connection: reads the request head, writes `answer` (unless `None`: then holds
/// the connection open, silent, until the client goes), and returns the request head.
fn one_shot(answer: Option<&'static [u8]>) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        match answer {
            Some(a) => {
                let _ = s.write_all(a);
            }
            // Until the client closes its side.
            None => while matches!(s.read(&mut buf), Ok(n) if n > 0) {},
        }
        String::from_utf8_lossy(&req).into_owned()
    });
    (url, server)
}

#[test]
fn chunked_answers_are_decoded_and_the_request_is_plain() {
    let (url, server) = one_shot(Some(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    ));
    let r = http_get(&format!("{url}/v2/?a=b"), Some("Bearer t")).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
    assert_eq!(r.header("DATE"), Some("x"));
    let req = server.join().unwrap().to_ascii_lowercase();
    assert!(req.starts_with("get /v2/?a=b http/1.1\r\n"), "{req}");
    let host = url.strip_prefix("http://").unwrap();
    for h in [
        format!("host: {host}\r\n"),
        "authorization: bearer t\r\n".into(),
        "connection: close\r\n".into(),
        "user-agent: purser-doctor\r\n".into(),
    ] {
        assert!(req.contains(&h), "{h:?} missing from {req}");
    }
}

#[test]
fn sized_answers_stop_at_their_length() {
    let (url, _server) = one_shot(Some(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhiextra",
    ));
    let r = http_get(&url, None).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (401, &b"hi"[..]));
}

#[test]
fn bodies_beyond_the_bound_are_refused() {
    let (url, _server) = one_shot(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789",
    ));
    let client = HttpClient::with_limits(Duration::from_secs(10), 10).unwrap();
    let e = client.get(&url, None).unwrap_err();
    assert!(e.contains("answered more than 10 bytes"), "{e}");
    let client = HttpClient::with_limits(Duration::from_secs(10), 20).unwrap();
    let (url, _server) = one_shot(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789",
    ));
    assert_eq!(client.get(&url, None).unwrap().body.len(), 20);
}

#[test]
fn a_silent_server_times_out() {
    let (url, server) = one_shot(None);
    let client = HttpClient::with_limits(Duration::from_millis(300), 1024).unwrap();
    let started = Instant::now();
    let e = client.get(&url, None).unwrap_err();
    assert!(
        e.contains("no answer from") && e.contains("timed out"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
    server.join().unwrap();
}

#[test]
fn garbage_is_not_http_and_https_is_named() {
    let (url, _server) = one_shot(Some(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"));
    let e = http_get(&url, None).unwrap_err();
    assert!(e.ends_with("answered something that is not HTTP"), "{e}");
    let e = http_get("https://127.0.0.1:1/v2/", None).unwrap_err();
    assert!(e.contains("uses https, which doctor does not speak"), "{e}");
    let e = http_get("ftp://x/", None).unwrap_err();
    assert!(e.contains("is not an http URL"), "{e}");
}
