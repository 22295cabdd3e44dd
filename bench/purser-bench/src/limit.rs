//! The HTTP limit: a minimal hyper endpoint that answers every request with the same
//! token-sized JSON body. It shares purser's transport (hyper HTTP/1.1 on a multi-threaded
//! tokio runtime, `TCP_NODELAY`) and does nothing else, so under the same load it shows what
//! the HTTP layer alone costs on the same core.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A JSON body shaped like a token answer, `len` bytes long (at least the fixed fields).
pub fn token_sized_body(len: usize) -> Bytes {
    let fixed =
        r#"{"token":"","access_token":"","expires_in":300,"issued_at":"2025-01-01T00:00:00Z"}"#;
    let filler = len.saturating_sub(fixed.len()) / 2;
    let token = "x".repeat(filler);
    Bytes::from(format!(
        r#"{{"token":"{token}","access_token":"{token}","expires_in":300,"issued_at":"2025-01-01T00:00:00Z"}}"#
    ))
}

/// Serves `body` on `addr` until the process is stopped.
pub fn serve(addr: SocketAddr, body: Bytes) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let mut r = Response::new(Full::new(body.clone()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(r) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_asked_size_and_is_json() {
        for len in [200, 1300, 2400] {
            let b = token_sized_body(len);
            assert!(b.len().abs_diff(len) <= 1, "{} vs {len}", b.len());
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["token"], v["access_token"]);
        }
    }
}
