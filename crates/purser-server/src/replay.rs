//! `purser policy replay`: decides the requests of purser's JSON audit log again with another
//! policy and reports the decisions that change.
//!
//! Logs are read as a stream, line by line (gzip files as they are, recognised by their magic
//! bytes), so a month of logs runs in bounded memory: one line at a time (a line longer than
//! [`MAX_LINE`] is skipped), and changed decisions are gathered into at most [`MAX_GROUPS`]
//! groups, each keeping a count, the repository pattern its names share and a few examples.
//! A line that is not JSON (cut short by a rotation, a text log line) is skipped and counted.
//!
//! An audit record carries what the decision needs (`account`, `groups`, `client_ip`,
//! `service`, the requested `scopes` and, for a capped credential, its `cap`), so the replay
//! asks [`Policy::authorize`], the server's own decision, with the same caller and request.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use purser_authz::{Divergence, Policy};
use purser_core::{Grant, Identity, RequestContext, ResourceScope, RuleRef, ScopeCap};
use serde::Deserialize;

use crate::stack::telemetry::AUDIT_TARGET;

/// Longest log line read; a longer one is skipped and counted.
pub const MAX_LINE: usize = 1 << 20;
/// Most groups of changed decisions kept; changes beyond are counted, not grouped.
pub const MAX_GROUPS: usize = 10_000;
/// Example scopes kept per group.
pub const EXAMPLES: usize = 3;

/// What to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The policy the requests are decided with.
    pub policy: PathBuf,
    /// The policy to compare with; without it, the decision recorded in the log.
    pub against: Option<PathBuf>,
    /// The logs, in order; `-` reads standard input.
    pub logs: Vec<PathBuf>,
    /// The service of records written before the audit record named it.
    pub service: Option<String>,
}

/// Input the replay cannot use: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Policy(String),
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "no audit record with requested scopes in {0}: is the log written with `log.format: json`?"
    )]
    Nothing(String),
}

/// One side of a decision as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Side {
    pub granted: Vec<String>,
    pub rule: Option<(usize, String)>,
}

impl Side {
    fn of(g: Grant) -> Side {
        Side {
            granted: g.actions,
            rule: g.rule.map(|r| (r.index, r.name)),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "granted": self.granted,
            "rule": self.rule.as_ref().map(|(index, name)| serde_json::json!({"index": index, "name": name})),
        })
    }

    fn text(&self) -> String {
        let actions = if self.granted.is_empty() {
            "nothing".to_string()
        } else {
            self.granted.join(",")
        };
        match &self.rule {
            Some((index, name)) => format!("{actions} (rule {index} {name:?})"),
            None => format!("{actions} (no rule matched)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    account: String,
    rtype: String,
    old: Side,
    new: Side,
}

/// The names a group has seen, as one pattern of the policy's language: the name itself while
/// they are all one, else their common prefix up to a `/` and `**` (or `*` within a segment).
#[derive(Clone, Debug)]
struct NamePattern {
    first: String,
    /// Bytes of `first` every name shares.
    common: usize,
    /// Some name goes on past the common prefix with a `/`.
    deeper: bool,
}

impl NamePattern {
    fn new(name: &str) -> Self {
        NamePattern {
            first: name.to_string(),
            common: name.len(),
            deeper: false,
        }
    }

    fn add(&mut self, name: &str) {
        let shared = self
            .first
            .bytes()
            .zip(name.bytes())
            .take(self.common)
            .take_while(|(a, b)| a == b)
            .count();
        let mut common = shared.min(self.common);
        while !self.first.is_char_boundary(common) {
            common -= 1;
        }
        if common < self.common || name.len() > common {
            self.deeper |= self.first[common..].contains('/') || name[common..].contains('/');
        }
        self.common = common;
    }

    fn render(&self) -> String {
        if self.common == self.first.len() && !self.deeper {
            return self.first.clone();
        }
        let prefix = &self.first[..self.common];
        if self.deeper {
            // Whole segments only: `team/a` and `team/b/c` share `team/`.
            let cut = prefix.rfind('/').map_or(0, |i| i + 1);
            format!("{}**", &prefix[..cut])
        } else {
            format!("{prefix}*")
        }
    }
}

#[derive(Clone, Debug)]
struct Group {
    count: u64,
    outcome: Divergence,
    names: NamePattern,
    examples: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines read, of every kind.
    pub lines: u64,
    /// Lines that are not JSON (a text line, a line cut short) or longer than [`MAX_LINE`].
    pub skipped: u64,
    /// JSON lines that are not audit records.
    pub other: u64,
    /// Audit records whose fields could not be read.
    pub malformed: u64,
    /// Audit records without a decided scope (a refused login, `docker login`).
    pub without_scopes: u64,
    /// Audit records replayed.
    pub records: u64,
    /// Scopes decided again.
    pub scopes: u64,
    /// Changed decisions by outcome (more, less, different).
    pub changed: HashMap<Divergence, u64>,
    /// Changed decisions past [`MAX_GROUPS`] groups: counted above, not grouped.
    pub ungrouped: u64,
    groups: HashMap<GroupKey, Group>,
}

#[derive(Deserialize)]
struct RuleField {
    index: usize,
    name: String,
}

#[derive(Deserialize)]
struct ScopeField {
    scope: String,
    #[serde(default)]
    granted: Vec<String>,
    #[serde(default)]
    rule: Option<RuleField>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    client_ip: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<ScopeField>>,
    #[serde(default)]
    cap: Option<Vec<String>>,
    /// The caller's labels (an OIDC login's claims), for rules that match or fill them.
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// The two policies a replay decides with.
struct Deciders {
    new: Policy,
    against: Option<Policy>,
    service: String,
}

impl Report {
    /// Decisions that changed.
    pub fn changed_total(&self) -> u64 {
        self.changed.values().sum()
    }

    fn line(&mut self, d: &Deciders, bytes: &[u8]) {
        self.lines += 1;
        let bytes = trim(bytes);
        if bytes.is_empty() {
            self.skipped += 1;
            return;
        }
        let line: Line = match serde_json::from_slice(bytes) {
            Ok(l) => l,
            Err(_) => {
                // JSON of another shape is another log line; anything else is skipped.
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) if is_audit(bytes) => self.malformed += 1,
                    Ok(_) => self.other += 1,
                    Err(_) => self.skipped += 1,
                }
                return;
            }
        };
        if line.target.as_deref() != Some(AUDIT_TARGET) {
            self.other += 1;
            return;
        }
        let scopes = line.scopes.unwrap_or_default();
        if scopes.is_empty() {
            self.without_scopes += 1;
            return;
        }
        let mut who = Identity::new(
            line.account.unwrap_or_default(),
            line.groups.unwrap_or_default(),
        );
        who.labels = line.labels.unwrap_or_default();
        who.cap = line.cap.map(|c| {
            c.iter()
                .filter_map(|s| s.parse::<ScopeCap>().ok())
                .collect()
        });
        let ctx = RequestContext {
            service: line.service.unwrap_or_else(|| d.service.clone()),
            // An entry that is not an address is unknown, as it was to the server.
            client_ip: line
                .client_ip
                .as_deref()
                .and_then(|s| s.parse::<IpAddr>().ok()),
        };
        let mut parsed = Vec::with_capacity(scopes.len());
        for s in scopes {
            match s.scope.parse::<ResourceScope>() {
                Ok(scope) => parsed.push((scope, s)),
                Err(_) => {
                    self.malformed += 1;
                    return;
                }
            }
        }
        self.records += 1;
        for (scope, recorded) in parsed {
            self.scopes += 1;
            let capped = |g: Grant| match &who.cap {
                Some(cap) => Grant {
                    actions: purser_authz::apply_cap(cap, &scope, g.actions),
                    rule: g.rule,
                },
                None => g,
            };
            let old = match &d.against {
                Some(p) => capped(p.authorize(&who, &ctx, &scope)),
                None => Grant {
                    actions: recorded.granted,
                    rule: recorded.rule.map(|r| RuleRef {
                        index: r.index,
                        name: r.name,
                    }),
                },
            };
            let new = capped(d.new.authorize(&who, &ctx, &scope));
            let outcome = Divergence::of(&old.actions, &new.actions);
            if outcome == Divergence::Same {
                continue;
            }
            *self.changed.entry(outcome).or_default() += 1;
            let key = GroupKey {
                account: who.account.clone(),
                rtype: scope.rtype.clone(),
                old: Side::of(old),
                new: Side::of(new),
            };
            if let Some(g) = self.groups.get_mut(&key) {
                g.count += 1;
                g.names.add(&scope.name);
                if g.examples.len() < EXAMPLES && !g.examples.contains(&scope.to_string()) {
                    g.examples.push(scope.to_string());
                }
            } else if self.groups.len() < MAX_GROUPS {
                self.groups.insert(
                    key,
                    Group {
                        count: 1,
                        outcome,
                        names: NamePattern::new(&scope.name),
                        examples: vec![scope.to_string()],
                    },
                );
            } else {
                self.ungrouped += 1;
            }
        }
    }

    /// The groups, by account, resource pattern, then the most frequent first.
    fn sorted(&self) -> Vec<(&GroupKey, &Group, String)> {
        let mut v: Vec<_> = self
            .groups
            .iter()
            .map(|(k, g)| (k, g, g.names.render()))
            .collect();
        v.sort_by(|a, b| {
            (&a.0.account, &a.0.rtype, &a.2)
                .cmp(&(&b.0.account, &b.0.rtype, &b.2))
                .then(b.1.count.cmp(&a.1.count))
                .then(a.0.cmp(b.0))
        });
        v
    }

    fn summary(&self) -> String {
        let c = |o| self.changed.get(&o).copied().unwrap_or(0);
        format!(
            "{} audit records replayed ({} scopes): {} decisions changed (more {}, less {}, different {}); lines skipped: {} not JSON or cut short, {} not audit records; audit records without scopes: {}, unreadable: {}",
            self.records,
            self.scopes,
            self.changed_total(),
            c(Divergence::More),
            c(Divergence::Less),
            c(Divergence::Different),
            self.skipped,
            self.other,
            self.without_scopes,
            self.malformed,
        )
    }

    /// The report for people: each group of changed decisions, then the counts.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (k, g, pattern) in self.sorted() {
            let account = if k.account.is_empty() {
                "anonymous".to_string()
            } else {
                format!("account {:?}", k.account)
            };
            let _ = writeln!(
                s,
                "{account}, {} {pattern}: {} {} ({})",
                k.rtype,
                g.count,
                if g.count == 1 {
                    "decision"
                } else {
                    "decisions"
                },
                g.outcome.label()
            );
            let _ = writeln!(s, "  was {}", k.old.text());
            let _ = writeln!(s, "  now {}", k.new.text());
            let _ = writeln!(s, "  e.g. {}", g.examples.join(" "));
        }
        if self.ungrouped > 0 {
            let _ = writeln!(
                s,
                "... and {} more changed decisions past {MAX_GROUPS} groups",
                self.ungrouped
            );
        }
        let _ = writeln!(s, "{}", self.summary());
        s
    }

    /// The report as one JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let c = |o| self.changed.get(&o).copied().unwrap_or(0);
        let groups: Vec<serde_json::Value> = self
            .sorted()
            .into_iter()
            .map(|(k, g, pattern)| {
                serde_json::json!({
                    "account": k.account,
                    "type": k.rtype,
                    "pattern": pattern,
                    "count": g.count,
                    "outcome": g.outcome.label(),
                    "old": k.old.json(),
                    "new": k.new.json(),
                    "examples": g.examples,
                })
            })
            .collect();
        serde_json::json!({
            "lines": self.lines,
            "records": self.records,
            "scopes": self.scopes,
            "changed": self.changed_total(),
            "outcomes": {
                "more": c(Divergence::More),
                "less": c(Divergence::Less),
                "different": c(Divergence::Different),
            },
            "skipped_lines": self.skipped,
            "other_lines": self.other,
            "records_without_scopes": self.without_scopes,
            "unreadable_records": self.malformed,
            "ungrouped": self.ungrouped,
            "groups": groups,
        })
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// A JSON line naming the audit target (only asked of lines that did not read as a record).
fn is_audit(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Target {
        #[serde(default)]
        target: Option<String>,
    }
    serde_json::from_slice::<Target>(bytes).is_ok_and(|t| t.target.as_deref() == Some(AUDIT_TARGET))
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn load_policy(path: &Path) -> Result<Policy, ReplayError> {
    Policy::from_file(path).map_err(|e| ReplayError::Policy(e.to_string().replace('\n', "; ")))
}

/// Opens a log: standard input for `-`, a gzip stream when it starts with gzip's magic bytes.
fn open(path: &Path) -> Result<Box<dyn BufRead>, ReplayError> {
    let raw: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        // The bounded reader's rule: a FIFO or a device is refused before it is opened.
        let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
        if !meta.is_file() {
            return Err(read_error(path, "not a regular file"));
        }
        Box::new(File::open(path).map_err(|e| read_error(path, e))?)
    };
    let mut buffered = BufReader::with_capacity(1 << 16, raw);
    let head = buffered.fill_buf().map_err(|e| read_error(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::bufread::MultiGzDecoder::new(buffered),
        )))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Calls `each` with every line of `r` (without its newline); a line longer than [`MAX_LINE`]
/// is passed as `None` after the rest of it has been read past.
fn lines(mut r: impl BufRead, mut each: impl FnMut(Option<&[u8]>)) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            loop {
                let chunk = r.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        r.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = chunk.len();
                        r.consume(len);
                    }
                }
            }
            each(None);
            continue;
        }
        each(Some(&buf));
    }
}

/// Replays every log with the options' policies.
pub fn replay(opts: &ReplayOptions) -> Result<Report, ReplayError> {
    let deciders = Deciders {
        new: load_policy(&opts.policy)?,
        against: opts.against.as_deref().map(load_policy).transpose()?,
        service: opts.service.clone().unwrap_or_default(),
    };
    let mut report = Report::default();
    for path in &opts.logs {
        let reader = open(path)?;
        lines(reader, |line| match line {
            Some(bytes) => report.line(&deciders, bytes),
            None => {
                report.lines += 1;
                report.skipped += 1;
            }
        })
        .map_err(|e| read_error(path, e))?;
    }
    if report.records == 0 {
        let names: Vec<String> = opts.logs.iter().map(|p| p.display().to_string()).collect();
        return Err(ReplayError::Nothing(names.join(", ")));
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
