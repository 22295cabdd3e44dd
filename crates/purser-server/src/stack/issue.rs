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
    pub signer: Arc<dyn Signer>,
    pub authorizer: Arc<dyn Authorizer>,
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
        let caller = call.caller.take().unwrap_or(Caller {
            identity: Identity::anonymous(),
            backend: None,
            presented_refresh: None,
        });
        let mut audit = Audit {
            account: Some(caller.identity.account.clone()),
            machine_token: caller.identity.machine.as_ref().map(|m| m.name.clone()),
            backend: caller.backend,
            groups: caller.identity.groups.clone(),
            labels: caller.identity.labels.clone(),
            decisions: Vec::with_capacity(call.scopes.len()),
            ..Audit::default()
        };
        let result = self.settings.issue(call, caller, &mut audit);
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
        caller: Caller,
        audit: &mut Audit,
    ) -> Result<Issued, ApiError> {
        let identity = caller.identity;
        let ctx = RequestContext {
            service: call.service.clone(),
            client_ip: call.ip(),
        };
        let mut access = Vec::with_capacity(call.scopes.len());
        let mut granted_scopes = Vec::new();
        // One policy version decides every scope of the request, even across a reload.
        let mut grants = self.authorizer.authorize_all(&identity, &ctx, &call.scopes);
        // A capped credential (a machine token) gets no more than its cap, whatever the policy
        // grants its account: requested ∩ policy ∩ cap.
        if let Some(cap) = &identity.cap {
            for (scope, grant) in call.scopes.iter().zip(grants.iter_mut()) {
                grant.actions =
                    purser_authz::apply_cap(cap, scope, std::mem::take(&mut grant.actions));
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
        let token = self.signer.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            ApiError::Internal
        })?;
        self.metrics
            .tokens_issued
            .with_label_values(&[self.signer.alg(), "access"])
            .inc();

        // A refresh grant hands back the refresh token it presented: the session it belongs to
        // ends at the first login plus `token.refresh_lifetime`, whatever refreshes happen.
        let refresh_token = match caller.backend {
            Some(_) if call.want_refresh && caller.presented_refresh.is_some() => {
                caller.presented_refresh
            }
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
                let rt = purser_token::issue_refresh(
                    self.signer.as_ref(),
                    &self.issuer,
                    who,
                    lifetime,
                    now,
                )
                .map_err(|e| {
                    tracing::error!(error = %e, "signing a refresh token failed");
                    ApiError::Internal
                })?;
                self.metrics
                    .tokens_issued
                    .with_label_values(&[self.signer.alg(), "refresh"])
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
