//! Patterns of match fields: literals, globs and `/regex/`, with `${account}`, `${group}` and
//! `${labels.KEY}`.
//!
//! Globs are compiled once into a list of atoms and matched by a set-of-positions simulation,
//! linear in `pattern length x value length` whatever the pattern, so a hostile pattern cannot
//! make matching explode. A regex is compiled once, anchored to the whole value, with a bounded
//! compiled size.

use purser_core::Identity;
use regex::{Regex, RegexBuilder};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Bound on the compiled size of one regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Atom {
    /// One literal byte.
    Byte(u8),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Seg,
    /// `**`: any run of characters, `/` included.
    Deep,
    /// `**/` at the start of a segment: nothing, or anything that ends with `/`.
    Dirs,
    /// `${account}`: the caller's account, matched literally.
    Account,
    /// `${group}`: one of the caller's groups, matched literally.
    Group,
    /// `${labels.KEY}`: the caller's label `KEY`, matched literally.
    Label(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Lit(String),
    Account,
    Group,
    Label(String),
}

/// One compiled pattern.
#[derive(Clone, Debug)]
pub(crate) enum Pattern {
    /// No wildcard: plain equality.
    Literal(String),
    /// A glob, possibly with placeholders.
    Glob {
        atoms: Vec<Atom>,
        account: bool,
        group: bool,
        labels: bool,
    },
    /// A regex without placeholders, compiled once.
    Regex(Regex),
    /// A regex with placeholders: the escaped values are put in and it is compiled per request.
    RegexTemplate {
        parts: Vec<Part>,
        account: bool,
        group: bool,
        labels: bool,
    },
}

impl Pattern {
    /// Compiles `s`. Placeholders are accepted only when `placeholders` is true.
    pub(crate) fn parse(s: &str, placeholders: bool) -> Result<Pattern, String> {
        if s.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "pattern is {} bytes long, the limit is {MAX_PATTERN_LEN}",
                s.len()
            ));
        }
        if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') {
            return parse_regex(&s[1..s.len() - 1], placeholders);
        }
        let atoms = parse_glob(s, placeholders)?;
        let account = atoms.contains(&Atom::Account);
        let group = atoms.contains(&Atom::Group);
        let labels = atoms.iter().any(|a| matches!(a, Atom::Label(_)));
        if atoms.iter().all(|a| matches!(a, Atom::Byte(_))) {
            return Ok(Pattern::Literal(s.to_string()));
        }
        Ok(Pattern::Glob {
            atoms,
            account,
            group,
            labels,
        })
    }

    /// Matches a value that has no placeholders to fill (account, type, service, groups).
    pub(crate) fn matches_plain(&self, value: &str) -> bool {
        match self {
            Pattern::Literal(s) => s == value,
            Pattern::Glob { atoms, .. } => glob_match(atoms, value.as_bytes()),
            Pattern::Regex(re) => re.is_match(value),
            // Placeholders are refused outside `name` at load time.
            Pattern::RegexTemplate { .. } => false,
        }
    }

    /// Matches `value` with the placeholders filled from the caller. With `${group}`, the pattern
    /// matches when it matches for any one of the caller's groups; with `${account}`, it never
    /// matches an anonymous caller; with `${labels.KEY}`, it never matches a caller without the
    /// label `KEY`.
    pub(crate) fn matches_for(&self, value: &str, who: &Identity) -> bool {
        let (account, group, labels) = match self {
            Pattern::Glob {
                account,
                group,
                labels,
                ..
            }
            | Pattern::RegexTemplate {
                account,
                group,
                labels,
                ..
            } => (*account, *group, *labels),
            _ => return self.matches_plain(value),
        };
        if !account && !group && !labels {
            return self.matches_plain(value);
        }
        if account && who.is_anonymous() {
            return false;
        }
        if labels && !self.labels_present(who) {
            return false;
        }
        if group {
            who.groups
                .iter()
                .any(|g| self.matches_filled(value, who, g))
        } else {
            self.matches_filled(value, who, "")
        }
    }

    /// Whether the caller has every label the pattern names.
    fn labels_present(&self, who: &Identity) -> bool {
        match self {
            Pattern::Glob { atoms, .. } => atoms.iter().all(|a| match a {
                Atom::Label(k) => who.labels.contains_key(k),
                _ => true,
            }),
            Pattern::RegexTemplate { parts, .. } => parts.iter().all(|p| match p {
                Part::Label(k) => who.labels.contains_key(k),
                _ => true,
            }),
            _ => true,
        }
    }

    fn matches_filled(&self, value: &str, who: &Identity, group: &str) -> bool {
        let account = who.account.as_str();
        match self {
            Pattern::Glob { atoms, .. } => {
                let mut filled = Vec::with_capacity(atoms.len() + account.len() + group.len());
                for a in atoms {
                    match a {
                        Atom::Account => filled.extend(account.bytes().map(Atom::Byte)),
                        Atom::Group => filled.extend(group.bytes().map(Atom::Byte)),
                        Atom::Label(k) => {
                            let v = who_label(who, k);
                            filled.extend(v.bytes().map(Atom::Byte));
                        }
                        other => filled.push(other.clone()),
                    }
                }
                glob_match(&filled, value.as_bytes())
            }
            Pattern::RegexTemplate { parts, .. } => {
                let mut src = String::new();
                for p in parts {
                    match p {
                        Part::Lit(s) => src.push_str(s),
                        Part::Account => src.push_str(&regex::escape(account)),
                        Part::Group => src.push_str(&regex::escape(group)),
                        Part::Label(k) => src.push_str(&regex::escape(who_label(who, k))),
                    }
                }
                // It compiled at load with a stand-in value; an escaped literal cannot make it
                // invalid, only (for huge values) too large, and then it does not match.
                compile_anchored(&src).is_ok_and(|re| re.is_match(value))
            }
            _ => self.matches_plain(value),
        }
    }
}

impl Pattern {
    /// The literal prefix as owned bytes (every matching value starts with it).
    pub(crate) fn prefix_owned(&self) -> Vec<u8> {
        match self {
            Pattern::Literal(s) => s.as_bytes().to_vec(),
            Pattern::Glob { atoms, .. } => atoms
                .iter()
                .map_while(|a| match a {
                    Atom::Byte(b) => Some(*b),
                    _ => None,
                })
                .collect(),
            Pattern::Regex(_) | Pattern::RegexTemplate { .. } => Vec::new(),
        }
    }
}

fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let detail = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
    format!("invalid regex: {detail}")
}

fn compile_anchored(inner: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{inner})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn parse_regex(inner: &str, placeholders: bool) -> Result<Pattern, String> {
    let mut parts = Vec::new();
    let mut rest = inner;
    let mut lit = String::new();
    while let Some(pos) = rest.find("${") {
        let after = &rest[pos + 2..];
        let name = after.split_once('}').map(|(n, _)| n);
        let part = match name {
            Some("account") => Part::Account,
            Some("group") => Part::Group,
            Some(n) if label_key(n).is_some() => Part::Label(label_key(n).unwrap_or_default()),
            // `${` may be legitimate regex syntax (`$` then a repetition is not), so only the
            // two placeholder names are special; anything else is left to the regex parser.
            _ => {
                lit.push_str(&rest[..pos + 2]);
                rest = after;
                continue;
            }
        };
        if !placeholders {
            return Err(
                "placeholders ${account}, ${group} and ${labels.KEY} are only allowed in `name`"
                    .into(),
            );
        }
        lit.push_str(&rest[..pos]);
        parts.push(Part::Lit(std::mem::take(&mut lit)));
        rest = &after[name.map_or(0, |n| n.len() + 1)..];
        parts.push(part);
    }
    lit.push_str(rest);
    if parts.is_empty() {
        return compile_anchored(&lit)
            .map(Pattern::Regex)
            .map_err(|e| one_line_regex_error(&e));
    }
    parts.push(Part::Lit(lit));
    let account = parts.contains(&Part::Account);
    let group = parts.contains(&Part::Group);
    let labels = parts.iter().any(|p| matches!(p, Part::Label(_)));
    // Check the template compiles with a stand-in value.
    let probe: String = parts
        .iter()
        .map(|p| match p {
            Part::Lit(s) => s.as_str(),
            _ => "x",
        })
        .collect();
    compile_anchored(&probe).map_err(|e| one_line_regex_error(&e))?;
    Ok(Pattern::RegexTemplate {
        parts,
        account,
        group,
        labels,
    })
}

fn parse_glob(s: &str, placeholders: bool) -> Result<Vec<Atom>, String> {
    let b = s.as_bytes();
    let mut atoms = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' => {
                if b.get(i + 1) == Some(&b'*') {
                    if b.get(i + 2) == Some(&b'*') {
                        return Err(
                            "three or more * in a row: use * (within one segment) or ** (across segments)"
                                .into(),
                        );
                    }
                    if b.get(i + 2) == Some(&b'/') && (i == 0 || b[i - 1] == b'/') {
                        atoms.push(Atom::Dirs);
                        i += 3;
                    } else {
                        atoms.push(Atom::Deep);
                        i += 2;
                    }
                } else {
                    atoms.push(Atom::Seg);
                    i += 1;
                }
            }
            b'?' => {
                atoms.push(Atom::One);
                i += 1;
            }
            b'$' if b.get(i + 1) == Some(&b'{') => {
                let Some(close) = s[i + 2..].find('}') else {
                    return Err("unclosed ${: write ${account}, ${group} or ${labels.KEY}".into());
                };
                let name = &s[i + 2..i + 2 + close];
                let atom = match name {
                    "account" => Atom::Account,
                    "group" => Atom::Group,
                    n if n.starts_with("labels.") => match label_key(n) {
                        Some(k) => Atom::Label(k),
                        None => {
                            let shown: String = n.chars().take(32).collect();
                            return Err(format!(
                                "${{{shown}}}: a label name is letters, digits, _ and -, at most {MAX_LABEL_KEY} characters"
                            ));
                        }
                    },
                    other => {
                        let shown: String = other.chars().take(32).collect();
                        return Err(format!(
                            "unknown placeholder ${{{shown}}}: only ${{account}}, ${{group}} and ${{labels.KEY}} exist"
                        ));
                    }
                };
                if !placeholders {
                    return Err(
                        "placeholders ${account}, ${group} and ${labels.KEY} are only allowed in `name`".into(),
                    );
                }
                atoms.push(atom);
                i += 2 + close + 1;
            }
            c => {
                atoms.push(Atom::Byte(c));
                i += 1;
            }
        }
    }
    Ok(atoms)
}

/// Longest label name a pattern or a rule may name.
pub(crate) const MAX_LABEL_KEY: usize = purser_core::MAX_LABEL_NAME;

/// Whether `k` is a label name: letters, digits, `_` and `-`, 1 to [`MAX_LABEL_KEY`] bytes
/// (the one rule, which the backends' configurations check too).
pub(crate) fn valid_label_key(k: &str) -> bool {
    purser_core::is_label_name(k)
}

/// The label name of a placeholder `labels.KEY`, when it is one.
fn label_key(placeholder: &str) -> Option<String> {
    placeholder
        .strip_prefix("labels.")
        .filter(|k| valid_label_key(k))
        .map(str::to_string)
}

/// The caller's label `key` (`""` when absent; patterns check presence first).
fn who_label<'a>(who: &'a Identity, key: &str) -> &'a str {
    who.labels.get(key).map_or("", String::as_str)
}

/// The length of the UTF-8 character starting at `text[j]`, `None` inside a character.
fn char_len_at(text: &[u8], j: usize) -> Option<usize> {
    let len = match text[j] {
        0x00..=0x7f => 1,
        0x80..=0xbf => return None,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    (j + len <= text.len()).then_some(len)
}

/// Matches a placeholder-free glob against the whole of `text`.
///
/// `cur[j]` says "the atoms so far can consume exactly `text[..j]`"; each atom maps that set to
/// the next one. Positions inside a multi-byte character die at the next literal or `?`, so `?`
/// means one character, not one byte.
pub(crate) fn glob_match(atoms: &[Atom], text: &[u8]) -> bool {
    let n = text.len();
    let mut cur = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    cur[0] = true;
    for atom in atoms {
        next.iter_mut().for_each(|x| *x = false);
        match atom {
            Atom::Byte(b) => {
                for j in 0..n {
                    if cur[j] && text[j] == *b {
                        next[j + 1] = true;
                    }
                }
            }
            Atom::One => {
                for j in 0..n {
                    if cur[j] && text[j] != b'/' {
                        if let Some(len) = char_len_at(text, j) {
                            next[j + len] = true;
                        }
                    }
                }
            }
            Atom::Seg => {
                let mut on = false;
                for j in 0..=n {
                    on |= cur[j];
                    next[j] = on;
                    if j < n && text[j] == b'/' {
                        on = false;
                    }
                }
            }
            Atom::Deep => {
                let mut on = false;
                for j in 0..=n {
                    on |= cur[j];
                    next[j] = on;
                }
            }
            Atom::Dirs => {
                let mut on = false;
                for j in 0..=n {
                    if cur[j] {
                        on = true;
                        next[j] = true;
                    }
                    if j < n && on && text[j] == b'/' {
                        next[j + 1] = true;
                    }
                }
            }
            // Filled in before matching; an unfilled placeholder matches nothing.
            Atom::Account | Atom::Group | Atom::Label(_) => return false,
        }
        std::mem::swap(&mut cur, &mut next);
        if !cur.iter().any(|x| *x) {
            return false;
        }
    }
    cur[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, v: &str) -> bool {
        Pattern::parse(p, true).unwrap().matches_plain(v)
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(g("team/*", "team/app"));
        assert!(!g("team/*", "team/app/sub"));
        assert!(g("team/*/x", "team/a/x"));
        assert!(!g("team/*/x", "team/a/b/x"));
        assert!(g("*", "app"));
        assert!(!g("*", "a/b"));
        assert!(g("team/*", "team/"));
        assert!(g("te*m/app", "team/app"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(g("team/**", "team/app"));
        assert!(g("team/**", "team/a/b/c"));
        assert!(!g("team/**", "team"));
        assert!(!g("team/**", "teams/app"));
        assert!(g("**/app", "app"));
        assert!(g("**/app", "a/b/app"));
        assert!(!g("**/app", "a/bapp"));
        assert!(g("a/**/b", "a/b"));
        assert!(g("a/**/b", "a/x/y/b"));
        assert!(g("**", "anything/at/all"));
        assert!(g("a**", "ab/c"));
    }

    #[test]
    fn question_mark_is_one_character_but_not_a_slash() {
        assert!(g("app?", "app1"));
        assert!(!g("app?", "app"));
        assert!(!g("app?", "app12"));
        assert!(!g("a?b", "a/b"));
        assert!(g("gr?upe", "gr\u{e9}upe"));
        assert!(!g("gr??upe", "gr\u{e9}upe"));
        assert!(g("\u{e9}?", "\u{e9}\u{e9}"));
    }

    #[test]
    fn literals_compare_whole_values() {
        assert!(g("team/app", "team/app"));
        assert!(!g("team/app", "team/app2"));
        assert!(matches!(
            Pattern::parse("team/app", true).unwrap(),
            Pattern::Literal(_)
        ));
    }

    #[test]
    fn regexes_are_anchored_to_the_whole_value() {
        assert!(g("/team/.*/", "team/a/b"));
        assert!(!g("/team/", "myteam/x"));
        assert!(!g("/app/", "app2"));
        assert!(g("/a|b/", "b"));
        assert!(!g("/a|b/", "ab"));
        let e = Pattern::parse("/team/[a-/", false).unwrap_err();
        assert!(e.starts_with("invalid regex:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn placeholders_are_filled_literally() {
        let p = Pattern::parse("${account}/**", true).unwrap();
        let dotted = Identity::new("a.b", vec![]);
        assert!(p.matches_for("a.b/x", &dotted));
        assert!(!p.matches_for("aXb/x", &dotted));
        let star = Identity::new("a*", vec![]);
        assert!(p.matches_for("a*/x", &star));
        assert!(!p.matches_for("abc/x", &star));
        assert!(!p.matches_for("/x", &Identity::anonymous()));

        let re = Pattern::parse("/${account}/.+/", true).unwrap();
        assert!(re.matches_for("a.b/x", &dotted));
        assert!(!re.matches_for("aXb/x", &dotted));

        let grp = Pattern::parse("teams/${group}/*", true).unwrap();
        let who = Identity::new("u", vec!["red".into(), "blue".into()]);
        assert!(grp.matches_for("teams/blue/app", &who));
        assert!(!grp.matches_for("teams/green/app", &who));
        assert!(!grp.matches_for("teams/blue/app", &Identity::new("u", vec![])));
    }

    #[test]
    fn refuses_bad_globs() {
        assert!(Pattern::parse("a/***", true).is_err());
        assert!(Pattern::parse("${acount}/x", true).is_err());
        assert!(Pattern::parse("${account", true).is_err());
        assert!(Pattern::parse("${account}", false).is_err());
        assert!(Pattern::parse(&"a".repeat(MAX_PATTERN_LEN + 1), false).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            Pattern::parse("team/a*", true).unwrap().prefix_owned(),
            b"team/a"
        );
        assert_eq!(
            Pattern::parse("u/${account}/*", true)
                .unwrap()
                .prefix_owned(),
            b"u/"
        );
        assert!(Pattern::parse("/team/.*/", true)
            .unwrap()
            .prefix_owned()
            .is_empty());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// The same glob written as an anchored regex, the obvious way.
    fn reference(glob: &str) -> Regex {
        let b = glob.as_bytes();
        let mut re = String::from("^");
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'*' && b.get(i + 1) == Some(&b'*') {
                if b.get(i + 2) == Some(&b'/') && (i == 0 || b[i - 1] == b'/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
            } else if b[i] == b'*' {
                re.push_str("[^/]*");
                i += 1;
            } else if b[i] == b'?' {
                re.push_str("[^/]");
                i += 1;
            } else {
                re.push_str(&regex::escape(&glob[i..i + 1]));
                i += 1;
            }
        }
        re.push('$');
        Regex::new(&re).unwrap()
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_regex_translation(
            glob in "[ab/*?]{0,12}",
            value in "[ab/]{0,12}",
        ) {
            prop_assume!(!glob.contains("***"));
            // `/.../` is a regex, not a glob.
            prop_assume!(!(glob.len() >= 2 && glob.starts_with('/') && glob.ends_with('/')));
            let p = Pattern::parse(&glob, false).unwrap();
            prop_assert_eq!(p.matches_plain(&value), reference(&glob).is_match(&value));
        }

        #[test]
        fn any_pattern_and_value_never_panic(pattern in ".{0,64}", value in ".{0,64}") {
            if let Ok(p) = Pattern::parse(&pattern, true) {
                let who = Identity::new(value.clone(), vec![pattern.clone()]);
                let _ = p.matches_plain(&value);
                let _ = p.matches_for(&value, &who);
            }
        }
    }
}
