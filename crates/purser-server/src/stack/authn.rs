//! Authentication: turns the call's proof into a caller, through the backend chain (a password)
//! or the refresh token's checks (a refresh grant), then hands the call on. A failed proof is
//! answered here, with the verdict the limiter counts.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use purser_authn::cache::AnswerSource;
use purser_authn::chain::{Chain, ChainDecision};
use purser_core::{BackendName, Credentials, Identity, Reloadable};
use tower::{Layer, Service, ServiceExt};

use super::call::{Audit, Caller, LoginVerdict, Proof, TokenCall, TokenReply};
use super::endpoint::UNAVAILABLE_RETRY;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::revocations::Revocations;

/// What authentication needs, built once.
pub struct AuthnSettings {
    pub issuer: String,
    pub chain: Arc<Chain>,
    /// Verify refresh tokens (signed by the key active then: any published key).
    pub keys: Arc<Reloadable<crate::keys::Published>>,
    pub metrics: Metrics,
    /// Refresh tokens revoked by `purser revoke`.
    pub revocations: Arc<Reloadable<Revocations>>,
}

#[derive(Clone)]
pub struct AuthnLayer {
    settings: Arc<AuthnSettings>,
}

impl AuthnLayer {
    pub fn new(settings: AuthnSettings) -> Self {
        AuthnLayer {
            settings: Arc::new(settings),
        }
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;
    fn layer(&self, inner: S) -> Authn<S> {
        Authn {
            settings: self.settings.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Authn<S> {
    settings: Arc<AuthnSettings>,
    inner: S,
}

// === impl Authn ===

impl<S> Service<TokenCall> for Authn<S>
where
    S: Service<TokenCall, Response = TokenReply, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = TokenReply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<TokenReply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: TokenCall) -> Self::Future {
        let settings = self.settings.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            // The proof is used up here: what is inside stays out of the services below.
            let proof = std::mem::replace(&mut call.proof, Proof::Anonymous);
            let mut stale = false;
            let (caller, verdict) = match proof {
                Proof::Anonymous => (
                    Caller {
                        identity: Identity::anonymous(),
                        backend: None,
                        presented_refresh: None,
                    },
                    LoginVerdict::NotChecked,
                ),
                Proof::SubjectToken(token) => {
                    // The exchange names no user: the token's issuer decides, and the oidc
                    // backend alone is asked (an empty user name matches any issuer).
                    let creds = Credentials {
                        username: String::new(),
                        password: token,
                    };
                    match password(&settings, &creds, Some(purser_authn::oidc::NAME)).await {
                        Ok((caller, _)) => {
                            let verdict = LoginVerdict::Accepted {
                                account: caller.identity.account.clone(),
                            };
                            (caller, verdict)
                        }
                        Err((error, verdict, backend)) => {
                            return Ok(TokenReply {
                                result: Err(error),
                                audit: Audit {
                                    backend,
                                    ..Audit::default()
                                },
                                verdict,
                            });
                        }
                    }
                }
                Proof::Password(creds) => match password(&settings, &creds, None).await {
                    Ok((caller, from_the_past)) => {
                        stale = from_the_past;
                        let verdict = LoginVerdict::Accepted {
                            account: caller.identity.account.clone(),
                        };
                        (caller, verdict)
                    }
                    Err((error, verdict, backend)) => {
                        let audit = Audit {
                            account: Some(creds.username.clone()),
                            backend,
                            ..Audit::default()
                        };
                        return Ok(TokenReply {
                            result: Err(error),
                            audit,
                            verdict,
                        });
                    }
                },
                Proof::Refresh(token) => {
                    match refresh(&settings, &token, &call.service, call.ip(), call.now).await {
                        Ok((identity, backend)) => {
                            let verdict = LoginVerdict::Accepted {
                                account: identity.account.clone(),
                            };
                            (
                                Caller {
                                    identity,
                                    backend,
                                    presented_refresh: Some(token),
                                },
                                verdict,
                            )
                        }
                        Err((error, account, verdict)) => {
                            let audit = Audit {
                                account,
                                ..Audit::default()
                            };
                            return Ok(TokenReply {
                                result: Err(error),
                                audit,
                                verdict,
                            });
                        }
                    }
                }
            };
            if let Some(m) = &caller.identity.machine {
                settings.metrics.machine_token_used(&m.name, call.now);
            }
            call.caller = Some(caller);
            let mut reply = inner.oneshot(call).await?;
            reply.verdict = verdict;
            reply.audit.stale = stale;
            Ok(reply)
        })
    }
}

/// A login that did not go through: the error for the client, what the limiter counts, and the
/// backend that refused it or could not answer (for the audit record).
type Refused = (ApiError, LoginVerdict, Option<BackendName>);

/// How long a client refused for a full password-check queue is told to wait.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A password login through the chain, with its metrics; `true` beside the caller when the
/// login was accepted from the cache while its backend was unavailable.
async fn password(
    settings: &AuthnSettings,
    creds: &Credentials,
    only: Option<&str>,
) -> Result<(Caller, bool), Refused> {
    let result = match only {
        Some(backend) => settings.chain.authenticate_with(backend, creds).await,
        None => settings.chain.authenticate(creds).await,
    };
    // Failed OIDC logins count against the address alone: the user name is shared by every
    // CI job of the issuer, and a stranger's bad tokens must not lock them out.
    let typed_counts =
        |backend: &str| backend != purser_authn::oidc::NAME && !creds.username.is_empty();
    let m = &settings.metrics;
    for a in &result.attempts {
        m.authn_attempts
            .with_label_values(&[a.backend, a.outcome])
            .inc();
        // `purser_authn_duration_seconds` times backend checks only, so its count is the
        // number of checks the backend did.
        match a.source {
            AnswerSource::Backend => m
                .authn_duration
                .with_label_values(&[a.backend])
                .observe(a.duration.as_secs_f64()),
            AnswerSource::Cache => m.authn_cache_hits.with_label_values(&[a.backend]).inc(),
            AnswerSource::Shared => m.authn_shared_answers.with_label_values(&[a.backend]).inc(),
        }
        if a.stale {
            m.authn_stale_answers.with_label_values(&[a.backend]).inc();
        }
    }
    let stale = result.stale();
    let refused = || ApiError::Unauthorized("invalid username or password".into());
    match result.decision {
        ChainDecision::Accepted { backend, identity } => {
            if stale {
                tracing::warn!(
                    backend,
                    account = %identity.account,
                    "backend unavailable: login accepted from the credential cache (stale)"
                );
            }
            Ok((
                Caller {
                    identity,
                    backend: Some(backend),
                    presented_refresh: None,
                },
                stale,
            ))
        }
        ChainDecision::Rejected { backend, account } => {
            tracing::info!(
                backend,
                username = %creds.username,
                reason = "wrong password (or, where the backend cannot tell, no such user)",
                "login refused"
            );
            // The backend's own name for the account counts too, so that spelling a name
            // differently buys no more guesses.
            let mut accounts = Vec::new();
            if typed_counts(backend) {
                accounts.push(creds.username.clone());
                accounts.extend(account.filter(|a| *a != creds.username));
            }
            Err((
                refused(),
                LoginVerdict::Failed {
                    accounts,
                    known: true,
                },
                Some(backend),
            ))
        }
        ChainDecision::Refused {
            backend,
            account,
            reason,
        } => {
            tracing::info!(backend, username = %creds.username, %reason, "login refused");
            // The credential was right, so this is no guess; it still counts like a failure,
            // so that a robot retrying an expired token does not hammer the server.
            let mut accounts = Vec::new();
            if typed_counts(backend) {
                accounts.push(creds.username.clone());
                accounts.extend(account.filter(|a| *a != creds.username));
            }
            Err((
                ApiError::Unauthorized(reason),
                LoginVerdict::Failed {
                    accounts,
                    known: false,
                },
                Some(backend),
            ))
        }
        ChainDecision::UnknownUser if only.is_some() => Err((
            ApiError::Unauthorized(
                "the token exchange needs an OIDC issuer configured (authn.oidc)".into(),
            ),
            LoginVerdict::Failed {
                accounts: vec![],
                known: false,
            },
            None,
        )),
        ChainDecision::UnknownUser => {
            // Every backend was asked and none knows the name: the last one ended the chain.
            let backend = result.attempts.last().map(|a| a.backend);
            tracing::info!(
                backend = backend.unwrap_or(""),
                username = %creds.username,
                reason = "no backend knows the user",
                "login refused"
            );
            Err((
                refused(),
                LoginVerdict::Failed {
                    accounts: vec![creds.username.clone()],
                    known: false,
                },
                backend,
            ))
        }
        ChainDecision::Busy { backend } => {
            tracing::warn!(
                backend,
                "too many password checks waiting: answering 503 at once"
            );
            Err((
                ApiError::Unavailable {
                    retry_after: BUSY_RETRY,
                    message: "the server is busy checking passwords; try again shortly".into(),
                },
                LoginVerdict::NotChecked,
                Some(backend),
            ))
        }
        ChainDecision::Unavailable { backend, reason } => {
            tracing::warn!(backend, %reason, "no backend could decide: answering 503");
            Err((
                ApiError::Unavailable {
                    retry_after: UNAVAILABLE_RETRY,
                    message: "the authentication backend is unavailable; try again later".into(),
                },
                LoginVerdict::NotChecked,
                Some(backend),
            ))
        }
    }
}

/// The refresh grant: the token must be this server's, for this service, unexpired; its account
/// must still exist at the backend that authenticated it, with the credential it had then. An
/// invalid token is a failed login of the address alone (its account is not to be believed).
async fn refresh(
    settings: &AuthnSettings,
    token: &str,
    service: &str,
    ip: Option<IpAddr>,
    now: i64,
) -> Result<(Identity, Option<&'static str>), (ApiError, Option<String>, LoginVerdict)> {
    let rc = purser_token::check_refresh(
        &settings.keys.load().ring,
        token,
        &settings.issuer,
        service,
        now,
    )
    .map_err(|e| {
        tracing::debug!(client = ?ip, error = %e, "refresh grant refused");
        (
            ApiError::InvalidGrant(e.to_string()),
            None,
            LoginVerdict::Failed {
                accounts: vec![],
                known: false,
            },
        )
    })?;
    let account = Some(rc.sub.clone());
    if settings.revocations.load().is_revoked(&rc.sub, rc.iat) {
        tracing::info!(account = %rc.sub, "refresh grant refused: revoked by `purser revoke`");
        return Err((
            ApiError::InvalidGrant("this refresh token was revoked; log in again".into()),
            account,
            LoginVerdict::NotChecked,
        ));
    }
    // A machine token's session is looked up by the token's name: it ends when the token is
    // removed, made again or expires.
    let key = rc.tok.as_deref().unwrap_or(&rc.sub);
    let identity = match settings.chain.lookup(&rc.bk, key).await {
        Ok(Some(identity)) if identity.account == rc.sub => identity,
        Ok(Some(_)) => return Err((
            ApiError::InvalidGrant(
                "the credential of this refresh token now belongs to another account; log in again"
                    .into(),
            ),
            account,
            LoginVerdict::NotChecked,
        )),
        Ok(None) => {
            let message = match &rc.tok {
                Some(name) => format!(
                    "machine token {name} was revoked or has expired; log in with a current token"
                ),
                None => "the account of this refresh token no longer exists; log in again".into(),
            };
            return Err((
                ApiError::InvalidGrant(message),
                account,
                LoginVerdict::NotChecked,
            ));
        }
        Err(e) => {
            tracing::warn!(backend = %rc.bk, error = %e, "refresh grant: account lookup failed");
            return Err((
                ApiError::Unavailable {
                    retry_after: UNAVAILABLE_RETRY,
                    message: "the account backend is unavailable; try again later".into(),
                },
                account,
                LoginVerdict::NotChecked,
            ));
        }
    };
    // A token from before the backend kept fingerprints has none: it is refused too, so that
    // no session outlives a password change unnoticed.
    if settings.chain.credential_stamp(&rc.bk, key) != rc.cs {
        tracing::info!(backend = %rc.bk, account = %rc.sub, "refresh grant refused: the account's password changed since the token was issued");
        return Err((
            ApiError::InvalidGrant(
                "the password of this account changed since this refresh token was issued; log in again"
                    .into(),
            ),
            account,
            LoginVerdict::NotChecked,
        ));
    }
    let backend = settings
        .chain
        .backend_names()
        .into_iter()
        .find(|n| *n == rc.bk);
    Ok((identity, backend))
}
