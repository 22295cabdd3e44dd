//! `purser policy explain`: the decision for each scope and the rule that made it.

use std::fmt;

use purser_core::{Identity, RequestContext, ResourceScope, RuleRef};

use crate::policy::Policy;

/// How a decision relates to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every requested action granted.
    Full,
    /// Some requested actions granted.
    Partial,
    /// A rule matched and granted nothing (an explicit deny, or a rule listing none of the
    /// requested actions).
    Denied,
    /// No rule matched: nothing granted.
    Unmatched,
}

/// The decision for one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub scope: ResourceScope,
    /// Granted actions, in the requested order.
    pub granted: Vec<String>,
    /// The deciding rule, `None` when no rule matched.
    pub rule: Option<RuleRef>,
    pub verdict: Verdict,
    /// The deciding rule's actions as written; empty for an explicit deny or no rule.
    pub rule_actions: Vec<String>,
}

impl Policy {
    /// Decides each scope through [`Policy::authorize`], the same path as the token endpoint.
    pub fn explain(
        &self,
        who: &Identity,
        ctx: &RequestContext,
        scopes: &[ResourceScope],
    ) -> Vec<Explanation> {
        scopes
            .iter()
            .map(|scope| {
                let grant = self.authorize(who, ctx, scope);
                let verdict = match (&grant.rule, grant.actions.len()) {
                    (None, _) => Verdict::Unmatched,
                    (Some(_), 0) => Verdict::Denied,
                    (Some(_), n) if n >= scope.actions.len() => Verdict::Full,
                    (Some(_), _) => Verdict::Partial,
                };
                let rule_actions = grant
                    .rule
                    .as_ref()
                    .and_then(|r| self.rule(r.index))
                    .map(|r| r.actions.clone())
                    .unwrap_or_default();
                Explanation {
                    scope: scope.clone(),
                    granted: grant.actions,
                    rule: grant.rule,
                    verdict,
                    rule_actions,
                }
            })
            .collect()
    }
}

impl fmt::Display for Explanation {
    /// One line: `repository:team/app:pull,push -> pull,push (rule 2 "team repos")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> ", self.scope)?;
        if self.granted.is_empty() {
            f.write_str("nothing")?;
        } else {
            f.write_str(&self.granted.join(","))?;
        }
        match (&self.rule, self.verdict) {
            (None, _) => f.write_str(" (no rule matched)"),
            (Some(r), Verdict::Full) => write!(f, " (rule {} {:?})", r.index, r.name),
            (Some(r), _) if self.rule_actions.is_empty() => {
                write!(f, " (rule {} {:?}: explicit deny)", r.index, r.name)
            }
            (Some(r), _) => write!(
                f,
                " (rule {} {:?}: allows only {})",
                r.index,
                r.name,
                self.rule_actions.join(",")
            ),
        }
    }
}

/// One line per scope, as `purser policy explain` prints them.
pub fn render_explanation(explanations: &[Explanation]) -> String {
    let mut out = String::new();
    for e in explanations {
        out.push_str(&e.to_string());
        out.push('\n');
    }
    out
}
