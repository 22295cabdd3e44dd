//! `purser policy test`: expected decisions, written next to the policy and checked against it.
//!
//! ```yaml
//! cases:
//!   - { account: alice, groups: [developers], scope: "repository:team/app:pull,push", expect: [pull, push] }
//!   - { account: "", scope: "repository:secret/app:pull", expect: [] }
//!   - { account: "github:acme/app", labels: { repository: acme/app }, scope: "repository:acme/app:push", expect: [push] }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use purser_core::{Identity, RequestContext, ResourceScope};
use serde_norway::Value;

use crate::error::{Loc, PolicyError, PolicyErrors};
use crate::explain::{Explanation, Verdict};
use crate::policy::{Policy, MAX_LIST, MAX_POLICY_BYTES};
use crate::yaml::{describe, expect_str, expect_str_list, parse_value, Doc, Seg};

/// Most cases in one file.
pub const MAX_CASES: usize = 100_000;

const FILE_KEYS: &[&str] = &["cases"];
const CASE_KEYS: &[&str] = &[
    "account", "groups", "labels", "scope", "expect", "ip", "service",
];

/// One expected decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// 0-based position in the file.
    pub index: usize,
    /// `""` for an anonymous caller.
    pub account: String,
    pub groups: Vec<String>,
    /// The caller's labels (an OIDC token's claims).
    pub labels: BTreeMap<String, String>,
    pub scope: ResourceScope,
    /// The actions the policy should grant (compared as a set).
    pub expect: Vec<String>,
    pub ip: Option<IpAddr>,
    /// The requested service; the configured one when absent.
    pub service: Option<String>,
}

/// A parsed test-case file.
#[derive(Clone, Debug)]
pub struct CaseFile {
    source: String,
    /// Kept to find the line of a failing case.
    text: String,
    cases: Vec<Case>,
}

impl CaseFile {
    /// Parses a case file; every problem is reported with its line.
    pub fn parse(text: &str, source: &str) -> Result<CaseFile, PolicyErrors> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                loc: Loc::new(source, None),
                message: format!(
                    "the file is {} bytes, the limit is {MAX_POLICY_BYTES}",
                    text.len()
                ),
            }
            .into());
        }
        let value = parse_value(text, source)?;
        let mut doc = Doc::new(text, source);
        let mut cases = Vec::new();
        match &value {
            Value::Null => {}
            Value::Mapping(top) => {
                doc.check_keys(top, &[], "top-level", FILE_KEYS);
                match top.get("cases") {
                    None | Some(Value::Null) => {}
                    Some(Value::Sequence(items)) if items.len() > MAX_CASES => {
                        doc.invalid(
                            &[Seg::Key("cases")],
                            "cases",
                            format!("{} cases, the limit is {MAX_CASES}", items.len()),
                        );
                    }
                    Some(Value::Sequence(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(case) = parse_case(&mut doc, i, item) {
                                cases.push(case);
                            }
                        }
                    }
                    Some(other) => doc.invalid(
                        &[Seg::Key("cases")],
                        "cases",
                        format!("expected a list of cases, found {}", describe(other)),
                    ),
                }
            }
            other => doc.invalid(
                &[],
                "cases file",
                format!(
                    "expected a mapping with a `cases` list, found {}",
                    describe(other)
                ),
            ),
        }
        doc.finish()?;
        Ok(CaseFile {
            source: source.to_string(),
            text: text.to_string(),
            cases,
        })
    }

    /// Reads and parses a case file; messages name the file as given.
    pub fn from_file(path: &Path) -> Result<CaseFile, PolicyErrors> {
        let source = path.display().to_string();
        let text =
            purser_fs::read_text(path, MAX_POLICY_BYTES as u64).map_err(|e| PolicyError::Io {
                loc: Loc::new(&source, None),
                message: e.kind().to_string(),
            })?;
        CaseFile::parse(&text, &source)
    }

    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn loc_of(&self, index: usize) -> Loc {
        let doc = Doc::new(&self.text, &self.source);
        Loc::new(
            &self.source,
            doc.line_of(&[Seg::Key("cases"), Seg::Index(index)]),
        )
    }
}

fn parse_case(doc: &mut Doc<'_>, i: usize, item: &Value) -> Option<Case> {
    let path = [Seg::Key("cases"), Seg::Index(i)];
    let at = |key: &'static str| [Seg::Key("cases"), Seg::Index(i), Seg::Key(key)];
    let Value::Mapping(m) = item else {
        doc.invalid(
            &path,
            format!("case {i}"),
            format!(
                "expected a mapping with account, scope and expect, found {}",
                describe(item)
            ),
        );
        return None;
    };
    doc.check_keys(m, &path, "case", CASE_KEYS);
    let mut ok = true;
    let missing = |doc: &mut Doc<'_>, field: &'static str| {
        let context = format!("case {i}");
        doc.report(&path, |loc| PolicyError::MissingField {
            loc,
            context,
            field,
            hint: "",
        });
    };

    let account = match m.get("account").map(expect_str) {
        None => {
            missing(doc, "account");
            ok = false;
            String::new()
        }
        Some(Ok(s)) => s.to_string(),
        Some(Err(msg)) => {
            doc.invalid(&at("account"), "account", msg);
            ok = false;
            String::new()
        }
    };

    let scope = match m.get("scope").map(expect_str) {
        None => {
            missing(doc, "scope");
            ok = false;
            None
        }
        Some(Ok(s)) if s.split_ascii_whitespace().count() > 1 => {
            doc.invalid(
                &at("scope"),
                "scope",
                "one scope per case: split it into several cases",
            );
            ok = false;
            None
        }
        Some(Ok(s)) => match s.trim().parse::<ResourceScope>() {
            Ok(sc) => Some(sc),
            Err(e) => {
                doc.invalid(&at("scope"), "scope", e.to_string());
                ok = false;
                None
            }
        },
        Some(Err(msg)) => {
            doc.invalid(&at("scope"), "scope", msg);
            ok = false;
            None
        }
    };

    let mut string_list = |doc: &mut Doc<'_>, key: &'static str| -> Option<Vec<String>> {
        let v = m.get(key)?;
        match expect_str_list(v) {
            Ok(items) if items.len() > MAX_LIST => {
                doc.invalid(&at(key), key, format!("more than {MAX_LIST} entries"));
                ok = false;
                None
            }
            Ok(items) => {
                let mut out = Vec::new();
                for (_, item) in items {
                    match item {
                        Ok(s) => out.push(s.to_string()),
                        Err(msg) => {
                            doc.invalid(&at(key), key, msg);
                            ok = false;
                        }
                    }
                }
                Some(out)
            }
            Err(msg) => {
                doc.invalid(&at(key), key, msg);
                ok = false;
                None
            }
        }
    };
    let groups = string_list(doc, "groups").unwrap_or_default();
    let expect = string_list(doc, "expect");
    if expect.is_none() && !m.contains_key("expect") {
        missing(doc, "expect");
        ok = false;
    }

    let mut labels = BTreeMap::new();
    match m.get("labels") {
        None => {}
        Some(Value::Mapping(lm)) => {
            for (k, v) in lm {
                match (expect_str(k), expect_str(v)) {
                    (Ok(k), Ok(v)) => {
                        labels.insert(k.to_string(), v.to_string());
                    }
                    (Err(msg), _) | (_, Err(msg)) => {
                        doc.invalid(&at("labels"), "labels", msg);
                        ok = false;
                    }
                }
            }
        }
        Some(other) => {
            doc.invalid(
                &at("labels"),
                "labels",
                format!(
                    "expected a mapping like {{ repository: acme/app }}, found {}",
                    describe(other)
                ),
            );
            ok = false;
        }
    }

    let ip = match m.get("ip").map(expect_str) {
        None => None,
        Some(Ok(s)) => match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                doc.invalid(&at("ip"), "ip", "expected one IP address, like 10.1.2.3");
                ok = false;
                None
            }
        },
        Some(Err(msg)) => {
            doc.invalid(&at("ip"), "ip", msg);
            ok = false;
            None
        }
    };

    let service = match m.get("service").map(expect_str) {
        None => None,
        Some(Ok(s)) => Some(s.to_string()),
        Some(Err(msg)) => {
            doc.invalid(&at("service"), "service", msg);
            ok = false;
            None
        }
    };

    match (ok, scope, expect) {
        (true, Some(scope), Some(expect)) => Some(Case {
            index: i,
            account,
            groups,
            labels,
            scope,
            expect,
            ip,
            service,
        }),
        _ => None,
    }
}

/// A case whose decision differs from the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFailure {
    pub loc: Loc,
    pub case: Case,
    /// The service the case was run with.
    pub service: String,
    /// What the policy decided, and why.
    pub got: Explanation,
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.case;
        write!(f, "{}: case {}: account {:?}", self.loc, c.index, c.account)?;
        if c.account.is_empty() {
            f.write_str(" (anonymous)")?;
        }
        if !c.groups.is_empty() {
            write!(f, ", groups {}", list(&c.groups))?;
        }
        if !c.labels.is_empty() {
            let shown: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, ", labels {}", list(&shown))?;
        }
        if let Some(ip) = c.ip {
            write!(f, ", ip {ip}")?;
        }
        if c.service.is_some() {
            write!(f, ", service {:?}", self.service)?;
        }
        write!(
            f,
            ", scope {}: expected {}, got {}",
            c.scope,
            list(&c.expect),
            list(&self.got.granted)
        )?;
        match (&self.got.rule, self.got.verdict) {
            (None, _) => f.write_str(" (no rule matched)"),
            (Some(r), Verdict::Denied) if self.got.rule_actions.is_empty() => {
                write!(f, " (rule {} {:?}: explicit deny)", r.index, r.name)
            }
            (Some(r), _) => write!(f, " (rule {} {:?})", r.index, r.name),
        }
    }
}

/// Runs every case against the policy; returns the failures, in file order.
pub fn run_cases(policy: &Policy, file: &CaseFile, default_service: &str) -> Vec<CaseFailure> {
    run_cases_with_labels(policy, file, default_service, &BTreeMap::new())
}

/// [`run_cases`], with `labels` (`policy test --label k=v`) given to every case; a case's own
/// `labels` win over them.
pub fn run_cases_with_labels(
    policy: &Policy,
    file: &CaseFile,
    default_service: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<CaseFailure> {
    let mut failures = Vec::new();
    for case in &file.cases {
        let service = case
            .service
            .clone()
            .unwrap_or_else(|| default_service.to_string());
        let ctx = RequestContext {
            service: service.clone(),
            client_ip: case.ip,
        };
        let mut who = Identity::new(case.account.clone(), case.groups.clone());
        who.labels = labels.clone();
        who.labels
            .extend(case.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let got = policy
            .explain(&who, &ctx, std::slice::from_ref(&case.scope))
            .pop()
            .expect("one explanation per scope");
        let mut want = case.expect.clone();
        want.sort();
        want.dedup();
        let mut have = got.granted.clone();
        have.sort();
        if want != have {
            failures.push(CaseFailure {
                loc: file.loc_of(case.index),
                case: case.clone(),
                service,
                got,
            });
        }
    }
    failures
}
