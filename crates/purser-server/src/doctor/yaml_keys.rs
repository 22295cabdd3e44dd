//! Duplicated keys in the registry's config.yml, found by reading its lines.
//!
//! The registry's YAML reader keeps the last of two equal keys without a word (registry 2.8 with
//! two `auth:` blocks runs with the second), while purser's refuses the whole file with
//! `duplicate entry with key "auth"` and no line. Neither tells the operator what to do, so the
//! doctor looks for them itself, before parsing. It reads block-style YAML, the way registry
//! configs are written: keys by indentation, `- ` items as new mappings, block scalars skipped.
//! Flow mappings (`{a: 1}`) are not looked into.

use std::collections::BTreeMap;
use std::path::Path;

use super::Finding;

/// A key written more than once in one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The key, as written (without quotes).
    pub key: String,
    /// The keys leading to its mapping, dot-separated (`auth.token`), `[]` for a list item; empty
    /// at the top level.
    pub parent: String,
    /// The 1-based lines it appears on, in order.
    pub lines: Vec<usize>,
}

/// One mapping being read: its indentation, where it sits, its keys so far.
struct Frame {
    indent: usize,
    path: String,
    keys: BTreeMap<String, Vec<usize>>,
    last_key: Option<String>,
}

impl Frame {
    fn new(indent: usize, path: String) -> Frame {
        Frame {
            indent,
            path,
            keys: BTreeMap::new(),
            last_key: None,
        }
    }

    /// The path of a mapping nested under this one's last key.
    fn child_path(&self) -> String {
        match (&self.last_key, self.path.is_empty()) {
            (Some(k), true) => k.clone(),
            (Some(k), false) => format!("{}.{k}", self.path),
            (None, _) => self.path.clone(),
        }
    }

    fn close(self, out: &mut Vec<DuplicateKey>) {
        for (key, lines) in self.keys {
            if lines.len() > 1 {
                out.push(DuplicateKey {
                    key,
                    parent: self.path.clone(),
                    lines,
                });
            }
        }
    }
}

/// Every key written twice or more in the same mapping, ordered by first appearance.
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // The indentation of the key whose block scalar (`|`, `>`) is being skipped.
    let mut block_scalar: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim_end_matches('\r');
        let content = line.trim_start_matches(' ');
        let mut indent = line.len() - content.len();
        if let Some(parent) = block_scalar {
            if content.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if indent == 0 && (content.starts_with("---") || content.starts_with("...")) {
            // A new document: its keys are its own.
            while let Some(f) = stack.pop() {
                f.close(&mut out);
            }
            continue;
        }
        // `- key: value` opens a new mapping per item, indented past the dash.
        let mut content = content;
        while let Some(rest) = content
            .strip_prefix('-')
            .filter(|r| r.is_empty() || r.starts_with(' '))
        {
            // A list may sit at its key's own indentation: that mapping stays open.
            close_deeper(&mut stack, indent + 1, &mut out);
            let item = rest.trim_start_matches(' ');
            let item_indent = indent + 1 + (rest.len() - item.len());
            let path = stack.last().map(Frame::child_path).unwrap_or_default() + "[]";
            stack.push(Frame::new(item_indent, path));
            content = item;
            indent = item_indent;
        }
        let Some((key, value)) = split_key(content) else {
            continue;
        };
        close_deeper(&mut stack, indent + 1, &mut out);
        let deeper = stack.last().is_none_or(|f| f.indent < indent);
        if deeper {
            let path = stack.last().map(Frame::child_path).unwrap_or_default();
            stack.push(Frame::new(indent, path));
        }
        let frame = stack.last_mut().expect("pushed above");
        frame.keys.entry(key.clone()).or_default().push(number);
        frame.last_key = Some(key);
        let value = value.split(" #").next().unwrap_or("").trim();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar = Some(indent);
        }
    }
    while let Some(f) = stack.pop() {
        f.close(&mut out);
    }
    out.sort_by_key(|d| d.lines[0]);
    out
}

/// Closes the mappings indented at `indent` or deeper.
fn close_deeper(stack: &mut Vec<Frame>, indent: usize, out: &mut Vec<DuplicateKey>) {
    while stack.last().is_some_and(|f| f.indent >= indent) {
        if let Some(f) = stack.pop() {
            f.close(out);
        }
    }
}

/// `key: value` (or `key:`) as (key, value); `None` for a line that is no mapping entry.
fn split_key(content: &str) -> Option<(String, &str)> {
    let (key, after) = if let Some(q) = content.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let rest = &content[1..];
        let end = rest.find(q)?;
        (
            rest[..end].to_string(),
            rest[end + 1..].trim_start_matches(' '),
        )
    } else {
        if content.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
            return None;
        }
        let at = content
            .char_indices()
            .find(|(i, c)| {
                *c == ':'
                    && content[i + 1..]
                        .chars()
                        .next()
                        .is_none_or(|n| n == ' ' || n == '\t')
            })?
            .0;
        let key = content[..at].trim_end();
        if key.is_empty() || key.contains(" #") {
            return None;
        }
        (key.to_string(), &content[at..])
    };
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, value))
}

/// One `problem registry config` finding per duplicated key of `text` (read from `path`).
pub(super) fn duplicate_findings(path: &Path, text: &str) -> Vec<Finding> {
    duplicate_keys(text)
        .into_iter()
        .map(|d| {
            let under = if d.parent.is_empty() {
                String::new()
            } else {
                format!(" under {}", d.parent)
            };
            let times = match d.lines.len() {
                2 => "twice".to_string(),
                n => format!("{n} times"),
            };
            let lines: Vec<String> = d.lines.iter().map(usize::to_string).collect();
            let lines = match lines.as_slice() {
                [init @ .., last] if !init.is_empty() => format!("{} and {last}", init.join(", ")),
                _ => lines.join(""),
            };
            let merge = if d.key == "auth" && d.parent.is_empty() {
                "merge the `auth:` blocks into one holding only `token:`, or delete the others"
                    .to_string()
            } else {
                format!("merge the `{}:` entries{under} into one, or delete all but one", d.key)
            };
            Finding::problem(
                "registry config",
                format!(
                    "{}: key {:?}{under} appears {times}, on lines {lines}: the registry silently keeps only the last, and doctor cannot read the file",
                    path.display(),
                    d.key
                ),
                merge,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(String, String, Vec<usize>)> {
        duplicate_keys(text)
            .into_iter()
            .map(|d| (d.parent, d.key, d.lines))
            .collect()
    }

    #[test]
    fn a_second_auth_block_is_found_with_its_lines() {
        let text = "version: 0.1\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry/htpasswd\n\n# added for purser\nauth:\n  token:\n    realm: http://127.0.0.1:5001/token\n";
        assert_eq!(found(text), vec![("".into(), "auth".into(), vec![2, 8])]);
    }

    #[test]
    fn nested_duplicates_name_their_parent() {
        let text =
            "auth:\n  token:\n    realm: a\n    service: s\n    realm: b\nhttp:\n  addr: :5000\n";
        assert_eq!(
            found(text),
            vec![("auth.token".into(), "realm".into(), vec![3, 5])]
        );
    }

    #[test]
    fn equal_keys_in_different_mappings_are_fine() {
        let text = "auth:\n  token:\n    realm: a\nhttp:\n  realm: x\n  headers:\n    X-Content-Type-Options: [nosniff]\nnotifications:\n  endpoints:\n    - name: a\n      url: http://x\n    - name: b\n      url: http://y\n";
        assert!(found(text).is_empty(), "{:?}", found(text));
    }

    #[test]
    fn list_items_and_block_scalars_are_read_as_yaml_does() {
        let text = "list:\n  - name: a\n    name: b\n  -\n    name: c\ncert: |\n  auth: not a key\n  auth: still not\nquoted:\n  \"k\": 1\n  'k': 2\nurl: http://a:b # auth: no\n";
        assert_eq!(
            found(text),
            vec![
                ("list[]".into(), "name".into(), vec![2, 3]),
                ("quoted".into(), "k".into(), vec![10, 11]),
            ]
        );
    }

    #[test]
    fn documents_are_separate() {
        assert!(found("auth: 1\n---\nauth: 2\n").is_empty());
        // A list at its key's indentation keeps the top-level mapping open.
        assert_eq!(
            found("auth: 1\nitems:\n- a: 1\n- a: 2\nauth: 2\n"),
            vec![("".into(), "auth".into(), vec![1, 5])]
        );
        assert_eq!(found("a: 1\na: 2\na: 3\n")[0].2, vec![1, 2, 3]);
    }

    #[test]
    fn findings_say_where_and_what_to_do() {
        let f = duplicate_findings(
            Path::new("/etc/docker/registry/config.yml"),
            "auth:\n  htpasswd: {}\nauth:\n  token: {}\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].to_string(),
            "problem registry config: /etc/docker/registry/config.yml: key \"auth\" appears twice, on lines 1 and 3: the registry silently keeps only the last, and doctor cannot read the file -> merge the `auth:` blocks into one holding only `token:`, or delete the others"
        );
        let f = duplicate_findings(Path::new("c.yml"), "a:\n  b: 1\n  b: 2\n  b: 3\n");
        assert!(
            f[0].to_string()
                .contains("key \"b\" under a appears 3 times, on lines 2, 3 and 4")
                && f[0].fix == "merge the `b:` entries under a into one, or delete all but one",
            "{}",
            f[0]
        );
    }
}
