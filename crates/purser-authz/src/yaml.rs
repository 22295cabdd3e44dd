//! Reading YAML for the policy and the test cases.
//!
//! The file is parsed once into a `serde_norway::Value` and then walked by hand. A derived
//! `Deserialize` stops at the first problem; the walk reports every problem at once, each with
//! its line and, for a misspelt key, the closest known key. Unknown keys are always refused.
//!
//! `Value` does not keep positions, so the line of a problem is found by asking the YAML parser
//! again: a probe walks the document along the problem's path and fails at the node it wants,
//! and the parser stamps that failure with the node's position. Probes run only for problems
//! (at most [`MAX_ERRORS`] of them), so a valid file is parsed exactly once.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_norway::{Mapping, Value};

use crate::error::{Loc, PolicyError, PolicyErrors};

/// Reporting stops after this many problems in one file.
pub const MAX_ERRORS: usize = 50;

/// One step of a path into the document.
#[derive(Clone, Debug)]
pub(crate) enum Seg {
    /// The value under this key.
    Key(&'static str),
    /// The key itself (used for unknown keys), always the last step.
    KeyName(String),
    /// The n-th item of a list.
    Index(usize),
}

/// Parses YAML text into a value, or one syntax error with its line.
pub(crate) fn parse_value(text: &str, source: &str) -> Result<Value, PolicyError> {
    serde_norway::from_str::<Value>(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let mut message = e.to_string();
        if let Some(l) = line {
            if let Some(src_line) = text.lines().nth(l.saturating_sub(1)) {
                let t = src_line.trim_start().trim_start_matches("- ");
                if t.contains(": *") || t.contains("[*") || t.contains(", *") || t.starts_with('*')
                {
                    message.push_str(" (a bare * starts a YAML alias: write \"*\" in quotes)");
                }
            }
        }
        PolicyError::Syntax {
            loc: Loc::new(source, line),
            message,
        }
    })
}

/// Collects the problems of one file, each located on its line.
pub(crate) struct Doc<'t> {
    pub text: &'t str,
    pub source: &'t str,
    errors: Vec<PolicyError>,
    dropped: usize,
}

impl<'t> Doc<'t> {
    pub(crate) fn new(text: &'t str, source: &'t str) -> Self {
        Doc {
            text,
            source,
            errors: Vec::new(),
            dropped: 0,
        }
    }

    /// The line of the node at `path`, or of the nearest enclosing node the parser can find.
    pub(crate) fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let mut n = path.len();
        loop {
            if let Some(line) = locate(self.text, &path[..n]) {
                return Some(line);
            }
            if n == 0 {
                return None;
            }
            n -= 1;
        }
    }

    pub(crate) fn loc(&self, path: &[Seg]) -> Loc {
        Loc::new(self.source, self.line_of(path))
    }

    /// Records a problem at `path`; past [`MAX_ERRORS`] it is only counted.
    pub(crate) fn report(&mut self, path: &[Seg], make: impl FnOnce(Loc) -> PolicyError) {
        if self.errors.len() >= MAX_ERRORS {
            self.dropped += 1;
            return;
        }
        let loc = self.loc(path);
        self.errors.push(make(loc));
    }

    pub(crate) fn invalid(
        &mut self,
        path: &[Seg],
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (field, message) = (field.into(), message.into());
        self.report(path, |loc| PolicyError::InvalidValue {
            loc,
            field,
            message,
        });
    }

    /// Refuses keys outside `known` (with a suggestion) and keys that are not strings.
    pub(crate) fn check_keys(
        &mut self,
        map: &Mapping,
        path: &[Seg],
        context: &'static str,
        known: &'static [&'static str],
    ) {
        for key in map.keys() {
            match key.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => {
                    let mut p = path.to_vec();
                    p.push(Seg::KeyName(k.to_string()));
                    let field: String = k.chars().take(64).collect();
                    let suggestion = suggest(k, known);
                    self.report(&p, |loc| PolicyError::UnknownField {
                        loc,
                        context,
                        field,
                        suggestion,
                        expected: known,
                    });
                }
                None => {
                    let shown = describe(key);
                    self.invalid(
                        path,
                        context,
                        format!("keys must be strings, found {shown}"),
                    );
                }
            }
        }
    }

    pub(crate) fn finish(self) -> Result<(), PolicyErrors> {
        let Doc {
            source,
            mut errors,
            dropped,
            ..
        } = self;
        // Problems are found rule by rule and field by field; report them in file order.
        errors.sort_by_key(|e| e.line().unwrap_or(usize::MAX));
        if dropped > 0 {
            errors.push(PolicyError::TooMany {
                loc: Loc::new(source, None),
                count: dropped,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyErrors(errors))
        }
    }
}

/// What kind of YAML value this is, for messages.
pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The string in `v`, or a message saying what was found instead.
pub(crate) fn expect_str(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(_) | Value::Bool(_) => Err(format!(
            "expected a string, found {}: put it in quotes",
            describe(v)
        )),
        other => Err(format!("expected a string, found {}", describe(other))),
    }
}

/// One item of a list of strings: its index, and the string or what was found instead.
pub(crate) type StrItem<'v> = (usize, Result<&'v str, String>);

/// A list of strings; items that are not strings are reported by index.
pub(crate) fn expect_str_list(v: &Value) -> Result<Vec<StrItem<'_>>, String> {
    match v {
        Value::Sequence(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (i, expect_str(item)))
            .collect()),
        other => Err(format!(
            "expected a list like [a, b], found {}",
            describe(other)
        )),
    }
}

/// The known key closest to `word`, when it is close enough to be a likely typo.
pub(crate) fn suggest(word: &str, known: &[&'static str]) -> Option<&'static str> {
    if word.chars().count() > 64 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

// ---- the position probe ----

const PROBE: &str = "\u{1}purser-position-probe";

/// The 1-based line of the node at `path`, as the YAML parser reports it.
fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    let de = serde_norway::Deserializer::from_str(text);
    match Probe(path).deserialize(de) {
        Err(e) if e.to_string().contains(PROBE) => e.location().map(|l| l.line()),
        _ => None,
    }
}

struct Probe<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0.first() {
            None => d.deserialize_any(Hit),
            Some(_) => d.deserialize_any(Walk(self.0)),
        }
    }
}

/// Fails at whatever node it is handed: the parser attaches that node's position.
struct Hit;

impl<'de> Visitor<'de> for Hit {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(PROBE))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(PROBE))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(PROBE))
    }
}

struct Walk<'p>(&'p [Seg]);

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping or a list")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, fail_on_key) = match &self.0[0] {
            Seg::Key(k) => (*k, false),
            Seg::KeyName(k) => (k.as_str(), true),
            Seg::Index(_) => return Ok(()),
        };
        while let Some(found) = map.next_key_seed(KeySeed {
            want,
            fail: fail_on_key,
        })? {
            if found {
                return map.next_value_seed(Probe(&self.0[1..]));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Seg::Index(n) = self.0[0] else {
            return Ok(());
        };
        for _ in 0..n {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Probe(&self.0[1..]))?;
        Ok(())
    }
}

/// Reads one key; `true` when it is the wanted one (or fails there, for a key's own line).
struct KeySeed<'w> {
    want: &'w str,
    fail: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == self.want {
            if self.fail {
                return Err(E::custom(PROBE));
            }
            return Ok(true);
        }
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nodes_and_keys() {
        let text =
            "rules:\n  - name: a\n    actions: [pull]\n  - name: b\n    match:\n      acount: x\n";
        assert_eq!(locate(text, &[Seg::Key("rules"), Seg::Index(1)]), Some(4));
        assert_eq!(
            locate(
                text,
                &[
                    Seg::Key("rules"),
                    Seg::Index(1),
                    Seg::Key("match"),
                    Seg::KeyName("acount".into())
                ]
            ),
            Some(6)
        );
        assert_eq!(
            locate(
                text,
                &[Seg::Key("rules"), Seg::Index(0), Seg::Key("actions")]
            ),
            Some(3)
        );
        assert_eq!(locate(text, &[Seg::Key("rules"), Seg::Index(7)]), None);
    }

    #[test]
    fn suggests_close_keys_only() {
        let known = &["account", "groups", "type", "name", "service", "ip"];
        assert_eq!(suggest("acount", known), Some("account"));
        assert_eq!(suggest("group", known), Some("groups"));
        assert_eq!(suggest("Servcie", known), Some("service"));
        assert_eq!(suggest("colour", known), None);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
