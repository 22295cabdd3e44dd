//! The load generator: closed-loop HTTP/1.1 keep-alive connections over loopback, each sending
//! the next request of its rotation as soon as the previous answer is read, plus an optional
//! probe connection that sends one request at a fixed interval (to see how a second endpoint
//! answers while the first one saturates the server).
//!
//! Requests are prepared byte strings, so the generator spends its time on the socket and not
//! on formatting. Answers are read by `Content-Length`; anything but a `200` counts as an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procstat;

/// What to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    /// Answers before this are not counted (caches fill, connections settle).
    pub warmup: Duration,
    /// The measured window, after the warmup.
    pub duration: Duration,
    /// The rotation of prepared requests; connection `i` starts at a different offset.
    pub requests: Vec<String>,
    /// A request sent every `probe_interval` on its own connection, measured separately.
    pub probe: Option<String>,
    pub probe_interval: Duration,
    /// The server process whose CPU time is read at the window's start and end.
    pub server_pid: Option<u32>,
}

/// Latency percentiles of a set of answers, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From latencies in microseconds (sorted here).
    pub fn of(mut us: Vec<u32>) -> Latency {
        if us.is_empty() {
            return Latency::default();
        }
        us.sort_unstable();
        let pick = |q: f64| {
            // Nearest rank: the smallest value with at least q of the samples at or below it.
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            f64::from(us[rank - 1]) / 1000.0
        };
        Latency {
            count: us.len() as u64,
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: f64::from(*us.last().expect("not empty")) / 1000.0,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// `200` answers completed inside the window.
    pub ok: u64,
    /// Non-`200` answers and connection failures, at any time of the run.
    pub errors: u64,
    pub first_error: Option<String>,
    pub window_secs: f64,
    pub per_second: f64,
    pub latency: Latency,
    pub probe: Option<Latency>,
    /// The server's CPU time (user + system) inside the window, in seconds.
    pub server_cpu_secs: Option<f64>,
    /// Bytes of the first `200` answer's body (to size the HTTP-limit endpoint).
    pub body_len: usize,
}

#[derive(Default)]
struct ConnOutcome {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    body_len: usize,
}

impl ConnOutcome {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Runs the spec on the current thread's runtime (the caller decides on which core).
pub fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(spec))
}

async fn run_async(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(!spec.requests.is_empty(), "no requests to send");
    anyhow::ensure!(spec.connections > 0, "at least one connection is needed");
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        spec.requests
            .iter()
            .map(|r| r.as_bytes().to_vec())
            .collect(),
    );
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let end = window_start + spec.duration;

    let mut tasks = Vec::new();
    for i in 0..spec.connections {
        let requests = requests.clone();
        let addr = spec.addr;
        // Spread the connections over the rotation so they do not ask for the same thing.
        let offset = (i * 7919) % requests.len();
        tasks.push(tokio::spawn(async move {
            closed_loop(addr, requests, offset, window_start, end).await
        }));
    }
    let probe = spec.probe.clone().map(|p| {
        let addr = spec.addr;
        let interval = spec.probe_interval;
        tokio::spawn(
            async move { probe_loop(addr, p.into_bytes(), interval, window_start, end).await },
        )
    });
    let pid = spec.server_pid;
    let sampler = tokio::spawn(async move {
        let pid = pid?;
        tokio::time::sleep_until(window_start.into()).await;
        let before = procstat::cpu_seconds(pid).ok()?;
        tokio::time::sleep_until(end.into()).await;
        let after = procstat::cpu_seconds(pid).ok()?;
        Some(after - before)
    });

    let mut all = ConnOutcome::default();
    for t in tasks {
        let o = t.await?;
        all.latencies_us.extend(o.latencies_us);
        all.ok += o.ok;
        all.errors += o.errors;
        if all.first_error.is_none() {
            all.first_error = o.first_error;
        }
        if all.body_len == 0 {
            all.body_len = o.body_len;
        }
    }
    let probe = match probe {
        Some(p) => {
            let o = p.await?;
            all.errors += o.errors;
            if all.first_error.is_none() {
                all.first_error = o.first_error;
            }
            Some(Latency::of(o.latencies_us))
        }
        None => None,
    };
    let server_cpu_secs = sampler.await?;
    let window_secs = spec.duration.as_secs_f64();
    Ok(LoadResult {
        ok: all.ok,
        errors: all.errors,
        first_error: all.first_error,
        window_secs,
        per_second: all.ok as f64 / window_secs,
        latency: Latency::of(all.latencies_us),
        probe,
        server_cpu_secs,
        body_len: all.body_len,
    })
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn closed_loop(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    offset: usize,
    window_start: Instant,
    end: Instant,
) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let mut conn: Option<Conn> = None;
    let mut next = offset;
    while Instant::now() < end {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(addr).await {
                Ok(s) => conn.insert(Conn::new(s)),
                Err(e) => {
                    out.error(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let req = &requests[next];
        next = (next + 1) % requests.len();
        let sent = Instant::now();
        let answer = tokio::time::timeout_at(end.into(), c.exchange(req)).await;
        let done = Instant::now();
        match answer {
            // The run ended with this request in flight: not an answer, not an error.
            Err(_) => break,
            Ok(Err(e)) => {
                out.error(format!("exchange: {e}"));
                conn = None;
            }
            Ok(Ok((status, body_len, keep))) => {
                if status != 200 {
                    out.error(format!("status {status}"));
                } else if done >= window_start {
                    out.ok += 1;
                    let us = done.duration_since(sent).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                if out.body_len == 0 && status == 200 {
                    out.body_len = body_len;
                }
                if !keep {
                    conn = None;
                }
            }
        }
    }
    out
}

async fn probe_loop(
    addr: SocketAddr,
    request: Vec<u8>,
    interval: Duration,
    window_start: Instant,
    end: Instant,
) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(addr).await {
                Ok(s) => conn.insert(Conn::new(s)),
                Err(e) => {
                    out.error(format!("probe connect: {e}"));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match tokio::time::timeout_at(end.into(), c.exchange(&request)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                out.error(format!("probe: {e}"));
                conn = None;
            }
            Ok(Ok((status, _, keep))) => {
                let done = Instant::now();
                if status != 200 {
                    out.error(format!("probe status {status}"));
                } else if done >= window_start {
                    let us = done.duration_since(sent).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                if !keep {
                    conn = None;
                }
            }
        }
    }
    out
}

/// One keep-alive connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Largest answer head read; purser's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Largest answer body read.
const MAX_BODY: usize = 1024 * 1024;

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Sends one request and reads its answer: `(status, body length, keep-alive)`.
    async fn exchange(&mut self, req: &[u8]) -> std::io::Result<(u16, usize, bool)> {
        self.stream.write_all(req).await?;
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("answer head too long"));
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        if head.content_length > MAX_BODY {
            return Err(invalid("answer body too long"));
        }
        let total = head_end + head.content_length;
        while self.buf.len() < total {
            self.fill().await?;
        }
        self.buf.drain(..total);
        Ok((head.status, head.content_length, head.keep_alive))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
    keep_alive: bool,
}

/// The status and `Content-Length` of an answer head (through the blank line).
pub fn parse_answer_head(head: &[u8]) -> std::io::Result<(u16, usize)> {
    parse_head(head).map(|h| (h.status, h.content_length))
}

/// Parses an HTTP/1.1 answer head (status line and headers, through the blank line).
fn parse_head(head: &[u8]) -> std::io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("answer head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1.x answer"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let mut content_length = None;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked answers are not expected"));
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Head {
        status,
        content_length: content_length.unwrap_or(0),
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: 42,
                keep_alive: true
            }
        );
        let h = parse_head(
            b"HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, 401);
        assert!(!h.keep_alive);
        assert!(parse_head(b"SSH-2.0 hello\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = Latency::of((1..=100).map(|i| i * 1000).collect());
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        let one = Latency::of(vec![2500]);
        assert_eq!((one.p50_ms, one.p99_ms), (2.5, 2.5));
        assert_eq!(Latency::of(vec![]).count, 0);
    }
}
