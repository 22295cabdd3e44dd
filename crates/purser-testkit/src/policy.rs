//! Helpers for the policy tests: editing a watched file the ways operators do, a background loop of token requests, and parsing `policy explain`
//! output and audit records.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::Http;
use crate::jwt::Jwt;
use crate::purser::{Purser, SERVICE};
use crate::wait::wait_until;

/// How soon an edit of the policy must be in force (the operator's promise).
pub const APPLY_BOUND: Duration = Duration::from_secs(2);
/// Bound on waiting for something that has no promised delay (a failure to be counted).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// `purser_reloads_total{source="policy",outcome=...}`.
pub fn policy_reloads(p: &Purser, outcome: &str) -> f64 {
    p.metric(
        "purser_reloads_total",
        &[("source", "policy"), ("outcome", outcome)],
    )
}

/// Writes `text` over `path` in place: same inode, truncated then written (most editors
/// without a backup file, `cat > file`).
pub fn write_in_place(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open policy for writing");
    f.write_all(text.as_bytes()).expect("write policy");
    f.sync_all().expect("sync policy");
}

/// Writes `text` to a temporary file beside `path` and renames it over `path` (vim, sed -i,
/// configuration management tools, Kubernetes-style atomic updates).
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().expect("file name").to_string_lossy()
    ));
    fs::write(&tmp, text).expect("write temporary policy");
    fs::rename(&tmp, path).expect("rename over policy");
}

/// Pads a policy with a trailing comment to exactly `len` bytes, so versions of different
/// content have the same size.
pub fn padded(text: &str, len: usize) -> String {
    let mut s = text.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    assert!(s.len() + 3 <= len, "policy longer than {len} bytes");
    s.push('#');
    while s.len() < len - 1 {
        s.push(' ');
    }
    s.push('\n');
    s
}

/// Rewrites `path` so that nothing but a signal can tell: in place, the same size (see
/// [`padded`]) and the modification time put back. Used on a file outside the folder purser
/// watches (reached through a symbolic link), so neither file events nor metadata polling
/// notice the change.
pub fn write_unnoticed(path: &Path, text: &str) {
    let before = fs::metadata(path).expect("stat policy");
    assert_eq!(
        before.len() as usize,
        text.len(),
        "an unnoticed edit must keep the size"
    );
    let mtime = before.modified().expect("mtime");
    write_in_place(path, text);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open policy");
    f.set_modified(mtime).expect("restore mtime");
    let after = fs::metadata(path).expect("stat policy");
    assert_eq!(after.modified().expect("mtime"), mtime);
}

/// The `access` claim of a token: `type:name` -> granted actions.
pub fn access_of(token: &str) -> BTreeMap<String, Vec<String>> {
    let jwt = Jwt::decode(token);
    let mut out = BTreeMap::new();
    for a in jwt.claims["access"].as_array().expect("access claim") {
        let key = format!(
            "{}:{}",
            a["type"].as_str().expect("type"),
            a["name"].as_str().expect("name")
        );
        let actions = a["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|x| x.as_str().expect("action").to_string())
            .collect();
        out.insert(key, actions);
    }
    out
}

/// `type:name` of a scope string `type:name:actions`.
pub fn resource_of(scope: &str) -> String {
    let (resource, _) = scope.rsplit_once(':').expect("scope has actions");
    resource.to_string()
}

/// GETs a token for `scopes` (Basic credentials unless anonymous, extra headers) and returns
/// the access claim; panics unless 200.
pub fn grants(
    p: &Purser,
    creds: Option<(&str, &str)>,
    scopes: &[&str],
    headers: &[(&str, &str)],
) -> BTreeMap<String, Vec<String>> {
    let mut q = vec![("service", SERVICE)];
    if let Some((user, _)) = creds {
        q.push(("account", user));
    }
    for s in scopes {
        q.push(("scope", s));
    }
    let mut req = Http::get(&p.token_url()).query(&q);
    if let Some((u, pw)) = creds {
        req = req.basic(u, pw);
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().expect("token request");
    assert_eq!(
        r.status,
        200,
        "token request failed: {}\n{}",
        r.text(),
        p.log_tail()
    );
    access_of(r.json()["token"].as_str().expect("token field"))
}

/// The actions granted on one scope.
pub fn granted(p: &Purser, creds: Option<(&str, &str)>, scope: &str) -> Vec<String> {
    grants(p, creds, &[scope], &[])
        .remove(&resource_of(scope))
        .unwrap_or_default()
}

/// What one request of the loop saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the request was sent.
    pub sent: Instant,
    /// When its answer arrived.
    pub received: Instant,
    /// The access claim of the token it got.
    pub access: BTreeMap<String, Vec<String>>,
}

/// A thread sending token requests in a loop until stopped; every answer must be a 200 whose
/// access claim satisfies `invariant`, and each one is recorded as the latest seen.
pub struct Hammer {
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<Option<Seen>>>,
    count: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Vec<String>>>,
}

impl Hammer {
    /// Starts the loop: GET `url` with `creds` (Basic) for `scopes`, again and again.
    pub fn start(
        url: String,
        creds: (&'static str, &'static str),
        scopes: Vec<String>,
        invariant: impl Fn(&BTreeMap<String, Vec<String>>) -> Result<(), String> + Send + 'static,
    ) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(None));
        let count = Arc::new(AtomicUsize::new(0));
        let handle = {
            let (stop, latest, count) = (stop.clone(), latest.clone(), count.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut q: Vec<(&str, &str)> = vec![("service", SERVICE), ("account", creds.0)];
                for s in &scopes {
                    q.push(("scope", s.as_str()));
                }
                while !stop.load(Ordering::Acquire) {
                    let sent = Instant::now();
                    let n = count.fetch_add(1, Ordering::AcqRel);
                    match Http::get(&url).query(&q).basic(creds.0, creds.1).send() {
                        Ok(r) if r.status == 200 => {
                            let token = r.json()["token"].as_str().unwrap_or_default().to_string();
                            let access = access_of(&token);
                            if let Err(e) = invariant(&access) {
                                failures.push(format!("request {n}: {e}"));
                            }
                            *latest.lock().expect("lock") = Some(Seen {
                                sent,
                                received: Instant::now(),
                                access,
                            });
                        }
                        Ok(r) => failures.push(format!("request {n}: {} {}", r.status, r.text())),
                        Err(e) => failures.push(format!("request {n}: {e}")),
                    }
                    if failures.len() > 50 {
                        break;
                    }
                }
                failures
            })
        };
        Hammer {
            stop,
            latest,
            count,
            handle: Some(handle),
        }
    }

    /// Requests sent so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until a request sent at or after `since` saw an access claim satisfying `cond`;
    /// returns how long after `since` its answer arrived (an upper bound on when the state it
    /// saw came into force).
    pub fn wait_for(
        &self,
        since: Instant,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
        context: impl Fn() -> String,
    ) -> Duration {
        let mut at = None;
        wait_until(
            timeout,
            what,
            || {
                let latest = self.latest.lock().expect("lock");
                match latest.as_ref() {
                    Some(seen) if seen.sent >= since && cond(&seen.access) => {
                        at = Some(seen.received - since);
                        true
                    }
                    _ => false,
                }
            },
            || {
                format!(
                    "latest seen: {:?}\n{}",
                    self.latest
                        .lock()
                        .expect("lock")
                        .as_ref()
                        .map(|s| &s.access),
                    context()
                )
            },
        );
        at.expect("seen")
    }

    /// Waits for one more complete request after now, so what it saw reflects the current state.
    pub fn next(&self) -> BTreeMap<String, Vec<String>> {
        let since = Instant::now();
        let mut out = BTreeMap::new();
        wait_until(
            EVENT_TIMEOUT,
            "a token request of the loop",
            || {
                let latest = self.latest.lock().expect("lock");
                match latest.as_ref() {
                    Some(seen) if seen.sent >= since => {
                        out = seen.access.clone();
                        true
                    }
                    _ => false,
                }
            },
            String::new,
        );
        out
    }

    /// Stops the loop and returns the failed requests.
    pub fn stop(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let failures = self
            .handle
            .take()
            .expect("running")
            .join()
            .expect("loop thread");
        (self.count(), failures)
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One line of `purser policy explain`: `SCOPE -> ACTIONS (RULE)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplainLine {
    /// The scope asked about.
    pub scope: String,
    /// Empty for `nothing`.
    pub granted: Vec<String>,
    /// The text in parentheses: `rule 2 "team repos"`, `rule 4 "x": explicit deny`, `no rule matched`.
    pub reason: String,
    /// The rule's index and name, `None` when no rule matched.
    pub rule: Option<(u64, String)>,
}

/// Parses the output of `purser policy explain`, one [`ExplainLine`] a line; panics on a line
/// of another shape.
pub fn parse_explain(stdout: &str) -> Vec<ExplainLine> {
    stdout
        .lines()
        .map(|line| {
            let (scope, rest) = line
                .split_once(" -> ")
                .unwrap_or_else(|| panic!("explain line without ` -> `: {line:?}"));
            let (actions, reason) = rest
                .split_once(" (")
                .unwrap_or_else(|| panic!("explain line without a reason: {line:?}"));
            let reason = reason
                .strip_suffix(')')
                .unwrap_or_else(|| panic!("explain line not ending in `)`: {line:?}"))
                .to_string();
            let granted = if actions == "nothing" {
                Vec::new()
            } else {
                actions.split(',').map(str::to_string).collect()
            };
            let rule = reason.strip_prefix("rule ").map(|r| {
                let (index, rest) = r.split_once(' ').expect("rule index");
                let name: String = serde_json::from_str(
                    // The name is written as a quoted string, possibly followed by `: ...`.
                    &rest[..rest[1..].find('"').expect("closing quote") + 2],
                )
                .expect("rule name");
                (index.parse().expect("rule index number"), name)
            });
            ExplainLine {
                scope: scope.to_string(),
                granted,
                reason,
                rule,
            }
        })
        .collect()
}
