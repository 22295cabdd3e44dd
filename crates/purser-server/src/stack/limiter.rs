//! The failed-login limit (`limits.failed_logins`) around authentication: a locked account or
//! address is answered 429 before any password check (a locked-out guesser costs no hashing);
//! afterwards, a failed login is counted, and a caller whose account (the backend's own name for
//! it, which may be spelled otherwise than typed) is locked is refused even with the right
//! password.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use purser_core::{LoginAttempt, LoginLimiter};
use tower::{Layer, Service, ServiceExt};

use super::call::{Audit, LoginVerdict, Proof, TokenCall, TokenReply};
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct LimiterLayer {
    limiter: Arc<dyn LoginLimiter>,
    metrics: Metrics,
}

impl LimiterLayer {
    pub fn new(limiter: Arc<dyn LoginLimiter>, metrics: Metrics) -> Self {
        LimiterLayer { limiter, metrics }
    }
}

impl<S> Layer<S> for LimiterLayer {
    type Service = Limiter<S>;
    fn layer(&self, inner: S) -> Limiter<S> {
        Limiter {
            limiter: self.limiter.clone(),
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Limiter<S> {
    limiter: Arc<dyn LoginLimiter>,
    metrics: Metrics,
    inner: S,
}

// === impl Limiter ===

impl<S> Service<TokenCall> for Limiter<S>
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

    fn call(&mut self, call: TokenCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // Anonymous callers prove nothing and are never limited.
            if matches!(call.proof, Proof::Anonymous) {
                return this.inner.oneshot(call).await;
            }
            let typed = call.typed_name().map(str::to_string);
            let address = call.ip();
            let before: Vec<&str> = typed.iter().map(String::as_str).collect();
            if let Some(retry_after) = locked(&this.limiter, &before, address).await {
                let audit = Audit {
                    account: typed.clone(),
                    ..Audit::default()
                };
                return Ok(TokenReply::refused(
                    ApiError::RateLimited { retry_after },
                    audit,
                ));
            }
            let mut reply = this.inner.clone().oneshot(call).await?;
            match &reply.verdict {
                LoginVerdict::NotChecked => {}
                LoginVerdict::Accepted { account } => {
                    if typed.as_deref() != Some(account.as_str()) {
                        if let Some(retry_after) = locked(&this.limiter, &[account], address).await
                        {
                            // The token was made already; it is not handed out.
                            reply.result = Err(ApiError::RateLimited { retry_after });
                            return Ok(reply);
                        }
                    }
                    let accounts = [account.as_str()];
                    let attempt = LoginAttempt {
                        accounts: &accounts,
                        address,
                    };
                    if let Err(e) = this.limiter.record_success(&attempt).await {
                        tracing::warn!(error = %e, "the failed-login limiter could not note a success");
                    }
                }
                LoginVerdict::Failed { accounts } => {
                    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
                    // A locked account stays locked whatever the spelling: a wrong password
                    // under another spelling is answered as the lock, not as a fresh failure.
                    let others: Vec<&str> = names
                        .iter()
                        .copied()
                        .filter(|n| Some(*n) != typed.as_deref())
                        .collect();
                    if !others.is_empty() {
                        if let Some(retry_after) = locked(&this.limiter, &others, address).await {
                            reply.result = Err(ApiError::RateLimited { retry_after });
                            return Ok(reply);
                        }
                    }
                    record_failure(&this.limiter, &this.metrics, &names, address).await;
                }
            }
            Ok(reply)
        })
    }
}

/// How long the caller must wait; a limiter that cannot answer locks nobody (and says so).
async fn locked(
    limiter: &Arc<dyn LoginLimiter>,
    accounts: &[&str],
    address: Option<IpAddr>,
) -> Option<Duration> {
    let attempt = LoginAttempt { accounts, address };
    match limiter.locked(&attempt).await {
        Ok(wait) => wait,
        Err(e) => {
            tracing::warn!(error = %e, "the failed-login limiter could not answer");
            None
        }
    }
}

async fn record_failure(
    limiter: &Arc<dyn LoginLimiter>,
    metrics: &Metrics,
    accounts: &[&str],
    address: Option<IpAddr>,
) {
    let attempt = LoginAttempt { accounts, address };
    match limiter.record_failure(&attempt).await {
        Ok(locked) => {
            for scope in locked {
                metrics.lockouts.with_label_values(&[scope.label()]).inc();
            }
        }
        Err(e) => tracing::warn!(error = %e, "the failed-login limiter could not count a failure"),
    }
}
