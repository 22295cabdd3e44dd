//! The token service: the one decision path from a parsed request to a signed token.
//!
//! GET and POST differ only in how parameters and credentials arrive and in the shape of the
//! answer; authentication, the policy decision, signing, metrics and the audit record are shared.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Response, StatusCode};
use purser_authn::chain::{Chain, ChainDecision};
use purser_core::{
    Access, Authorizer, Claims, Credentials, Grant, Identity, RequestContext, ResourceScope, Signer,
};

use crate::error::{json_response, ApiError, Body};
use crate::lockout::Lockout;
use crate::metrics::Metrics;
use crate::request::{basic_credentials, Params};

/// How long a client is told to wait when no backend could decide.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// Everything the token service needs, built once at start.
pub struct TokenState {
    pub issuer: String,
    pub services: Vec<String>,
    pub lifetime: Duration,
    pub refresh_lifetime: Duration,
    pub max_scopes: usize,
    pub anonymous: bool,
    pub signer: Arc<dyn Signer>,
    pub chain: Arc<Chain>,
    pub authorizer: Arc<dyn Authorizer>,
    pub metrics: Metrics,
    pub lockout: Lockout,
}

/// The facts of one request that end in its audit record.
#[derive(Debug, Default)]
pub struct Audit {
    pub account: Option<String>,
    pub backend: Option<&'static str>,
    /// The groups the account was given (by its backend), as the policy saw them.
    pub groups: Vec<String>,
    pub decisions: Vec<(ResourceScope, Grant)>,
}

/// How a caller proved who they are.
enum Proof {
    Password(Credentials),
    Anonymous,
    Refresh(String),
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl TokenState {
    /// `GET {path}`: the distribution token protocol.
    pub async fn get(
        &self,
        headers: &HeaderMap,
        query: &[u8],
        ip: Option<IpAddr>,
        audit: &mut Audit,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(query)?;
        let creds = basic_credentials(headers)?;
        let proof = match creds {
            Some(c) => {
                if let Some(acct) = params.account.as_deref() {
                    if !acct.is_empty() && acct != c.username {
                        return Err(ApiError::Denied(format!(
                            "account {acct:?} does not match the user name of the credentials"
                        )));
                    }
                }
                Proof::Password(c)
            }
            None if params.account.as_deref().is_some_and(|a| !a.is_empty()) => {
                return Err(ApiError::Unauthorized(format!(
                    "credentials are required for account {:?}",
                    params.account.as_deref().unwrap_or_default()
                )))
            }
            None if self.anonymous => Proof::Anonymous,
            None => return Err(ApiError::Unauthorized("authentication required".into())),
        };
        let issued = self
            .issue(&params, proof, ip, params.offline_token, audit)
            .await?;
        let body = TokenAnswer {
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at: rfc3339(issued.iat),
            refresh_token: issued.refresh_token.as_deref(),
            token: Some(&issued.token),
            scope: None,
            token_type: None,
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    /// `POST {path}`: the OAuth2 password and refresh-token grants.
    pub async fn post(
        &self,
        headers: &HeaderMap,
        form: &[u8],
        ip: Option<IpAddr>,
        audit: &mut Audit,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(form)?;
        let proof = match params.grant_type.as_deref() {
            Some("password") => {
                let (Some(u), Some(p)) = (params.username.as_deref(), params.password.as_deref())
                else {
                    return Err(ApiError::Unsupported(
                        "the password grant needs username and password".into(),
                    ));
                };
                Proof::Password(Credentials::new(u, p))
            }
            Some("refresh_token") => match params.refresh_token.as_deref() {
                Some(t) if !t.is_empty() => Proof::Refresh(t.to_string()),
                _ => {
                    return Err(ApiError::Unsupported(
                        "the refresh_token grant needs refresh_token".into(),
                    ))
                }
            },
            Some(other) => {
                return Err(ApiError::UnsupportedGrantType(format!(
                    "grant_type {:?} is not supported; use password or refresh_token",
                    other.chars().take(40).collect::<String>()
                )))
            }
            None => {
                // A form without a grant but with Basic credentials is a GET in disguise; some
                // clients do that. Without credentials it is an incomplete request.
                match basic_credentials(headers)? {
                    Some(c) => Proof::Password(c),
                    None => return Err(ApiError::Unsupported("grant_type is required".into())),
                }
            }
        };
        let issued = self
            .issue(&params, proof, ip, params.access_type_offline, audit)
            .await?;
        let scope = issued.granted_scopes.join(" ");
        let body = TokenAnswer {
            access_token: &issued.token,
            expires_in: issued.expires_in,
            issued_at: rfc3339(issued.iat),
            refresh_token: issued.refresh_token.as_deref(),
            token: None,
            scope: Some(&scope),
            token_type: Some("Bearer"),
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    fn check_service(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match requested {
            Some(s) if self.services.iter().any(|x| x == s) => Ok(s.to_string()),
            Some(s) => Err(ApiError::Denied(format!(
                "unknown service {:?}: this token server serves {}",
                s.chars().take(100).collect::<String>(),
                self.services.join(", ")
            ))),
            None if self.services.len() == 1 => Ok(self.services[0].clone()),
            None => Err(ApiError::Unsupported(
                "the service parameter is required".into(),
            )),
        }
    }

    async fn issue(
        &self,
        params: &Params,
        proof: Proof,
        ip: Option<IpAddr>,
        want_refresh: bool,
        audit: &mut Audit,
    ) -> Result<Issued, ApiError> {
        // Cheap checks first: a malformed request costs no password hashing.
        let service = self.check_service(params.service.as_deref())?;
        if params.scope_count() > self.max_scopes {
            return Err(ApiError::Unsupported(format!(
                "too many scopes: at most {} per request",
                self.max_scopes
            )));
        }
        let scopes = ResourceScope::parse_all(params.scopes.iter().map(String::as_str))
            .map_err(|e| ApiError::Unsupported(e.to_string()))?;

        let now = now_secs();
        // A refresh grant hands back the refresh token it presented: the session it belongs to
        // ends at the first login plus `token.refresh_lifetime`, whatever refreshes happen.
        let mut presented_refresh = None;
        let (identity, backend) = match proof {
            Proof::Anonymous => (Identity::anonymous(), None),
            Proof::Password(creds) => {
                audit.account = Some(creds.username.clone());
                let (identity, backend) = self.authenticate(&creds, ip).await?;
                (identity, Some(backend))
            }
            Proof::Refresh(token) => {
                let (identity, backend) = self.refresh(&token, &service, ip, now, audit).await?;
                presented_refresh = Some(token);
                (identity, backend)
            }
        };
        audit.backend = backend;
        audit.account = Some(identity.account.clone());
        audit.groups = identity.groups.clone();

        let ctx = RequestContext {
            service: service.clone(),
            client_ip: ip,
        };
        let mut access = Vec::with_capacity(scopes.len());
        let mut granted_scopes = Vec::new();
        // One policy version decides every scope of the request, even across a reload.
        let grants = self.authorizer.authorize_all(&identity, &ctx, &scopes);
        for (scope, grant) in scopes.into_iter().zip(grants) {
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

        let lifetime = self.lifetime.as_secs() as i64;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: identity.account.clone(),
            aud: service.clone(),
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

        let refresh_token = match backend {
            Some(_) if want_refresh && presented_refresh.is_some() => presented_refresh,
            Some(bk)
                if want_refresh && !self.refresh_lifetime.is_zero() && !identity.is_anonymous() =>
            {
                let stamp = self.chain.credential_stamp(bk, &identity.account);
                let who = purser_token::RefreshSubject {
                    account: &identity.account,
                    service: &service,
                    backend: bk,
                    stamp: stamp.as_deref(),
                };
                let rt = purser_token::issue_refresh(
                    self.signer.as_ref(),
                    &self.issuer,
                    who,
                    self.refresh_lifetime,
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

    /// The refresh grant: the token must be this server's, for this service, unexpired; its
    /// account must still exist at the backend that authenticated it, with the credential it
    /// had then; and neither the account nor the address may be locked. An invalid token counts
    /// as a failed login of the address (its account is not to be believed).
    async fn refresh(
        &self,
        token: &str,
        service: &str,
        ip: Option<IpAddr>,
        now: i64,
        audit: &mut Audit,
    ) -> Result<(Identity, Option<&'static str>), ApiError> {
        if let Some(retry_after) = self.lockout.check(&[], ip) {
            return Err(ApiError::RateLimited { retry_after });
        }
        let rc = match purser_token::check_refresh(
            self.signer.as_ref(),
            token,
            &self.issuer,
            service,
            now,
        ) {
            Ok(rc) => rc,
            Err(e) => {
                self.record_failure(&[], ip);
                return Err(ApiError::InvalidGrant(e.to_string()));
            }
        };
        audit.account = Some(rc.sub.clone());
        if let Some(retry_after) = self.lockout.check(&[&rc.sub], ip) {
            return Err(ApiError::RateLimited { retry_after });
        }
        let identity = self.chain.lookup(&rc.bk, &rc.sub).await.map_err(|e| {
            tracing::warn!(backend = %rc.bk, error = %e, "refresh grant: account lookup failed");
            ApiError::Unavailable {
                retry_after: UNAVAILABLE_RETRY,
                message: "the account backend is unavailable; try again later".into(),
            }
        })?;
        let Some(identity) = identity else {
            return Err(ApiError::InvalidGrant(
                "the account of this refresh token no longer exists; log in again".into(),
            ));
        };
        // A token from before the backend kept fingerprints has none: it is refused too, so
        // that no session outlives a password change unnoticed.
        let current = self.chain.credential_stamp(&rc.bk, &rc.sub);
        if current != rc.cs {
            tracing::info!(backend = %rc.bk, account = %rc.sub, "refresh grant refused: the account's password changed since the token was issued");
            return Err(ApiError::InvalidGrant(
                "the password of this account changed since this refresh token was issued; log in again".into(),
            ));
        }
        let backend = self.chain.backend_names().into_iter().find(|n| *n == rc.bk);
        Ok((identity, backend))
    }

    fn record_failure(&self, accounts: &[&str], ip: Option<IpAddr>) {
        for scope in self.lockout.record_failure(accounts, ip) {
            self.metrics.lockouts.with_label_values(&[scope]).inc();
        }
    }

    async fn authenticate(
        &self,
        creds: &Credentials,
        ip: Option<IpAddr>,
    ) -> Result<(Identity, &'static str), ApiError> {
        // Locked-out callers cost no password hashing.
        if let Some(retry_after) = self.lockout.check(&[&creds.username], ip) {
            return Err(ApiError::RateLimited { retry_after });
        }
        let result = self.chain.authenticate(creds).await;
        for a in &result.attempts {
            self.metrics
                .authn_attempts
                .with_label_values(&[a.backend, a.outcome])
                .inc();
            if a.cache_hit {
                self.metrics
                    .authn_cache_hits
                    .with_label_values(&[a.backend])
                    .inc();
            } else {
                self.metrics
                    .authn_duration
                    .with_label_values(&[a.backend])
                    .observe(a.duration.as_secs_f64());
            }
        }
        match result.decision {
            ChainDecision::Accepted { backend, identity } => {
                // The backend's account may be spelled differently from the name typed (a
                // directory matches `ALICE` to `alice`): a locked account stays locked
                // whatever the spelling, even when the password is right.
                if identity.account != creds.username {
                    if let Some(retry_after) = self.lockout.check(&[&identity.account], ip) {
                        return Err(ApiError::RateLimited { retry_after });
                    }
                }
                Ok((identity, backend))
            }
            ChainDecision::Rejected { account, .. } => {
                let account = account.filter(|a| *a != creds.username);
                if let Some(retry_after) = account
                    .as_deref()
                    .and_then(|a| self.lockout.check(&[a], ip))
                {
                    return Err(ApiError::RateLimited { retry_after });
                }
                match account.as_deref() {
                    Some(a) => self.record_failure(&[&creds.username, a], ip),
                    None => self.record_failure(&[&creds.username], ip),
                }
                Err(ApiError::Unauthorized(
                    "invalid username or password".into(),
                ))
            }
            ChainDecision::UnknownUser => {
                self.record_failure(&[&creds.username], ip);
                Err(ApiError::Unauthorized(
                    "invalid username or password".into(),
                ))
            }
            ChainDecision::Unavailable { backend, reason } => {
                tracing::warn!(backend, %reason, "no backend could decide: answering 503");
                Err(ApiError::Unavailable {
                    retry_after: UNAVAILABLE_RETRY,
                    message: "the authentication backend is unavailable; try again later".into(),
                })
            }
        }
    }
}

/// The answer to a token request, serialised without building a JSON tree. Fields are in
/// alphabetical order, the order the answers have always had.
#[derive(serde::Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    expires_in: i64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    /// POST (OAuth2) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    /// GET (distribution) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    /// POST (OAuth2) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
}

struct Issued {
    token: String,
    refresh_token: Option<String>,
    expires_in: i64,
    iat: i64,
    granted_scopes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::TokenAnswer;

    #[test]
    fn answers_serialise_as_the_json_objects_they_replace() {
        // serde_json's objects sort their keys: the struct must give the same bytes.
        let get = TokenAnswer {
            access_token: "t",
            expires_in: 300,
            issued_at: "2026-01-01T00:00:00Z".into(),
            refresh_token: Some("r"),
            token: Some("t"),
            scope: None,
            token_type: None,
        };
        let want = serde_json::json!({
            "token": "t", "access_token": "t", "expires_in": 300,
            "issued_at": "2026-01-01T00:00:00Z", "refresh_token": "r",
        });
        assert_eq!(
            serde_json::to_string(&get).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        let post = TokenAnswer {
            access_token: "t",
            expires_in: 60,
            issued_at: "2026-01-01T00:00:00Z".into(),
            refresh_token: None,
            token: None,
            scope: Some("repository:a:pull"),
            token_type: Some("Bearer"),
        };
        let want = serde_json::json!({
            "access_token": "t", "scope": "repository:a:pull", "expires_in": 60,
            "issued_at": "2026-01-01T00:00:00Z", "token_type": "Bearer",
        });
        assert_eq!(
            serde_json::to_string(&post).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
    }
}
