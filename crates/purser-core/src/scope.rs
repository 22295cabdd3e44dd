use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest repository name accepted (the distribution spec's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest single action accepted.
pub const MAX_ACTION_LEN: usize = 32;
const MAX_TYPE_LEN: usize = 64;
const MAX_ACTIONS: usize = 16;

/// One requested resource: `type[(class)]:name:action,action`. The class is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub rtype: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Why a scope string was refused; the message is safe to show to the client.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "malformed scope {0:?}: expected type:name:actions, e.g. repository:team/app:pull,push"
    )]
    Shape(String),
    #[error("malformed scope {scope:?}: {what}")]
    Invalid { scope: String, what: &'static str },
}

fn bad(scope: &str, what: &'static str) -> ScopeError {
    ScopeError::Invalid {
        scope: truncate(scope),
        what,
    }
}

fn truncate(s: &str) -> String {
    // Errors echo the scope; keep that echo short for hostile input.
    s.chars().take(80).collect()
}

impl FromStr for ResourceScope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The name may itself hold a colon (`host:port/repo`), so the type ends at the first
        // colon and the actions start after the last one.
        let (head, rest) = s
            .split_once(':')
            .ok_or_else(|| ScopeError::Shape(truncate(s)))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| ScopeError::Shape(truncate(s)))?;
        let rtype = match head.split_once('(') {
            None => head,
            Some((t, class)) => {
                let class = class
                    .strip_suffix(')')
                    .ok_or_else(|| bad(s, "unclosed resource class"))?;
                if class.is_empty() || !class.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad(s, "resource class must be letters and digits"));
                }
                t
            }
        };
        if rtype.is_empty() || rtype.len() > MAX_TYPE_LEN {
            return Err(bad(s, "resource type must be 1 to 64 characters"));
        }
        if !rtype
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(bad(s, "resource type must be lowercase letters and digits"));
        }
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(bad(s, "resource name must be 1 to 255 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
        {
            return Err(bad(
                s,
                "resource name has a character outside [A-Za-z0-9._-/:]",
            ));
        }
        let mut list: Vec<String> = Vec::new();
        for a in actions.split(',') {
            if a.is_empty() || a.len() > MAX_ACTION_LEN {
                return Err(bad(s, "each action must be 1 to 32 characters"));
            }
            if !(a == "*"
                || a.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                }))
            {
                return Err(bad(s, "actions must be lowercase words or *"));
            }
            if !list.iter().any(|x| x == a) {
                list.push(a.to_string());
            }
        }
        if list.len() > MAX_ACTIONS {
            return Err(bad(s, "too many actions"));
        }
        Ok(ResourceScope {
            rtype: rtype.to_string(),
            name: name.to_string(),
            actions: list,
        })
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.rtype, self.name, self.actions.join(","))
    }
}

impl ResourceScope {
    /// Parses every scope of a request: each item may hold several scopes separated by spaces
    /// (the OAuth2 form). Scopes naming the same resource are merged, actions in first-seen order,
    /// so the token has one access entry per resource.
    pub fn parse_all<'a, I>(items: I) -> Result<Vec<ResourceScope>, ScopeError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut out: Vec<ResourceScope> = Vec::new();
        for item in items {
            for s in item.split_ascii_whitespace() {
                let scope: ResourceScope = s.parse()?;
                match out
                    .iter_mut()
                    .find(|o| o.rtype == scope.rtype && o.name == scope.name)
                {
                    Some(existing) => {
                        for a in scope.actions {
                            if !existing.actions.contains(&a) {
                                existing.actions.push(a);
                            }
                        }
                    }
                    None => out.push(scope),
                }
            }
        }
        Ok(out)
    }
}

/// One entry of a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub rtype: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Longest scope cap accepted, in bytes.
pub const MAX_CAP_LEN: usize = 1024;

/// One entry of a credential's scope cap, as written: `repository:ci/app/**:pull,push`. The
/// type and the name are patterns of the policy's language (globs or `/regex/`, no
/// placeholders), checked and matched by purser-authz; `*` among the actions stands for every
/// action. Here only the shape is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScopeCap {
    pub rtype: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl FromStr for ScopeCap {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_CAP_LEN {
            return Err(bad(s, "a scope cap is at most 1024 bytes"));
        }
        // As for a requested scope: the type ends at the first colon, the actions start after
        // the last one, so a name may hold a colon (`host:port/**`, a regex).
        let (rtype, rest) = s
            .split_once(':')
            .ok_or_else(|| ScopeError::Shape(truncate(s)))?;
        let (name, actions) = rest
            .rsplit_once(':')
            .ok_or_else(|| ScopeError::Shape(truncate(s)))?;
        if rtype.is_empty() || name.is_empty() {
            return Err(ScopeError::Shape(truncate(s)));
        }
        let actions: Vec<String> = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if actions.is_empty() {
            return Err(bad(s, "list at least one action (pull, push, delete or *)"));
        }
        if actions.len() > MAX_ACTIONS || actions.iter().any(|a| a.len() > MAX_ACTION_LEN) {
            return Err(bad(s, "too many or too long actions"));
        }
        Ok(ScopeCap {
            rtype: rtype.to_string(),
            name: name.to_string(),
            actions,
        })
    }
}

impl fmt::Display for ScopeCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.rtype, self.name, self.actions.join(","))
    }
}

impl ScopeCap {
    /// Whether the cap lets `action` through (its type and name already matched).
    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == "*" || a == action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_caps_read_their_shape() {
        let c: ScopeCap = "repository:ci/app/**:pull,push".parse().unwrap();
        assert_eq!(
            (c.rtype.as_str(), c.name.as_str()),
            ("repository", "ci/app/**")
        );
        assert_eq!(c.actions, ["pull", "push"]);
        assert_eq!(c.to_string(), "repository:ci/app/**:pull,push");
        assert!(c.allows_action("push") && !c.allows_action("delete"));
        let c: ScopeCap = "repository:/reg:[0-9]+/x/:*".parse().unwrap();
        assert_eq!(c.name, "/reg:[0-9]+/x/");
        assert!(c.allows_action("delete"));
        for bad in [
            "repository",
            "repository:x",
            ":x:pull",
            "repository::pull",
            "repository:x:",
        ] {
            assert!(bad.parse::<ScopeCap>().is_err(), "{bad}");
        }
    }

    fn p(s: &str) -> ResourceScope {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_common_shapes() {
        assert_eq!(
            p("repository:team/app:pull,push").actions,
            vec!["pull", "push"]
        );
        let c = p("registry:catalog:*");
        assert_eq!(
            (c.rtype.as_str(), c.name.as_str(), c.actions[0].as_str()),
            ("registry", "catalog", "*")
        );
        let hp = p("repository:localhost:5000/team/app:pull");
        assert_eq!(hp.name, "localhost:5000/team/app");
        let plugin = p("repository(plugin):vieux/sshfs:pull");
        assert_eq!(plugin.rtype, "repository");
        assert_eq!(plugin.name, "vieux/sshfs");
        assert_eq!(
            p("repository:a:pull,pull,push").actions,
            vec!["pull", "push"]
        );
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "",
            "repository",
            "repository:app",
            "repository::pull",
            "repository:app:",
            "repository:app:pull,",
            "Repository:app:pull",
            "repository:app name:pull",
            "repository:app:PULL",
            "repository(:app:pull",
            "repository(x:app:pull",
            "repository:app\0:pull",
            "repository:app:pu ll",
        ] {
            assert!(
                s.parse::<ResourceScope>().is_err(),
                "{s:?} should be refused"
            );
        }
        let long = format!("repository:{}:pull", "a".repeat(MAX_NAME_LEN + 1));
        assert!(long.parse::<ResourceScope>().is_err());
    }

    #[test]
    fn parse_all_splits_on_spaces_and_merges_same_resource() {
        let all = ResourceScope::parse_all([
            "repository:a:pull repository:b:pull",
            "repository:a:pull,push",
        ])
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].actions, vec!["pull", "push"]);
        assert_eq!(all[1].name, "b");
    }

    #[test]
    fn display_round_trips() {
        let s = "repository:localhost:5000/x:pull,push";
        assert_eq!(p(s).to_string(), s);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Names the distribution spec allows: path components, optionally after `host:port/`.
        fn valid_name() -> impl Strategy<Value = String> {
            let component = "[a-z0-9]{1,8}([._-][a-z0-9]{1,4})?";
            (
                proptest::option::of("[a-z0-9.]{1,12}:[0-9]{1,5}"),
                prop::collection::vec(component, 1..5),
            )
                .prop_map(|(host, parts)| {
                    let path = parts.join("/");
                    match host {
                        Some(h) => format!("{h}/{path}"),
                        None => path,
                    }
                })
        }

        fn valid_actions() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(
                prop_oneof![
                    Just("pull".to_owned()),
                    Just("push".to_owned()),
                    Just("delete".to_owned()),
                    Just("*".to_owned()),
                    "[a-z][a-z0-9_-]{0,31}",
                ],
                1..6,
            )
        }

        /// Scope-looking text: the separators and characters that matter, and anything else.
        fn scope_like() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just(":".to_owned()),
                Just(",".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just("/".to_owned()),
                Just(" ".to_owned()),
                Just("*".to_owned()),
                Just("repository".to_owned()),
                Just("pull".to_owned()),
                "[a-zA-Z0-9._-]{1,10}",
                any::<char>().prop_map(String::from),
            ];
            prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn never_panics_and_bounds_what_it_accepts(s in scope_like()) {
                if let Ok(scope) = s.parse::<ResourceScope>() {
                    prop_assert!(!scope.rtype.is_empty() && scope.rtype.len() <= MAX_TYPE_LEN);
                    prop_assert!(!scope.name.is_empty() && scope.name.len() <= MAX_NAME_LEN);
                    prop_assert!(!scope.actions.is_empty() && scope.actions.len() <= MAX_ACTIONS);
                    prop_assert!(scope.actions.iter().all(|a| !a.is_empty() && a.len() <= MAX_ACTION_LEN));
                    prop_assert!(!scope.name.contains(['\0', ' ', ',']));
                    // What is accepted prints back to text that parses to the same scope.
                    prop_assert_eq!(scope.to_string().parse::<ResourceScope>(), Ok(scope.clone()));
                }
            }

            #[test]
            fn never_panics_on_any_string(s in any::<String>()) {
                let _ = s.parse::<ResourceScope>();
                let _ = ResourceScope::parse_all([s.as_str()]);
            }

            #[test]
            fn well_formed_scopes_parse_to_their_parts(
                name in valid_name(),
                actions in valid_actions(),
                class in proptest::option::of("[a-z0-9]{1,8}"),
            ) {
                let head = match &class {
                    Some(c) => format!("repository({c})"),
                    None => "repository".to_owned(),
                };
                let text = format!("{head}:{name}:{}", actions.join(","));
                let scope = text.parse::<ResourceScope>().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(scope.rtype.as_str(), "repository");
                prop_assert_eq!(&scope.name, &name);
                let mut unique: Vec<String> = Vec::new();
                for a in actions {
                    if !unique.contains(&a) {
                        unique.push(a);
                    }
                }
                prop_assert_eq!(scope.actions, unique);
            }

            #[test]
            fn parse_all_keeps_one_entry_per_resource(
                items in prop::collection::vec((0usize..4, valid_actions()), 0..12),
            ) {
                let texts: Vec<String> = items
                    .iter()
                    .map(|(n, a)| format!("repository:r{n}:{}", a.join(",")))
                    .collect();
                let all = ResourceScope::parse_all(texts.iter().map(String::as_str))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (i, a) in all.iter().enumerate() {
                    prop_assert!(!all[i + 1..].iter().any(|b| b.name == a.name));
                    // Every requested action of that resource is kept, none added.
                    let wanted: Vec<&String> = items
                        .iter()
                        .filter(|(n, _)| format!("r{n}") == a.name)
                        .flat_map(|(_, acts)| acts)
                        .collect();
                    prop_assert!(a.actions.iter().all(|x| wanted.contains(&x)));
                    prop_assert!(wanted.iter().all(|x| a.actions.contains(x)));
                }
            }
        }
    }
}
