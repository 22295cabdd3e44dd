//! The registry's `WWW-Authenticate: Bearer` challenge: realm, service, and error details.

use std::collections::BTreeMap;

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` challenge, keys lower-cased.
pub fn parse_bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(' ').unwrap_or((rest, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = BTreeMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end?..])
        } else {
            let i = after.find(',').unwrap_or(after.len());
            (after[..i].trim().to_string(), &after[i..])
        };
        out.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quotes_and_commas() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg, one",scope="repository:a:pull",error="invalid_token""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "http://127.0.0.1:1/token");
        assert_eq!(c["service"], "reg, one");
        assert_eq!(c["error"], "invalid_token");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }
}
