//! The HTTP client of the online checks: hyper's HTTP/1.1 client connection over a tokio TCP
//! stream, one connection per request, plain `http://` only (an `https://` registry or realm is
//! named as such: check it with curl). Connecting and every later step of the exchange (the
//! response head, each piece of the body) wait at most [`HTTP_TIMEOUT`] each, like a socket
//! read timeout, and a body larger than [`MAX_RESPONSE`] is refused.
//!
//! The doctor runs from the synchronous command line, so the client owns a small current-thread
//! runtime and blocks on it; it must not be used from inside another tokio runtime.

use std::net::ToSocketAddrs;
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, CONNECTION, HOST, USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::time::timeout;

use super::{SimpleUrl, HTTP_TIMEOUT, MAX_RESPONSE};

/// An HTTP response, as much as the doctor needs.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, values as sent (non-UTF-8 bytes replaced).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Blocking GETs with bounds; see the module's documentation.
#[derive(Debug)]
pub struct HttpClient {
    rt: Runtime,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// A client with the doctor's bounds ([`HTTP_TIMEOUT`], [`MAX_RESPONSE`]).
    pub fn new() -> Result<HttpClient, String> {
        Self::with_limits(HTTP_TIMEOUT, MAX_RESPONSE)
    }

    pub(crate) fn with_limits(timeout: Duration, max_body: usize) -> Result<HttpClient, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(HttpClient {
            rt,
            timeout,
            max_body,
        })
    }

    /// One GET of an `http://` URL, with an optional `Authorization` header.
    pub fn get(&self, url: &str, authorization: Option<&str>) -> Result<Response, String> {
        let u = SimpleUrl::parse(url).ok_or_else(|| format!("{url:?} is not an http URL"))?;
        if u.scheme != "http" {
            return Err(format!(
                "{url} uses https, which doctor does not speak; check it with curl"
            ));
        }
        self.rt.block_on(self.fetch(&u, authorization))
    }

    async fn fetch(&self, u: &SimpleUrl, authorization: Option<&str>) -> Result<Response, String> {
        let authority = u.authority();
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority} resolves to no address"))?;
        let cannot_connect = |e: String| format!("cannot connect to {authority}: {e}");
        let stream = timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| cannot_connect("timed out".into()))?
            .map_err(|e| cannot_connect(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot_connect(e.to_string()))?;
        // The connection is driven beside the request; `Connection: close` ends it once the
        // response is read, and the guard stops it on every early return.
        let _conn = AbortOnDrop(tokio::spawn(conn));

        let mut req = http::Request::get(u.target())
            .header(HOST, &authority)
            .header(USER_AGENT, "purser-doctor")
            .header(ACCEPT, "application/json")
            .header(CONNECTION, "close");
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot make a request to {authority}: {e}"))?;
        let no_answer = |e: String| format!("no answer from {authority}: {e}");
        let not_http = || format!("{authority} answered something that is not HTTP");
        let resp = timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| no_answer("timed out".into()))?
            .map_err(|e| {
                if e.is_parse() {
                    not_http()
                } else {
                    no_answer(e.to_string())
                }
            })?;
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
        loop {
            let frame = timeout(self.timeout, incoming.frame())
                .await
                .map_err(|_| no_answer("timed out".into()))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| {
                if e.is_parse() {
                    not_http()
                } else {
                    no_answer(e.to_string())
                }
            })?;
            if let Ok(data) = frame.into_data() {
                if body.len() + data.len() > self.max_body {
                    return Err(format!(
                        "{authority} answered more than {} bytes: is it the right address?",
                        self.max_body
                    ));
                }
                body.extend_from_slice(&data);
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// One GET with a client of its own; [`HttpClient::get`] says more.
pub fn http_get(url: &str, authorization: Option<&str>) -> Result<Response, String> {
    HttpClient::new()?.get(url, authorization)
}

/// Stops the connection task when the request is done with it, however it ended.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
