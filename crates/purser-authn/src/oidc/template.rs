//! The claim templates of an issuer (`account: "github:${claims.repository}"`) and the globs of
//! its `require` block.

use serde_json::{Map, Value};

/// Longest claim value used in a template or a `require` glob, in bytes: a longer one fails
/// the template (a label or account of kilobytes is no one's name).
pub const MAX_CLAIM_VALUE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Claim(String),
}

/// `text ${claims.NAME} text`: literal text with claims put in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles a template; `Err` says what is wrong.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(pos) = rest.find("${") {
            if pos > 0 {
                parts.push(Part::Lit(rest[..pos].to_string()));
            }
            let after = &rest[pos + 2..];
            let Some(close) = after.find('}') else {
                return Err("unclosed ${: write ${claims.NAME}".into());
            };
            let name = &after[..close];
            let Some(claim) = name.strip_prefix("claims.").filter(|c| valid_claim_name(c)) else {
                let shown: String = name.chars().take(40).collect();
                return Err(format!(
                    "unknown placeholder ${{{shown}}}: write ${{claims.NAME}} with a claim name of letters, digits, _, - and ."
                ));
            };
            parts.push(Part::Claim(claim.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text with the claims put in; `None` when a claim it names is missing, not a
    /// string, number or boolean, empty or too long.
    pub fn render(&self, claims: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Claim(name) => out.push_str(&claim_text(claims, name)?),
            }
        }
        Some(out)
    }
}

/// A claim name in a template or `require`: letters, digits, `_`, `-`, `.` and `:`.
pub fn valid_claim_name(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 128
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// A claim as text: strings as they are, numbers and booleans written out; nothing else.
pub(crate) fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    let text = match claims.get(name)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.is_empty() && text.len() <= MAX_CLAIM_VALUE && !text.chars().any(char::is_control))
        .then_some(text)
}

/// A glob of `require`: `*` any run of characters (`/` included), `?` one character, anything
/// else itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimGlob {
    pattern: Vec<char>,
}

impl ClaimGlob {
    pub fn new(s: &str) -> ClaimGlob {
        ClaimGlob {
            pattern: s.chars().collect(),
        }
    }

    /// Whether the whole of `value` matches (linear in pattern x value: no backtracking blowup).
    pub fn matches(&self, value: &str) -> bool {
        let v: Vec<char> = value.chars().collect();
        let n = v.len();
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        for &c in &self.pattern {
            let mut next = vec![false; n + 1];
            match c {
                '*' => {
                    let mut reach = false;
                    for j in 0..=n {
                        reach |= cur[j];
                        next[j] = reach;
                    }
                }
                '?' => next[1..=n].copy_from_slice(&cur[..n]),
                lit => {
                    for j in 0..n {
                        next[j + 1] = cur[j] && v[j] == lit;
                    }
                }
            }
            cur = next;
        }
        cur[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn templates_fill_claims_and_refuse_what_is_missing() {
        let c = claims(
            json!({"repository": "acme/app", "run": 7, "ok": true, "list": ["a"], "empty": ""}),
        );
        let t = Template::parse("github:${claims.repository}").unwrap();
        assert_eq!(t.render(&c).as_deref(), Some("github:acme/app"));
        let t = Template::parse("${claims.run}-${claims.ok}").unwrap();
        assert_eq!(t.render(&c).as_deref(), Some("7-true"));
        for missing in ["${claims.nope}", "${claims.list}", "${claims.empty}"] {
            assert_eq!(
                Template::parse(missing).unwrap().render(&c),
                None,
                "{missing}"
            );
        }
        assert!(Template::parse("${claims.a").is_err());
        assert!(Template::parse("${account}").is_err());
        assert!(Template::parse("${claims.}").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().render(&c).as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn globs_match_whole_values() {
        let g = ClaimGlob::new("refs/heads/*");
        assert!(g.matches("refs/heads/main"));
        assert!(g.matches("refs/heads/feature/x"));
        assert!(!g.matches("refs/tags/v1"));
        assert!(ClaimGlob::new("acme").matches("acme"));
        assert!(!ClaimGlob::new("acme").matches("acme2"));
        assert!(ClaimGlob::new("v?").matches("v1"));
        assert!(!ClaimGlob::new("v?").matches("v12"));
        // A hostile pattern stays linear.
        let g = ClaimGlob::new(&"*a".repeat(200));
        assert!(!g.matches(&"a".repeat(199)));
    }
}
