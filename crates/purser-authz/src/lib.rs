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

mod cases;
mod error;
mod explain;
mod index;
mod pattern;
mod policy;
mod yaml;

use std::sync::Arc;

use purser_core::{Authorizer, Grant, Identity, Reloadable, RequestContext, ResourceScope};

pub use cases::{run_cases, Case, CaseFailure, CaseFile, MAX_CASES};
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
}
