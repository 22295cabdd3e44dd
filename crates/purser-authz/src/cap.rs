//! Scope caps: the most a credential (a machine token) may ever be granted, written in the
//! policy's pattern language (`repository:ci/app/**:pull,push`) and applied after the policy,
//! so that what a caller gets is requested ∩ policy ∩ cap.
//!
//! ```
//! use purser_core::{ResourceScope, ScopeCap};
//!
//! let cap: Vec<ScopeCap> = vec!["repository:ci/app/**:pull,push".parse().unwrap()];
//! purser_authz::check_cap(&cap[0]).unwrap();
//! let scope: ResourceScope = "repository:ci/app/web:pull,push,delete".parse().unwrap();
//! let granted = vec!["pull".to_string(), "push".into(), "delete".into()];
//! assert_eq!(purser_authz::apply_cap(&cap, &scope, granted), ["pull", "push"]);
//! let other: ResourceScope = "repository:prod/app:pull".parse().unwrap();
//! assert!(purser_authz::apply_cap(&cap, &other, vec!["pull".into()]).is_empty());
//! ```

use purser_core::{ResourceScope, ScopeCap};

use crate::pattern::Pattern;

/// Whether the cap's type and name are patterns of the policy's language (placeholders are
/// refused: a cap is the same for every caller). The message is safe to show.
pub fn check_cap(cap: &ScopeCap) -> Result<(), String> {
    Pattern::parse(&cap.rtype, false).map_err(|e| format!("type {:?}: {e}", cap.rtype))?;
    Pattern::parse(&cap.name, false).map_err(|e| format!("name {:?}: {e}", cap.name))?;
    Ok(())
}

/// The actions of `granted` that some entry of `cap` lets through for `scope`, in their order.
/// An entry whose patterns do not compile lets nothing through (they are checked at load).
pub fn apply_cap(cap: &[ScopeCap], scope: &ResourceScope, granted: Vec<String>) -> Vec<String> {
    if granted.is_empty() {
        return granted;
    }
    let matching: Vec<&ScopeCap> = cap
        .iter()
        .filter(|c| {
            let hit = |pattern: &str, value: &str| {
                Pattern::parse(pattern, false).is_ok_and(|p| p.matches_plain(value))
            };
            hit(&c.rtype, &scope.rtype) && hit(&c.name, &scope.name)
        })
        .collect();
    granted
        .into_iter()
        .filter(|a| matching.iter().any(|c| c.allows_action(a)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<ScopeCap> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }
    fn apply(cap: &[ScopeCap], scope: &str, granted: &[&str]) -> Vec<String> {
        let scope: ResourceScope = scope.parse().unwrap();
        apply_cap(cap, &scope, granted.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_cap_narrows_what_the_policy_granted() {
        let cap = caps(&["repository:ci/app/**:pull,push", "repository:base/*:pull"]);
        assert_eq!(
            apply(&cap, "repository:ci/app/x/y:push", &["push"]),
            ["push"]
        );
        assert_eq!(
            apply(&cap, "repository:ci/app/x:*", &["pull", "push", "delete"]),
            ["pull", "push"]
        );
        assert_eq!(
            apply(&cap, "repository:base/os:pull,push", &["pull", "push"]),
            ["pull"]
        );
        // `*` matches one segment only; outside every entry nothing passes.
        assert!(apply(&cap, "repository:base/os/x:pull", &["pull"]).is_empty());
        assert!(apply(&cap, "repository:ci/other:pull", &["pull"]).is_empty());
        assert!(apply(&cap, "registry:catalog:*", &["*"]).is_empty());
        // The cap never adds what the policy did not grant.
        assert!(apply(&cap, "repository:ci/app/x:push", &[]).is_empty());
        // An empty cap grants nothing.
        assert!(apply(&[], "repository:ci/app/x:pull", &["pull"]).is_empty());
    }

    #[test]
    fn wildcards_regexes_and_bad_patterns() {
        let cap = caps(&["*:/team-[0-9]+/.*/:*"]);
        assert!(check_cap(&cap[0]).is_ok());
        assert_eq!(
            apply(
                &cap,
                "repository:team-7/app:pull,delete",
                &["pull", "delete"]
            ),
            ["pull", "delete"]
        );
        assert!(apply(&cap, "repository:team-x/app:pull", &["pull"]).is_empty());
        let bad = caps(&["repository:${account}/**:pull"]);
        assert!(check_cap(&bad[0]).unwrap_err().contains("account"));
        let bad = caps(&["repository:/(/:pull"]);
        assert!(check_cap(&bad[0]).unwrap_err().contains("regex"));
        assert!(apply(&bad, "repository:x:pull", &["pull"]).is_empty());
    }
}
