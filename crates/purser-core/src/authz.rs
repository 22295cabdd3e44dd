use std::net::IpAddr;

use crate::{Identity, ResourceScope};

/// What the policy sees of a request besides the caller and the resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The requested `service` (already checked against `token.service`).
    pub service: String,
    /// The client's address (the socket peer, or X-Forwarded-For from a trusted proxy).
    pub client_ip: Option<IpAddr>,
}

/// The rule that decided: its index in the policy file (0-based) and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub index: usize,
    pub name: String,
}

/// What a policy grants for one requested resource, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Granted actions: always a subset of the requested ones, in the requested order.
    pub actions: Vec<String>,
    /// The deciding rule; `None` when no rule matched (nothing granted).
    pub rule: Option<RuleRef>,
}

impl Grant {
    pub fn none() -> Self {
        Grant {
            actions: Vec::new(),
            rule: None,
        }
    }
    /// `full`, `partial` or `none`, relative to what was requested (the metrics label).
    pub fn outcome(&self, requested: &ResourceScope) -> &'static str {
        if self.actions.is_empty() {
            "none"
        } else if self.actions.len() >= requested.actions.len() {
            "full"
        } else {
            "partial"
        }
    }
}

/// Decides which of the requested actions a caller gets. One decision path serves the token
/// endpoint, `purser policy explain` and `purser policy test`.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, who: &Identity, ctx: &RequestContext, scope: &ResourceScope) -> Grant;

    /// Decides every scope of one request, one grant per scope in order. An authorizer whose
    /// rules can be reloaded overrides this to decide all of them with one version, so a
    /// request never mixes an old and a new policy.
    fn authorize_all(
        &self,
        who: &Identity,
        ctx: &RequestContext,
        scopes: &[ResourceScope],
    ) -> Vec<Grant> {
        scopes
            .iter()
            .map(|scope| self.authorize(who, ctx, scope))
            .collect()
    }
}
