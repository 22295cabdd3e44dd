//! The purser policy: which actions a caller gets on a registry resource.
//!
//! ```
//! use purser_authz::{Policy, render_explanation};
//! use purser_core::{Identity, RequestContext, ResourceScope};
//!
//! let policy = Policy::parse(r#"
//! rules:
//!   - name: own namespace
//!     match: { account: "*", name: "${account}/**" }
//!     actions: [pull, push]
//!   - name: public read
//!     match: { name: "public/**" }
//!     actions: [pull]
//! "#, "policy.yaml").unwrap();
//!
//! let alice = Identity::new("alice", vec![]);
//! let ctx = RequestContext::default();
//! let scope: ResourceScope = "repository:alice/app:pull,push".parse().unwrap();
//! let grant = policy.authorize(&alice, &ctx, &scope);
//! assert_eq!(grant.actions, vec!["pull", "push"]);
//!
//! let scopes = ["repository:public/x:pull,push".parse().unwrap()];
//! let text = render_explanation(&policy.explain(&Identity::anonymous(), &ctx, &scopes));
//! assert_eq!(text, "repository:public/x:pull,push -> pull (rule 1 \"public read\": allows only pull)\n");
//! ```
//!
//! Rules are tried in file order and the first whose match fields all hold decides. The file is
//! read with [`Policy::parse`], which reports every problem with its `file:line`; the server
//! keeps the current policy in a [`purser_core::Reloadable`] and [`PolicyAuthorizer`] reads it
//! once per decision, so a reload never changes a decision halfway.
#![forbid(unsafe_code)]

mod cap;
mod cases;
mod diverge;
mod error;
mod explain;
mod index;
pub mod net;
mod pattern;
mod policy;
mod yaml;

use std::sync::Arc;

use purser_core::{Authorizer, Grant, Identity, Reloadable, RequestContext, ResourceScope};

pub use cap::{apply_cap, check_cap};
pub use cases::{run_cases, run_cases_with_labels, Case, CaseFailure, CaseFile, MAX_CASES};
pub use diverge::Divergence;
pub use error::{Loc, PolicyError, PolicyErrors};
pub use explain::{render_explanation, Explanation, Verdict};
pub use pattern::MAX_PATTERN_LEN;
pub use policy::{Policy, MAX_LIST, MAX_POLICY_BYTES, MAX_RULES, MAX_RULE_NAME};
pub use yaml::MAX_ERRORS;

/// The [`Authorizer`] over a reloadable policy: each call decides with the policy current at
/// that moment. Watching the file and storing new versions is the server's job.
#[derive(Clone, Debug)]
pub struct PolicyAuthorizer {
    holder: Arc<Reloadable<Policy>>,
}

impl PolicyAuthorizer {
    pub fn new(holder: Arc<Reloadable<Policy>>) -> Self {
        PolicyAuthorizer { holder }
    }

    /// The holder, for the reloader and for the `purser_policy_rules` gauge.
    pub fn holder(&self) -> &Arc<Reloadable<Policy>> {
        &self.holder
    }
}

impl Authorizer for PolicyAuthorizer {
    fn authorize(&self, who: &Identity, ctx: &RequestContext, scope: &ResourceScope) -> Grant {
        self.holder.load().authorize(who, ctx, scope)
    }

    /// One load of the holder for the whole request: a reload in the middle of it does not
    /// change the policy its remaining scopes are decided with.
    fn authorize_all(
        &self,
        who: &Identity,
        ctx: &RequestContext,
        scopes: &[ResourceScope],
    ) -> Vec<Grant> {
        let policy = self.holder.load();
        scopes
            .iter()
            .map(|scope| policy.authorize(who, ctx, scope))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn version(name: &str) -> Policy {
        let text = format!(
            "rules:\n  - name: {name}\n    match: {{ name: \"**\" }}\n    actions: [pull]\n"
        );
        Policy::parse(&text, "policy.yaml").unwrap()
    }

    #[test]
    fn one_request_is_decided_by_one_policy_version_across_reloads() {
        let holder = Arc::new(Reloadable::new(version("v1")));
        let authz = PolicyAuthorizer::new(holder.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    holder.store(version(if n % 2 == 0 { "v2" } else { "v1" }));
                    n += 1;
                }
                n
            })
        };
        let scopes: Vec<ResourceScope> = (0..8)
            .map(|i| format!("repository:r{i}:pull").parse().unwrap())
            .collect();
        let who = Identity::new("alice", vec![]);
        let ctx = RequestContext::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let grants = authz.authorize_all(&who, &ctx, &scopes);
            let names: std::collections::BTreeSet<&str> = grants
                .iter()
                .map(|g| g.rule.as_ref().unwrap().name.as_str())
                .collect();
            assert_eq!(names.len(), 1, "one request saw two policies: {names:?}");
            seen.extend(names.into_iter().map(str::to_string));
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = writer.join().unwrap();
        assert!(swaps > 0, "the policy was never swapped during the test");
        assert!(!seen.is_empty());
    }
}
