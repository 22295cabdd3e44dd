//! The outermost layer: every request gets a random id, a tracing span carrying it (so every
//! log line of the request names it), and the `x-request-id` answer header.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> RequestIdService<S> {
        RequestIdService { inner }
    }
}

#[derive(Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

// === impl RequestIdService ===

impl<S, B, R> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = RequestId::new();
        let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
        let fut = {
            let _entered = span.enter();
            tracing::debug!("request received");
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let mut resp = fut.await?;
                resp.headers_mut().insert("x-request-id", id.header_value());
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// A request id: 64 random bits, shown as 16 hex digits, formatted only where it is written.
#[derive(Clone, Copy)]
struct RequestId(u64);

impl RequestId {
    fn new() -> Self {
        RequestId(rand::random())
    }

    /// The `x-request-id` header value, without a heap string.
    fn header_value(self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sixteen_hex_digits_in_log_and_header() {
        for n in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = RequestId(n);
            let shown = id.to_string();
            assert_eq!(shown, format!("{n:016x}"));
            assert_eq!(id.header_value().to_str().unwrap(), shown);
        }
    }
}
