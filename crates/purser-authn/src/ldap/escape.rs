//! Escaping of user-supplied values before they reach a search filter or a DN, and the
//! filling of the `{username}` / `{dn}` placeholders in the configured templates.
//!
//! A user name is attacker-controlled: unescaped, `*` would match every entry of a filter and
//! `alice)(uid=*` would rewrite it; in a DN, `,` would move the bind to another subtree.

use std::fmt::Write;

/// Escapes a value for an assertion inside a search filter (RFC 4515 section 3).
///
/// `*`, `(`, `)`, `\` and NUL must be escaped; every byte outside printable ASCII is escaped
/// too (the RFC allows it), so the filter sent on the wire is plain ASCII and matches the
/// value's UTF-8 bytes.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => push_hex(&mut out, b),
            0x20..=0x7e => out.push(b as char),
            _ => push_hex(&mut out, b),
        }
    }
    out
}

/// Escapes a value for use as an attribute value in a DN (RFC 4514 section 2.4).
///
/// The special characters get a backslash, a leading space or `#` and a trailing space are
/// escaped, NUL and other control characters become `\XX`. Non-ASCII characters stay as UTF-8,
/// which RFC 4514 allows.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => push_hex(&mut out, c as u8),
            c => out.push(c),
        }
    }
    out
}

fn push_hex(out: &mut String, b: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\{b:02x}");
}

/// Replaces each `{name}` of `template` whose name is in `values` by its (already escaped)
/// value, in one pass: a substituted value is never scanned again, so a user name that itself
/// contains `{dn}` stays literal. Unknown `{...}` sequences are kept as written.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let replaced = after.find('}').and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, end))
        });
        match replaced {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_escapes_the_specials() {
        assert_eq!(filter_value("alice"), "alice");
        assert_eq!(filter_value("*"), "\\2a");
        assert_eq!(filter_value("alice)(uid=*"), "alice\\29\\28uid=\\2a");
        assert_eq!(filter_value("a\\b"), "a\\5cb");
        assert_eq!(filter_value("a\0b"), "a\\00b");
        assert_eq!(filter_value("zoë"), "zo\\c3\\ab");
    }

    #[test]
    fn escaped_filters_parse_and_stay_one_assertion() {
        for name in [
            "*",
            "alice)(uid=*",
            "alice*",
            "\\",
            "a\0b",
            "zoë",
            "(|(a=b))",
        ] {
            let f = format!("(uid={})", filter_value(name));
            assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
            assert!(!f[1..f.len() - 1].contains(['(', ')', '*']), "{f}");
        }
    }

    #[test]
    fn dn_escapes_the_specials() {
        assert_eq!(dn_value("alice"), "alice");
        assert_eq!(dn_value("dan, jr"), "dan\\, jr");
        assert_eq!(dn_value("a+b=c"), "a\\+b\\=c");
        assert_eq!(dn_value(" x "), "\\ x\\ ");
        assert_eq!(dn_value("#x#"), "\\#x#");
        assert_eq!(dn_value("a\\b\"<>;"), "a\\\\b\\\"\\<\\>\\;");
        assert_eq!(dn_value("a\0b"), "a\\00b");
        assert_eq!(dn_value("zoë"), "zoë");
        assert_eq!(dn_value(""), "");
        assert_eq!(dn_value(" "), "\\ ");
    }

    #[test]
    fn fill_is_single_pass() {
        assert_eq!(
            fill(
                "(&(member={dn})(x={username}))",
                &[("dn", "D"), ("username", "{dn}")]
            ),
            "(&(member=D)(x={dn}))"
        );
        assert_eq!(
            fill("{unknown}{username}", &[("username", "u")]),
            "{unknown}u"
        );
        assert_eq!(fill("{", &[("username", "u")]), "{");
        assert_eq!(fill("a{username", &[("username", "u")]), "a{username");
    }
}
