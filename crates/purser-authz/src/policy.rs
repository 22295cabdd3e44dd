//! The policy: its rules, how they are read, and the decision.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use purser_core::{Grant, Identity, RequestContext, ResourceScope, RuleRef, MAX_ACTION_LEN};
use serde_norway::{Mapping, Value};

use crate::error::{Loc, PolicyError, PolicyErrors};
use crate::index::NameIndex;
use crate::net::{canonical, holds, normalise};
use crate::pattern::Pattern;
use crate::yaml::{describe, expect_str, expect_str_list, parse_value, Doc, Seg};

/// Largest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 16 << 20;
/// Most rules in one policy.
pub const MAX_RULES: usize = 100_000;
/// Longest rule name, in characters.
pub const MAX_RULE_NAME: usize = 200;
/// Most entries in one rule's `groups`, `ip` or `actions` list.
pub const MAX_LIST: usize = 1_000;

const TOP_KEYS: &[&str] = &["rules"];
const RULE_KEYS: &[&str] = &["name", "match", "actions"];
const MATCH_KEYS: &[&str] = &[
    "account", "groups", "labels", "type", "name", "service", "ip",
];

/// How a rule constrains the account.
#[derive(Clone, Debug)]
pub(crate) enum AccountMatch {
    /// `""`: only anonymous callers.
    Anonymous,
    /// `"*"`: any authenticated caller.
    AnyNamed,
    /// Any other pattern; never matches an anonymous caller.
    Pattern(Pattern),
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub index: usize,
    pub name: String,
    pub account: Option<AccountMatch>,
    pub groups: Option<Vec<Pattern>>,
    /// `labels: { KEY: GLOB }`: the caller has each label, with a value the glob matches.
    pub labels: Option<Vec<(String, Pattern)>>,
    pub rtype: Option<Pattern>,
    pub name_pat: Option<Pattern>,
    pub service: Option<Pattern>,
    pub ip: Option<Vec<IpNet>>,
    /// As written, without duplicates; empty means explicit deny.
    pub actions: Vec<String>,
    /// `"*"` is among the actions.
    pub all_actions: bool,
}

impl Rule {
    /// Whether every match field of the rule holds for this request.
    pub(crate) fn matches(
        &self,
        who: &Identity,
        ctx: &RequestContext,
        scope: &ResourceScope,
    ) -> bool {
        if let Some(nets) = &self.ip {
            // An unknown address (none given, or a proxy's entry that is not an address)
            // matches no `ip` rule, deny rules included.
            let Some(ip) = ctx.client_ip.map(canonical) else {
                return false;
            };
            if !nets.iter().any(|n| holds(n, ip)) {
                return false;
            }
        }
        if let Some(account) = &self.account {
            let ok = match account {
                AccountMatch::Anonymous => who.is_anonymous(),
                AccountMatch::AnyNamed => !who.is_anonymous(),
                AccountMatch::Pattern(p) => !who.is_anonymous() && p.matches_plain(&who.account),
            };
            if !ok {
                return false;
            }
        }
        if let Some(t) = &self.rtype {
            if !t.matches_plain(&scope.rtype) {
                return false;
            }
        }
        if let Some(s) = &self.service {
            if !s.matches_plain(&ctx.service) {
                return false;
            }
        }
        if let Some(groups) = &self.groups {
            if !who
                .groups
                .iter()
                .any(|g| groups.iter().any(|p| p.matches_plain(g)))
            {
                return false;
            }
        }
        if let Some(labels) = &self.labels {
            let all = labels
                .iter()
                .all(|(k, p)| who.labels.get(k).is_some_and(|v| p.matches_plain(v)));
            if !all {
                return false;
            }
        }
        if let Some(n) = &self.name_pat {
            if !n.matches_for(&scope.name, who) {
                return false;
            }
        }
        true
    }

    pub(crate) fn rule_ref(&self) -> RuleRef {
        RuleRef {
            index: self.index,
            name: self.name.clone(),
        }
    }

    /// What this rule grants of the request: the requested actions it lists, in the requested
    /// order; every requested action when it lists `"*"`. A requested `"*"` is granted only by
    /// a rule that lists `"*"`.
    pub(crate) fn grant(&self, scope: &ResourceScope) -> Grant {
        let actions = scope
            .actions
            .iter()
            .filter(|a| self.all_actions || (a.as_str() != "*" && self.actions.contains(a)))
            .cloned()
            .collect();
        Grant {
            actions,
            rule: Some(self.rule_ref()),
        }
    }
}

/// A parsed, compiled policy. Cheap to share behind an `Arc`; never changes once built.
pub struct Policy {
    source: String,
    pub(crate) rules: Vec<Rule>,
    index: NameIndex,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("source", &self.source)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Default for Policy {
    /// A policy without rules: grants nothing.
    fn default() -> Self {
        Policy::from_rules("<empty policy>", Vec::new())
    }
}

impl Policy {
    /// Parses and compiles a policy. `source` names the file in messages. Every problem is
    /// reported, each with its line.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyErrors> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                loc: Loc::new(source, None),
                message: format!(
                    "the policy is {} bytes, the limit is {MAX_POLICY_BYTES}",
                    text.len()
                ),
            }
            .into());
        }
        let value = parse_value(text, source)?;
        let mut doc = Doc::new(text, source);
        let mut rules = Vec::new();
        match &value {
            Value::Null => {}
            Value::Mapping(top) => {
                doc.check_keys(top, &[], "top-level", TOP_KEYS);
                match top.get("rules") {
                    None | Some(Value::Null) => {}
                    Some(Value::Sequence(items)) if items.len() > MAX_RULES => {
                        doc.report(&[Seg::Key("rules")], |loc| PolicyError::TooLarge {
                            loc,
                            message: format!("{} rules, the limit is {MAX_RULES}", items.len()),
                        });
                    }
                    Some(Value::Sequence(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(rule) = parse_rule(&mut doc, i, item) {
                                rules.push(rule);
                            }
                        }
                    }
                    Some(other) => doc.invalid(
                        &[Seg::Key("rules")],
                        "rules",
                        format!("expected a list of rules, found {}", describe(other)),
                    ),
                }
            }
            other => doc.invalid(
                &[],
                "policy",
                format!(
                    "expected a mapping with a `rules` list, found {}",
                    describe(other)
                ),
            ),
        }
        doc.finish()?;
        Ok(Policy::from_rules(source, rules))
    }

    /// Reads and parses a policy file; messages name the file as given.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyErrors> {
        let source = path.display().to_string();
        let text =
            purser_fs::read_text(path, MAX_POLICY_BYTES as u64).map_err(|e| PolicyError::Io {
                loc: Loc::new(&source, None),
                message: e.kind().to_string(),
            })?;
        Policy::parse(&text, &source)
    }

    fn from_rules(source: &str, rules: Vec<Rule>) -> Policy {
        let mut index = NameIndex::new();
        for (pos, rule) in rules.iter().enumerate() {
            let prefix = rule
                .name_pat
                .as_ref()
                .map(Pattern::prefix_owned)
                .unwrap_or_default();
            index.insert(&prefix, pos as u32);
        }
        Policy {
            source: source.to_string(),
            rules,
            index,
        }
    }

    /// The file name the policy was read from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many rules the policy has (the `purser_policy_rules` gauge).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The first rule whose match fields all hold decides: it grants the requested actions it
    /// lists. No matching rule: nothing granted.
    ///
    /// Only the rules whose `name` pattern can match the requested name are looked at (a
    /// literal-prefix index built at load), in file order, so the cost follows the number of
    /// plausible rules, not the size of the policy.
    pub fn authorize(&self, who: &Identity, ctx: &RequestContext, scope: &ResourceScope) -> Grant {
        let mut candidates = Vec::new();
        self.index
            .candidates(scope.name.as_bytes(), &mut candidates);
        candidates.sort_unstable();
        candidates
            .into_iter()
            .map(|i| &self.rules[i as usize])
            .find(|r| r.matches(who, ctx, scope))
            .map_or_else(Grant::none, |r| r.grant(scope))
    }

    /// The same decision by a plain scan of every rule in order; the reference the index is
    /// tested against.
    #[doc(hidden)]
    pub fn authorize_linear(
        &self,
        who: &Identity,
        ctx: &RequestContext,
        scope: &ResourceScope,
    ) -> Grant {
        self.rules
            .iter()
            .find(|r| r.matches(who, ctx, scope))
            .map_or_else(Grant::none, |r| r.grant(scope))
    }

    pub(crate) fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }
}

fn sub(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut p = path.to_vec();
    p.push(seg);
    p
}

fn parse_rule(doc: &mut Doc<'_>, i: usize, item: &Value) -> Option<Rule> {
    let path = vec![Seg::Key("rules"), Seg::Index(i)];
    let Value::Mapping(m) = item else {
        doc.invalid(
            &path,
            format!("rule {i}"),
            format!(
                "expected a mapping with `match` and `actions`, found {}",
                describe(item)
            ),
        );
        return None;
    };
    doc.check_keys(m, &path, "rule", RULE_KEYS);
    let mut ok = true;

    let name = match m.get("name") {
        None => format!("rule {i}"),
        Some(v) => match expect_str(v) {
            Ok(s) if s.trim().is_empty() => {
                doc.invalid(
                    &sub(&path, Seg::Key("name")),
                    "name",
                    "empty rule name: remove `name` to get the default",
                );
                ok = false;
                String::new()
            }
            Ok(s) if s.chars().count() > MAX_RULE_NAME || s.chars().any(char::is_control) => {
                doc.invalid(
                    &sub(&path, Seg::Key("name")),
                    "name",
                    format!("a rule name is at most {MAX_RULE_NAME} characters, on one line"),
                );
                ok = false;
                String::new()
            }
            Ok(s) => s.to_string(),
            Err(msg) => {
                doc.invalid(&sub(&path, Seg::Key("name")), "name", msg);
                ok = false;
                String::new()
            }
        },
    };

    let actions = match m.get("actions") {
        None => {
            let context = format!("rule {i} ({name:?})");
            doc.report(&path, |loc| PolicyError::MissingField {
                loc,
                context,
                field: "actions",
                hint: " (write `actions: []` for an explicit deny)",
            });
            ok = false;
            Vec::new()
        }
        Some(v) => match parse_actions(doc, &sub(&path, Seg::Key("actions")), v) {
            Some(a) => a,
            None => {
                ok = false;
                Vec::new()
            }
        },
    };

    let mut rule = Rule {
        index: i,
        all_actions: actions.iter().any(|a| a == "*"),
        name,
        account: None,
        groups: None,
        labels: None,
        rtype: None,
        name_pat: None,
        service: None,
        ip: None,
        actions,
    };

    match m.get("match") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(mm)) => {
            ok &= parse_match(doc, &sub(&path, Seg::Key("match")), mm, &mut rule);
        }
        Some(other) => {
            doc.invalid(
                &sub(&path, Seg::Key("match")),
                "match",
                format!(
                    "expected a mapping like {{ groups: [admins] }}, found {}",
                    describe(other)
                ),
            );
            ok = false;
        }
    }
    ok.then_some(rule)
}

fn valid_action(a: &str) -> bool {
    a == "*"
        || (!a.is_empty()
            && a.len() <= MAX_ACTION_LEN
            && a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
}

fn parse_actions(doc: &mut Doc<'_>, path: &[Seg], v: &Value) -> Option<Vec<String>> {
    let items = match expect_str_list(v) {
        Ok(items) => items,
        Err(msg) => {
            doc.invalid(path, "actions", msg);
            return None;
        }
    };
    if items.len() > MAX_LIST {
        doc.invalid(path, "actions", format!("more than {MAX_LIST} actions"));
        return None;
    }
    let mut ok = true;
    let mut out: Vec<String> = Vec::new();
    for (j, item) in items {
        match item {
            Ok(a) if valid_action(a) => {
                if !out.iter().any(|x| x == a) {
                    out.push(a.to_string());
                }
            }
            Ok(a) => {
                let shown: String = a.chars().take(40).collect();
                doc.invalid(
                    &sub(path, Seg::Index(j)),
                    "actions",
                    format!(
                        "{shown:?} is not an action: write lowercase words like pull, push, delete, or \"*\""
                    ),
                );
                ok = false;
            }
            Err(msg) => {
                doc.invalid(&sub(path, Seg::Index(j)), "actions", msg);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Reads one pattern field; reports and returns `None` when it is not a valid pattern.
fn pattern_field(
    doc: &mut Doc<'_>,
    path: &[Seg],
    field: &str,
    v: &Value,
    placeholders: bool,
) -> Option<Pattern> {
    let s = match expect_str(v) {
        Ok(s) => s,
        Err(msg) => {
            doc.invalid(path, field, msg);
            return None;
        }
    };
    match Pattern::parse(s, placeholders) {
        Ok(p) => Some(p),
        Err(msg) => {
            doc.invalid(path, field, msg);
            None
        }
    }
}

fn parse_match(doc: &mut Doc<'_>, path: &[Seg], m: &Mapping, rule: &mut Rule) -> bool {
    doc.check_keys(m, path, "match", MATCH_KEYS);
    let mut ok = true;

    if let Some(v) = m.get("account") {
        let p = sub(path, Seg::Key("account"));
        match v {
            Value::String(s) if s.is_empty() => rule.account = Some(AccountMatch::Anonymous),
            Value::String(s) if s == "*" => rule.account = Some(AccountMatch::AnyNamed),
            _ => match pattern_field(doc, &p, "match.account", v, false) {
                Some(pat) => rule.account = Some(AccountMatch::Pattern(pat)),
                None => ok = false,
            },
        }
    }

    for (key, slot) in [
        ("type", &mut rule.rtype),
        ("service", &mut rule.service),
        ("name", &mut rule.name_pat),
    ] {
        let Some(v) = m.get(key) else { continue };
        let p = sub(path, Seg::Key(key));
        let field = format!("match.{key}");
        if v.as_str() == Some("") {
            doc.invalid(
                &p,
                field,
                "an empty pattern matches nothing: remove the field to match anything",
            );
            ok = false;
            continue;
        }
        match pattern_field(doc, &p, &field, v, key == "name") {
            Some(pat) => *slot = Some(pat),
            None => ok = false,
        }
    }

    if let Some(v) = m.get("groups") {
        let p = sub(path, Seg::Key("groups"));
        match list_field(doc, &p, "match.groups", v) {
            Some(items) => {
                let mut pats = Vec::new();
                for (j, item) in items {
                    match pattern_field(doc, &sub(&p, Seg::Index(j)), "match.groups", item, false) {
                        Some(pat) => pats.push(pat),
                        None => ok = false,
                    }
                }
                rule.groups = Some(pats);
            }
            None => ok = false,
        }
    }

    if let Some(v) = m.get("labels") {
        let p = sub(path, Seg::Key("labels"));
        match parse_labels(doc, &p, v) {
            Some(labels) => rule.labels = Some(labels),
            None => ok = false,
        }
    }

    if let Some(v) = m.get("ip") {
        let p = sub(path, Seg::Key("ip"));
        match list_field(doc, &p, "match.ip", v) {
            Some(items) => {
                let mut nets = Vec::new();
                for (j, item) in items {
                    let ip_path = sub(&p, Seg::Index(j));
                    match expect_str(item).and_then(parse_net) {
                        Ok(net) => nets.push(net),
                        Err(msg) => {
                            doc.invalid(&ip_path, "match.ip", msg);
                            ok = false;
                        }
                    }
                }
                rule.ip = Some(nets);
            }
            None => ok = false,
        }
    }
    ok
}

/// `labels: { KEY: GLOB, ... }`: a non-empty, bounded mapping of label names to patterns
/// without placeholders.
fn parse_labels(doc: &mut Doc<'_>, path: &[Seg], v: &Value) -> Option<Vec<(String, Pattern)>> {
    let Value::Mapping(m) = v else {
        doc.invalid(
            path,
            "match.labels",
            format!(
                "expected a mapping like {{ repository: \"acme/*\" }}, found {}",
                describe(v)
            ),
        );
        return None;
    };
    if m.is_empty() {
        doc.invalid(
            path,
            "match.labels",
            "an empty mapping matches anyone: remove the field",
        );
        return None;
    }
    if m.len() > MAX_LIST {
        doc.invalid(path, "match.labels", format!("more than {MAX_LIST} labels"));
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (k, pv) in m {
        let key = match expect_str(k) {
            Ok(k) if crate::pattern::valid_label_key(k) => k.to_string(),
            _ => {
                doc.invalid(
                    path,
                    "match.labels",
                    format!(
                        "a label name is letters, digits, _ and -, at most {} characters",
                        crate::pattern::MAX_LABEL_KEY
                    ),
                );
                ok = false;
                continue;
            }
        };
        let field = format!("match.labels.{key}");
        match pattern_field(doc, path, &field, pv, false) {
            Some(p) => out.push((key, p)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A non-empty, bounded list (for `groups` and `ip`).
fn list_field<'v>(
    doc: &mut Doc<'_>,
    path: &[Seg],
    field: &str,
    v: &'v Value,
) -> Option<Vec<(usize, &'v Value)>> {
    let Value::Sequence(items) = v else {
        doc.invalid(
            path,
            field,
            format!("expected a list like [a, b], found {}", describe(v)),
        );
        return None;
    };
    if items.is_empty() {
        doc.invalid(
            path,
            field,
            "an empty list matches nobody: remove the field to match anyone",
        );
        return None;
    }
    if items.len() > MAX_LIST {
        doc.invalid(path, field, format!("more than {MAX_LIST} entries"));
        return None;
    }
    Some(items.iter().enumerate().collect())
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address, IPv4-mapped ones as IPv4
/// (see [`crate::net`]).
fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(normalise(net));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(canonical(ip)));
    }
    let shown: String = s.chars().take(64).collect();
    Err(format!(
        "{shown:?} is not a CIDR: write an address with a prefix length, like 10.0.0.0/8 or fd00::/8"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_looks_only_at_plausible_rules() {
        let mut text = String::from("rules:\n");
        for k in 0..10_000 {
            text.push_str(&format!(
                "  - {{ match: {{ name: \"ns{k}/**\" }}, actions: [pull] }}\n"
            ));
        }
        text.push_str("  - { match: { name: \"${account}/**\" }, actions: [pull] }\n");
        let p = Policy::parse(&text, "p.yaml").unwrap();
        let mut c = Vec::new();
        p.index.candidates(b"ns4242/app", &mut c);
        c.sort_unstable();
        // Of 10,001 rules, only "ns4242/**" (prefix "ns4242/") and the placeholder rule, whose
        // literal prefix is empty, are looked at.
        assert_eq!(c, vec![4242, 10_000]);
        let who = Identity::new("bob", vec![]);
        let scope: ResourceScope = "repository:ns4242/app:pull".parse().unwrap();
        let g = p.authorize(&who, &RequestContext::default(), &scope);
        assert_eq!(g.rule.map(|r| r.index), Some(4242));
    }
}
