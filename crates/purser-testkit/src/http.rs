//! A small HTTP/1.1 client for the tests, on hyper's client connection.

use std::collections::VecDeque;
use std::time::Duration;

use data_encoding::BASE64;
use hyper::body::Bytes;
use serde_json::Value;

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers in order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// An HTTP/1.1 client on hyper's client connection, one connection per request
/// (`Connection: close`): tests set any header and can send the body chunked. Tests that must
/// send bytes no client would (tests/e2e_hostile.rs) write to a raw socket instead.
pub struct Http {
    method: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    chunked: bool,
}

/// How long each step of a request (connect, answer, each piece of the body) may take.
const HTTP_STEP_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    // One small runtime per test thread: `send` stays synchronous like the rest of the harness.
    static HTTP_RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("tokio runtime for the test HTTP client");
}

impl Http {
    /// A GET of `url` (`http://` only).
    pub fn get(url: &str) -> Http {
        Http::new("GET", url)
    }
    /// A POST to `url` (`http://` only).
    pub fn post(url: &str) -> Http {
        Http::new("POST", url)
    }
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Http {
        Http {
            method: method.into(),
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            chunked: false,
        }
    }
    /// Appends `pairs`, form-encoded, to the URL's query.
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Http {
        self.query
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }
    /// Adds a header, sent as given (any bytes the header value type accepts).
    pub fn header(mut self, name: &str, value: &str) -> Http {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// HTTP Basic credentials, UTF-8.
    pub fn basic(self, user: &str, password: &str) -> Http {
        let v = format!(
            "Basic {}",
            BASE64.encode(format!("{user}:{password}").as_bytes())
        );
        self.header("Authorization", &v)
    }
    /// `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Http {
        self.header("Authorization", &format!("Bearer {token}"))
    }
    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, pairs: &[(&str, &str)]) -> Http {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body = Some(body.into_bytes());
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }
    /// Send the body with `Transfer-Encoding: chunked`.
    pub fn chunked(mut self) -> Http {
        self.chunked = true;
        self
    }

    /// Sends the request on a new connection and reads the whole answer; Err when the
    /// connection fails or a step takes longer than a minute.
    pub fn send(&self) -> std::io::Result<HttpResponse> {
        let rest = self.url.strip_prefix("http://").expect("only http:// URLs");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut target = path.to_string();
        if !self.query.is_empty() {
            let q = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.query)
                .finish();
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&q);
        }
        let bad = |e: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
        };
        let mut req = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(&target)
            .header("Host", authority)
            .header("Connection", "close")
            .header("User-Agent", "purser-e2e");
        for (k, v) in &self.headers {
            let v = hyper::header::HeaderValue::from_bytes(v.as_bytes()).map_err(|e| bad(&e))?;
            req = req.header(k.as_str(), v);
        }
        let mut parts = VecDeque::new();
        match &self.body {
            Some(body) if self.chunked => {
                req = req.header("Transfer-Encoding", "chunked");
                // Two chunks, to exercise reassembly.
                let mid = body.len() / 2;
                for part in [&body[..mid], &body[mid..]] {
                    if !part.is_empty() {
                        parts.push_back(Bytes::copy_from_slice(part));
                    }
                }
            }
            Some(body) => {
                req = req.header("Content-Length", body.len());
                parts.push_back(Bytes::copy_from_slice(body));
            }
            None if self.method == "POST" => req = req.header("Content-Length", 0),
            None => {}
        }
        let req = req.body(Parts(parts)).map_err(|e| bad(&e))?;
        let authority = authority.to_string();
        HTTP_RUNTIME.with(|rt| rt.block_on(exchange(&authority, req)))
    }
}

/// One request on a new connection, each step bounded by [`HTTP_STEP_TIMEOUT`].
async fn exchange(authority: &str, req: hyper::Request<Parts>) -> std::io::Result<HttpResponse> {
    use http_body_util::BodyExt;
    let step = |what: &'static str| {
        move |_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
    };
    let io_err = |e: hyper::Error| std::io::Error::other(e);
    let stream = tokio::time::timeout(HTTP_STEP_TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(step("connect"))??;
    // Header names as clients usually write them (`Transfer-Encoding`), for the tests that read
    // the raw request.
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(io_err)?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = tokio::time::timeout(HTTP_STEP_TIMEOUT, sender.send_request(req))
            .await
            .map_err(step("the answer"))?
            .map_err(io_err)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut incoming = resp.into_body();
        let mut body = Vec::new();
        while let Some(frame) = tokio::time::timeout(HTTP_STEP_TIMEOUT, incoming.frame())
            .await
            .map_err(step("the body"))?
        {
            if let Ok(data) = frame.map_err(io_err)?.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
    .await;
    conn.abort();
    result
}

/// A request body sent as the given pieces: one for a sized body, two (as two chunks) for a
/// chunked one. Never reported as ended before it is polled, so a chunked body that is empty
/// still goes out as the last chunk alone.
struct Parts(VecDeque<Bytes>);

impl hyper::body::Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }
}

/// Decodes a chunked body (no trailers), for the stand-in servers of the harness's self-tests
/// that read raw requests.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
