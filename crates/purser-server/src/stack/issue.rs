//! The innermost service: decides every requested scope for the authenticated caller with one
//! policy version, and signs the access token (and, when asked, a refresh token).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use purser_authn::chain::Chain;
use purser_core::{Access, Authorizer, Claims, Identity, RequestContext, Signer};
use tower::Service;

use super::call::{Audit, Caller, Issued, LoginVerdict, TokenCall, TokenReply};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// What issuing needs, built once.
pub struct IssueSettings {
    pub issuer: String,
    pub lifetime: Duration,
    pub refresh_lifetime: Duration,
    /// The active key signs; swapped whole at a rotation.
    pub keys: Arc<purser_core::Reloadable<crate::keys::Published>>,
    pub authorizer: Arc<dyn Authorizer>,
    /// The shadow policy (`authz.shadow_policy_file`): decides too, answers nothing.
    pub shadow: Option<Arc<crate::shadow::Shadow>>,
    /// For the credential fingerprint a refresh token carries.
    pub chain: Arc<Chain>,
    pub metrics: Metrics,
}

#[derive(Clone)]
pub struct IssueService {
    settings: Arc<IssueSettings>,
}

impl IssueService {
    pub fn new(settings: IssueSettings) -> Self {
        IssueService {
            settings: Arc::new(settings),
        }
    }
}

// === impl IssueService ===

impl Service<TokenCall> for IssueService {
    type Response = TokenReply;
    type Error = Infallible;
    type Future = Ready<Result<TokenReply, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: TokenCall) -> Self::Future {
        let Caller {
            identity,
            backend,
            presented_refresh,
        } = call.caller.take().unwrap_or(Caller {
            identity: Identity::anonymous(),
            backend: None,
            presented_refresh: None,
        });
        let mut audit = Audit {
            backend,
            service: call.service.clone(),
            cap: identity
                .cap
                .as_ref()
                .map(|cap| cap.iter().map(ToString::to_string).collect()),
            decisions: Vec::with_capacity(call.scopes.len()),
            ..Audit::default()
        };
        let result = self
            .settings
            .issue(call, &identity, backend, presented_refresh, &mut audit);
        // The caller's names move into the audit record once the token is made: no copies.
        audit.account = Some(identity.account);
        audit.groups = identity.groups;
        audit.labels = identity.labels;
        audit.machine_token = identity.machine.map(|m| m.name);
        ready(Ok(TokenReply {
            result,
            audit,
            verdict: LoginVerdict::NotChecked,
        }))
    }
}

impl IssueSettings {
    fn issue(
        &self,
        call: TokenCall,
        identity: &Identity,
        backend: Option<purser_core::BackendName>,
        presented_refresh: Option<String>,
        audit: &mut Audit,
    ) -> Result<Issued, ApiError> {
        let ctx = RequestContext {
            service: call.service.clone(),
            client_ip: call.ip(),
        };
        let mut access = Vec::with_capacity(call.scopes.len());
        let mut granted_scopes = Vec::new();
        // One policy version decides every scope of the request, even across a reload.
        let mut grants = self.authorizer.authorize_all(identity, &ctx, &call.scopes);
        // The shadow policy decides the same scopes, once each, and changes nothing below.
        let mut shadow_grants = self
            .shadow
            .as_ref()
            .and_then(|s| s.authorize_all(identity, &ctx, &call.scopes));
        // A capped credential (a machine token) gets no more than its cap, whatever the policy
        // grants its account: requested ∩ policy ∩ cap. The shadow's decisions are capped
        // alike, so that they compare with what the caller would really get.
        if let Some(cap) = &identity.cap {
            for (scope, grant) in call.scopes.iter().zip(grants.iter_mut()) {
                grant.actions =
                    purser_authz::apply_cap(cap, scope, std::mem::take(&mut grant.actions));
            }
            for (scope, grant) in call.scopes.iter().zip(shadow_grants.iter_mut().flatten()) {
                grant.actions =
                    purser_authz::apply_cap(cap, scope, std::mem::take(&mut grant.actions));
            }
        }
        if let Some(shadow_grants) = shadow_grants {
            for ((scope, live), shadow) in call.scopes.iter().zip(&grants).zip(shadow_grants) {
                let outcome = purser_authz::Divergence::of(&live.actions, &shadow.actions);
                self.metrics
                    .policy_shadow_decisions
                    .with_label_values(&[outcome.label()])
                    .inc();
                if outcome != purser_authz::Divergence::Same {
                    audit.shadow.push(crate::shadow::ShadowDiff {
                        scope: scope.clone(),
                        live: live.clone(),
                        shadow,
                        outcome,
                    });
                }
            }
        }
        for (scope, grant) in call.scopes.into_iter().zip(grants) {
            self.metrics
                .authz_decisions
                .with_label_values(&[grant.outcome(&scope)])
                .inc();
            if !grant.actions.is_empty() {
                granted_scopes.push(format!(
                    "{}:{}:{}",
                    scope.rtype,
                    scope.name,
                    grant.actions.join(",")
                ));
            }
            access.push(Access {
                rtype: scope.rtype.clone(),
                name: scope.name.clone(),
                actions: grant.actions.clone(),
            });
            audit.decisions.push((scope, grant));
        }

        let now = call.now;
        let lifetime = self.lifetime.as_secs() as i64;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: identity.account.clone(),
            aud: call.service.clone(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti: purser_token::new_jti(),
            access,
        };
        // One key for the whole answer, even if a rotation lands in between.
        let keys = self.keys.load();
        let signer = &keys.ring;
        let token = signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            ApiError::Internal
        })?;
        self.metrics
            .tokens_issued
            .with_label_values(&[signer.alg(), "access"])
            .inc();

        // A refresh grant hands back the refresh token it presented: the session it belongs to
        // ends at the first login plus `token.refresh_lifetime`, whatever refreshes happen.
        let refresh_token = match backend {
            Some(_) if call.want_refresh && presented_refresh.is_some() => presented_refresh,
            // An OIDC login has no session to refresh: the CI job asks its issuer for a new
            // ID token instead.
            Some(bk)
                if call.want_refresh
                    && !self.refresh_lifetime.is_zero()
                    && !identity.is_anonymous()
                    && bk != purser_authn::oidc::NAME =>
            {
                // A machine token is looked up by its name, and its session never outlives it.
                let token = identity.machine.as_ref().map(|m| m.name.as_str());
                let stamp = self
                    .chain
                    .credential_stamp(bk, token.unwrap_or(&identity.account));
                let who = purser_token::RefreshSubject {
                    account: &identity.account,
                    service: &call.service,
                    backend: bk,
                    stamp: stamp.as_deref(),
                    token,
                };
                let mut lifetime = self.refresh_lifetime;
                if let Some(end) = identity.machine.as_ref().and_then(|m| m.expires) {
                    let left = u64::try_from(end.saturating_sub(now)).unwrap_or(0);
                    lifetime = lifetime.min(Duration::from_secs(left));
                }
                let rt = purser_token::issue_refresh(signer, &self.issuer, who, lifetime, now)
                    .map_err(|e| {
                        tracing::error!(error = %e, "signing a refresh token failed");
                        ApiError::Internal
                    })?;
                self.metrics
                    .tokens_issued
                    .with_label_values(&[signer.alg(), "refresh"])
                    .inc();
                Some(rt)
            }
            _ => None,
        };
        Ok(Issued {
            token,
            refresh_token,
            expires_in: lifetime,
            iat: now,
            granted_scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarded::ClientAddr;
    use crate::shadow::Shadow;
    use purser_authz::{Policy, PolicyAuthorizer};
    use purser_core::{Reloadable, ResourceScope, ScopeCap};
    use tower::ServiceExt;

    const LIVE: &str = "rules:\n  - { name: bob reads, match: { account: bob, name: \"shared/**\" }, actions: [pull] }\n  - { name: everyone, match: { name: \"shared/**\" }, actions: [pull, push] }\n";
    const MOVED: &str = "rules:\n  - { name: everyone, match: { name: \"shared/**\" }, actions: [pull, push] }\n  - { name: bob reads, match: { account: bob, name: \"shared/**\" }, actions: [pull] }\n";

    fn service(shadow: Option<&str>) -> (IssueService, Metrics) {
        let key = purser_token::generate_key(purser_token::Alg::Es256).unwrap();
        let signer =
            purser_token::JwsSigner::new(key, purser_token::KeyIdMode::Libtrust, vec![]).unwrap();
        let live = Arc::new(Reloadable::new(Policy::parse(LIVE, "live.yaml").unwrap()));
        let shadow = shadow.map(|text| {
            let p = Policy::parse(text, "shadow.yaml").unwrap();
            Arc::new(Shadow::new(Arc::new(Reloadable::new(Some(p)))))
        });
        let metrics = Metrics::new(prometheus::Registry::new()).unwrap();
        let svc = IssueService::new(IssueSettings {
            issuer: "purser".into(),
            lifetime: Duration::from_secs(300),
            refresh_lifetime: Duration::ZERO,
            keys: Arc::new(Reloadable::new(crate::keys::Published::single(
                Arc::new(signer),
                b"{\"keys\":[]}".to_vec(),
                None,
            ))),
            authorizer: Arc::new(PolicyAuthorizer::new(live)),
            shadow,
            chain: Arc::new(Chain::new(vec![])),
            metrics: metrics.clone(),
        });
        (svc, metrics)
    }

    fn call(account: &str, cap: Option<&str>, scopes: &[&str]) -> TokenCall {
        let mut identity = Identity::new(account, vec![]);
        identity.cap = cap.map(|c| vec![c.parse::<ScopeCap>().unwrap()]);
        TokenCall {
            dialect: crate::error::Dialect::Distribution,
            proof: super::super::call::Proof::Anonymous,
            service: "registry.local".into(),
            scopes: scopes
                .iter()
                .map(|s| s.parse::<ResourceScope>().unwrap())
                .collect(),
            want_refresh: false,
            client: ClientAddr::Ip("127.0.0.1".parse().unwrap()),
            now: 1_800_000_000,
            caller: Some(Caller {
                identity,
                backend: Some("static"),
                presented_refresh: None,
            }),
        }
    }

    fn count(m: &Metrics, outcome: &str) -> u64 {
        m.policy_shadow_decisions
            .with_label_values(&[outcome])
            .get()
    }

    #[tokio::test]
    async fn the_live_policy_answers_and_the_shadow_is_only_compared() {
        let (svc, m) = service(Some(MOVED));
        let reply = svc
            .oneshot(call(
                "bob",
                None,
                &["repository:shared/a:pull,push", "repository:shared/b:pull"],
            ))
            .await
            .unwrap();
        assert_eq!(
            reply.result.unwrap().granted_scopes,
            ["repository:shared/a:pull", "repository:shared/b:pull"]
        );
        assert_eq!(reply.audit.service, "registry.local");
        assert_eq!(reply.audit.shadow.len(), 1);
        let d = &reply.audit.shadow[0];
        assert_eq!(d.scope.name, "shared/a");
        assert_eq!(d.outcome, purser_authz::Divergence::More);
        assert_eq!(d.live.actions, ["pull"]);
        assert_eq!(d.shadow.actions, ["pull", "push"]);
        assert_eq!(d.shadow.rule.as_ref().unwrap().name, "everyone");
        assert_eq!((count(&m, "same"), count(&m, "more")), (1, 1));
    }

    #[tokio::test]
    async fn a_cap_narrows_both_sides_and_no_shadow_counts_nothing() {
        let (svc, m) = service(Some(MOVED));
        let reply = svc
            .oneshot(call(
                "bob",
                Some("repository:shared/**:pull"),
                &["repository:shared/a:pull,push"],
            ))
            .await
            .unwrap();
        assert!(reply.audit.shadow.is_empty(), "{:?}", reply.audit.shadow);
        assert_eq!(
            reply.audit.cap.as_deref(),
            Some(&["repository:shared/**:pull".to_string()][..])
        );
        assert_eq!(count(&m, "same"), 1);

        let (svc, m) = service(None);
        let reply = svc
            .oneshot(call("bob", None, &["repository:shared/a:pull,push"]))
            .await
            .unwrap();
        assert_eq!(
            reply.result.unwrap().granted_scopes,
            ["repository:shared/a:pull"]
        );
        assert!(reply.audit.shadow.is_empty());
        assert_eq!(count(&m, "same") + count(&m, "more"), 0);
    }
}
