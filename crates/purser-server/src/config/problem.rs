//! Configuration problems: what is wrong, at which key, and which layer set it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a value came from, as far as it can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemSource {
    /// The config file, with the line of the key when it could be found.
    File { path: PathBuf, line: Option<usize> },
    /// An environment variable, by its full name (`PURSER_TOKEN__LIFETIME`).
    Env { var: String },
    /// A command-line flag (`--listen`).
    Flag { flag: String },
}

impl fmt::Display for ProblemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemSource::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            ProblemSource::File { path, line: None } => write!(f, "{}", path.display()),
            ProblemSource::Env { var } => write!(f, "environment variable {var}"),
            ProblemSource::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`authn.ldap.urls`); empty when the problem is with a whole source.
    pub path: String,
    /// The layer that set the value, when known (built-in defaults have none).
    pub source: Option<ProblemSource>,
    /// What is wrong and, where it helps, what to do. Never holds a secret value.
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            source: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading, one per line when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The closest of `known` to `word`, when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    // A shortened key (`policy` for `policy_file`) is as likely a slip as a misspelt one.
    let mut extended = known
        .iter()
        .filter(|k| word.len() >= 3 && k.starts_with(word) && **k != word);
    if let (Some(only), None) = (extended.next(), extended.next()) {
        return Some(only);
    }
    let (best, dist) = known
        .iter()
        .map(|k| (*k, edit_distance(word, k)))
        .min_by_key(|(_, d)| *d)?;
    let len = word.chars().count().max(best.chars().count());
    (dist > 0 && (dist <= 2 || dist * 3 <= len) && dist < len).then_some(best)
}

/// Levenshtein distance over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The 1-based line of `path` in a config file, by its extension; the line of the longest
/// prefix of `path` found when the key itself is not (a default filled in under a written section).
pub(crate) fn find_line(file: &Path, text: &str, path: &[&str]) -> Option<usize> {
    let is_toml = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        toml_line(text, path)
    } else {
        yaml_line(text, path)
    }
}

/// A line scanner over YAML block indentation; enough for configuration files, which are maps of
/// maps with the odd flow mapping (`tls: { cert_file: a }`) at the leaves.
fn yaml_line(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let mut indent = raw.len() - raw.trim_start_matches(' ').len();
        let mut rest = &raw[indent..];
        while let Some(r) = rest.strip_prefix("- ") {
            indent += 2;
            rest = r;
        }
        let Some((key, after)) = split_yaml_key(rest) else {
            continue;
        };
        stack.retain(|(ind, _)| *ind < indent);
        stack.push((indent, key));
        if stack.len() > path.len() || !stack.iter().zip(path).all(|((_, k), p)| k == p) {
            continue;
        }
        if stack.len() == path.len() || flow_contains(after, &path[stack.len()..]) {
            return Some(i + 1);
        }
        if best.is_none_or(|(depth, _)| stack.len() > depth) {
            best = Some((stack.len(), i + 1));
        }
    }
    best.map(|(_, line)| line)
}

/// `key: rest` at the start of `s`, the key unquoted.
fn split_yaml_key(s: &str) -> Option<(String, &str)> {
    if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = s[1..].find(q)? + 1;
        let after = s[end + 1..].trim_start().strip_prefix(':')?;
        return Some((s[1..end].to_string(), after));
    }
    if s.starts_with(['{', '[', '#', '|', '>']) {
        return None;
    }
    let bytes = s.as_bytes();
    let colon = (0..bytes.len())
        .find(|&i| bytes[i] == b':' && bytes.get(i + 1).is_none_or(|b| *b == b' '))?;
    let key = s[..colon].trim_end();
    (!key.is_empty()).then(|| (key.to_string(), &s[colon + 1..]))
}

/// Whether the rest of a line holds `a: { b: ... }` style keys for `rest` in order.
fn flow_contains(line: &str, rest: &[&str]) -> bool {
    if !line.contains('{') {
        return false;
    }
    let mut from = 0;
    for key in rest {
        let found = [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .filter_map(|pat| line[from..].find(pat.as_str()).map(|i| i + pat.len()))
        .min();
        match found {
            Some(i) => from += i,
            None => return false,
        }
    }
    true
}

/// A line scanner over TOML tables and dotted keys.
fn toml_line(text: &str, path: &[&str]) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    let mut consider = |keys: &[String], line: usize, after: &str| -> Option<usize> {
        if keys.len() > path.len() || !keys.iter().zip(path).all(|(k, p)| k == p) {
            return None;
        }
        if keys.len() == path.len() || inline_table_contains(after, &path[keys.len()..]) {
            return Some(line);
        }
        if best.is_none_or(|(depth, _)| keys.len() > depth) {
            best = Some((keys.len(), line));
        }
        None
    };
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(inner) = t.strip_prefix('[') {
            let inner = inner.trim_start_matches('[');
            let Some(end) = inner.find(']') else { continue };
            table = split_dotted(&inner[..end]);
            if let Some(line) = consider(&table, i + 1, "") {
                return Some(line);
            }
            continue;
        }
        let Some(eq) = t.find('=') else { continue };
        let mut keys = table.clone();
        keys.extend(split_dotted(&t[..eq]));
        if let Some(line) = consider(&keys, i + 1, &t[eq + 1..]) {
            return Some(line);
        }
    }
    best.map(|(_, line)| line)
}

fn split_dotted(s: &str) -> Vec<String> {
    s.split('.')
        .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
        .collect()
}

fn inline_table_contains(after: &str, rest: &[&str]) -> bool {
    if !after.contains('{') {
        return false;
    }
    let mut from = 0;
    for key in rest {
        let found = after[from..].match_indices(key).find(|(i, _)| {
            let tail = after[from + i + key.len()..]
                .trim_start_matches(['"', '\''])
                .trim_start();
            tail.starts_with('=')
        });
        match found {
            Some((i, _)) => from += i + key.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("urlz", "urls"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            suggest("urlz", &["urls", "start_tls", "ca_file"]),
            Some("urls")
        );
        assert_eq!(suggest("isuer", &["issuer", "service"]), Some("issuer"));
        assert_eq!(suggest("zzzzzzzz", &["urls", "start_tls"]), None);
        assert_eq!(suggest("policy", &["policy_file"]), Some("policy_file"));
        assert_eq!(
            suggest("group", &["group_base", "group_filter", "groups_file"]),
            None
        );
    }

    #[test]
    fn yaml_lines() {
        let text = "# head\nserver:\n  listen: a\n  tls: { cert_file: x, key_file: y }\nauthn:\n  ldap:\n    urls: []\n    urlz: []\n  static:\n    users:\n      \"bob\": { password_hash: h }\n";
        assert_eq!(yaml_line(text, &["server", "listen"]), Some(3));
        assert_eq!(yaml_line(text, &["server", "tls", "key_file"]), Some(4));
        assert_eq!(yaml_line(text, &["authn", "ldap", "urlz"]), Some(8));
        assert_eq!(
            yaml_line(text, &["authn", "static", "users", "bob", "password_hash"]),
            Some(11)
        );
        // Not written: the closest written section.
        assert_eq!(yaml_line(text, &["authn", "ldap", "pool_size"]), Some(6));
        assert_eq!(yaml_line(text, &["token", "issuer"]), None);
    }

    #[test]
    fn toml_lines() {
        let text =
            "[server]\nlisten = \"a\"\ntls = { cert_file = \"x\" }\n\n[authn.ldap]\nurlz = []\n";
        assert_eq!(toml_line(text, &["server", "listen"]), Some(2));
        assert_eq!(toml_line(text, &["server", "tls", "cert_file"]), Some(3));
        assert_eq!(toml_line(text, &["authn", "ldap", "urlz"]), Some(6));
        assert_eq!(toml_line(text, &["authn", "ldap", "urls"]), Some(5));
    }

    #[test]
    fn display_one_line_per_problem() {
        let errs = ConfigErrors {
            problems: vec![
                Problem {
                    path: "authn.ldap.urlz".into(),
                    source: Some(ProblemSource::File {
                        path: "p.yaml".into(),
                        line: Some(7),
                    }),
                    message: "unknown key".into(),
                },
                Problem {
                    path: "token.isuer".into(),
                    source: Some(ProblemSource::Env {
                        var: "PURSER_TOKEN__ISUER".into(),
                    }),
                    message: "unknown key".into(),
                },
            ],
        };
        assert_eq!(
            errs.to_string(),
            "p.yaml:7: authn.ldap.urlz: unknown key\nenvironment variable PURSER_TOKEN__ISUER: token.isuer: unknown key"
        );
    }
}
