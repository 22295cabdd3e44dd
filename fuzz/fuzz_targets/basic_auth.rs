//! The Basic-auth reader: any header bytes (one or two Authorization headers) give credentials,
//! none, or a 401 (a failed authentication), never a panic.
#![no_main]

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use purser_server::request::basic_credentials;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    // A 0xFF byte splits the input into two header values, to reach the duplicate check.
    for part in data.splitn(2, |b| *b == 0xFF) {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(header::AUTHORIZATION, v);
        }
    }
    let count = headers.get_all(header::AUTHORIZATION).iter().count();
    match basic_credentials(&headers) {
        Ok(Some(c)) => {
            assert_eq!(count, 1);
            assert!(!c.username.contains(':'));
            assert!(!c.username.contains('\0'));
        }
        Ok(None) => assert_eq!(count, 0),
        Err(e) => assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED),
    }
});
