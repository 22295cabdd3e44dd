//! The registry's `auth:` block: a `token:` there, and nothing beside it.

use super::{Finding, RegistryToken};

/// The registry config must have an `auth.token` block; without one nothing else applies.
pub(super) fn check_token_block(reg: &RegistryToken) -> Result<(), Finding> {
    if reg.present {
        return Ok(());
    }
    let also = if reg.other_auth.is_empty() {
        String::new()
    } else {
        format!(" (it uses auth.{})", reg.other_auth.join(", auth."))
    };
    Err(Finding::problem(
        "auth",
        format!("the registry config has no auth.token block{also}"),
        "paste the auth.token block of docs/quickstart.md into the registry's config.yml",
    ))
}

/// The registry accepts exactly one auth type: with `token:` beside another (Debian's default
/// config ships `htpasswd:`), it refuses to start with "must provide exactly one type".
/// Silent when `token:` is the only one, so a good config reads as before.
pub(super) fn check_single_type(reg: &RegistryToken) -> Option<Finding> {
    if !reg.present || reg.other_auth.is_empty() {
        return None;
    }
    let blocks: Vec<String> = reg.other_auth.iter().map(|t| format!("`{t}:`")).collect();
    let (them, block) = match blocks.as_slice() {
        [one] => (one.clone(), "block"),
        [init @ .., last] => (format!("{} and {last}", init.join(", ")), "blocks"),
        [] => return None,
    };
    Some(Finding::problem(
        "auth",
        format!(
            "the registry config has auth.token and also auth.{}: the registry refuses to start (\"must provide exactly one type\")",
            reg.other_auth.join(", auth.")
        ),
        format!("remove the {them} {block} under `auth:`; the registry accepts exactly one auth type"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn with(other: &[&str]) -> RegistryToken {
        RegistryToken {
            present: true,
            other_auth: other.iter().map(|s| s.to_string()).collect(),
            ..RegistryToken::default()
        }
    }

    #[test]
    fn token_alone_is_silent() {
        assert_eq!(check_single_type(&with(&[])), None);
    }

    #[test]
    fn token_beside_htpasswd_names_the_block_to_remove() {
        let f = check_single_type(&with(&["htpasswd"])).expect("a finding");
        assert_eq!((f.status, f.check.as_str()), (Status::Problem, "auth"));
        assert_eq!(
            f.to_string(),
            "problem auth: the registry config has auth.token and also auth.htpasswd: the registry refuses to start (\"must provide exactly one type\") -> remove the `htpasswd:` block under `auth:`; the registry accepts exactly one auth type"
        );
    }

    #[test]
    fn several_others_are_all_named() {
        let f = check_single_type(&with(&["htpasswd", "silly"])).expect("a finding");
        assert!(
            f.fix
                .starts_with("remove the `htpasswd:` and `silly:` blocks under `auth:`"),
            "{f}"
        );
    }

    #[test]
    fn without_token_the_missing_block_is_the_finding() {
        let reg = RegistryToken {
            other_auth: vec!["htpasswd".into()],
            ..RegistryToken::default()
        };
        assert_eq!(check_single_type(&reg), None);
        let f = check_token_block(&reg).unwrap_err();
        assert!(f.what.contains("(it uses auth.htpasswd)"), "{f}");
    }
}
