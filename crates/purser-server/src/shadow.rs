//! The shadow policy (`authz.shadow_policy_file`): a second policy that decides every request
//! beside the live one, without any effect on the answer. The issue layer asks it once per
//! request (one evaluation per scope, the same cost as the live decision), compares the two
//! decisions scope by scope ([`purser_authz::Divergence`]), counts the comparison in
//! `purser_policy_shadow_decisions_total` and hands the differences to the audit record.
//!
//! The file is watched like the policy, but its failures stay its own: a shadow file that is
//! missing or does not load leaves the shadow off (at start) or the last good one in force,
//! is logged and counted under the reload source `shadow_policy`, and neither stops the server
//! nor makes it unready.

use std::sync::Arc;

use purser_authz::{Divergence, Policy};
use purser_core::{Grant, Identity, Reloadable, RequestContext, ResourceScope};

/// The reload source's name: `purser_reloads_total{source="shadow_policy"}`.
pub const SOURCE: &str = "shadow_policy";

/// The shadow policy in use, or none (never loaded yet).
#[derive(Debug)]
pub struct Shadow {
    holder: Arc<Reloadable<Option<Policy>>>,
}

/// One requested scope on which the shadow policy decided otherwise than the live one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowDiff {
    pub scope: ResourceScope,
    pub live: Grant,
    pub shadow: Grant,
    pub outcome: Divergence,
}

impl Shadow {
    pub fn new(holder: Arc<Reloadable<Option<Policy>>>) -> Self {
        Shadow { holder }
    }

    /// The holder the reloader fills.
    pub fn holder(&self) -> &Arc<Reloadable<Option<Policy>>> {
        &self.holder
    }

    /// The shadow's decision of every scope, with one version of the shadow policy; `None`
    /// while no shadow policy has loaded.
    pub fn authorize_all(
        &self,
        who: &Identity,
        ctx: &RequestContext,
        scopes: &[ResourceScope],
    ) -> Option<Vec<Grant>> {
        let policy = self.holder.load();
        let policy = policy.as_ref().as_ref()?;
        Some(
            scopes
                .iter()
                .map(|scope| policy.authorize(who, ctx, scope))
                .collect(),
        )
    }
}

/// The audit record's `shadow` field: a JSON array with, per scope decided otherwise,
/// `{"scope":..,"outcome":..,"live":{"granted":[..],"rule":..},"shadow":{..}}`, where `rule`
/// is `{"index":N,"name":".."}` or `null`, as in the `scopes` field.
pub fn diffs_json(diffs: &[ShadowDiff]) -> String {
    let side = |g: &Grant| {
        serde_json::json!({
            "granted": g.actions,
            "rule": g.rule.as_ref().map(|r| serde_json::json!({"index": r.index, "name": r.name})),
        })
    };
    let items: Vec<serde_json::Value> = diffs
        .iter()
        .map(|d| {
            serde_json::json!({
                "scope": d.scope.to_string(),
                "outcome": d.outcome.label(),
                "live": side(&d.live),
                "shadow": side(&d.shadow),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, "shadow.yaml").unwrap()
    }

    #[test]
    fn no_shadow_until_one_loads_then_the_latest() {
        let holder = Arc::new(Reloadable::new(None));
        let shadow = Shadow::new(holder.clone());
        let who = Identity::new("alice", vec![]);
        let scopes: Vec<ResourceScope> = vec!["repository:a/b:pull,push".parse().unwrap()];
        let ctx = RequestContext::default();
        assert!(shadow.authorize_all(&who, &ctx, &scopes).is_none());
        holder.store(Some(policy(
            "rules:\n  - { name: r, match: { name: \"a/**\" }, actions: [pull] }\n",
        )));
        let grants = shadow.authorize_all(&who, &ctx, &scopes).unwrap();
        assert_eq!(grants[0].actions, ["pull"]);
        assert_eq!(grants[0].rule.as_ref().unwrap().name, "r");
    }

    #[test]
    fn the_audit_field_names_both_sides() {
        let d = ShadowDiff {
            scope: "repository:a/b:pull,push".parse().unwrap(),
            live: Grant {
                actions: vec!["pull".into()],
                rule: Some(purser_core::RuleRef {
                    index: 1,
                    name: "read \"a\"".into(),
                }),
            },
            shadow: Grant::none(),
            outcome: Divergence::Less,
        };
        let v: serde_json::Value = serde_json::from_str(&diffs_json(&[d])).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "scope": "repository:a/b:pull,push",
                "outcome": "less",
                "live": {"granted": ["pull"], "rule": {"index": 1, "name": "read \"a\""}},
                "shadow": {"granted": [], "rule": null},
            }])
        );
    }
}
