//! The failed-login limit (`limits.failed_logins`) around authentication: a locked account or
//! address is answered 429 before any password check (a locked-out guesser costs no hashing);
//! afterwards, a failed login is counted, and a caller whose account (the backend's own name for
//! it, which may be spelled otherwise than typed) is locked is refused even with the right
//! password.
//!
//! A password login carries a keyed digest of (name as typed, password) to the limiter, made
//! with the store's key (the same for every replica sharing it): the same wrong password sent
//! again is answered 401 here, without a check, and counts no more. A limiter that cannot
//! answer (a shared store down, with `on_error: closed`) is a 503 with Retry-After.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hmac::{Hmac, Mac};
use purser_core::{DigestKey, Gate, LimiterError, LoginAttempt, LoginLimiter, PasswordDigest};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};

use super::call::{Audit, LoginVerdict, Proof, TokenCall, TokenReply};
use super::endpoint::UNAVAILABLE_RETRY;
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct LimiterLayer {
    limiter: Arc<dyn LoginLimiter>,
    metrics: Metrics,
    keyed: Arc<KeyedDigest>,
}

impl LimiterLayer {
    pub fn new(limiter: Arc<dyn LoginLimiter>, metrics: Metrics) -> Self {
        LimiterLayer {
            limiter,
            metrics,
            keyed: Arc::new(KeyedDigest::default()),
        }
    }
}

/// The digest's MAC with the store's current key already absorbed, made again only when the
/// store hands out another key (its key blocks are then hashed once, not at every login).
#[derive(Default)]
struct KeyedDigest {
    current: std::sync::Mutex<Option<(DigestKey, Hmac<Sha256>)>>,
}

impl KeyedDigest {
    fn mac(&self, key: &DigestKey) -> Option<Hmac<Sha256>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some((k, mac)) if k == key => Some(mac.clone()),
            _ => {
                let mac = Hmac::<Sha256>::new_from_slice(&key.0).ok()?;
                *current = Some((key.clone(), mac.clone()));
                Some(mac)
            }
        }
    }
}

impl<S> Layer<S> for LimiterLayer {
    type Service = Limiter<S>;
    fn layer(&self, inner: S) -> Limiter<S> {
        Limiter {
            limiter: self.limiter.clone(),
            metrics: self.metrics.clone(),
            keyed: self.keyed.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Limiter<S> {
    limiter: Arc<dyn LoginLimiter>,
    metrics: Metrics,
    keyed: Arc<KeyedDigest>,
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
            let audit = || Audit {
                account: typed.clone(),
                ..Audit::default()
            };
            let digest = match &call.proof {
                Proof::Password(c) => match this.limiter.digest_key().await {
                    Ok(key) => this
                        .keyed
                        .mac(&key)
                        .map(|mac| password_digest(mac, &c.username, c.password.expose())),
                    Err(e) => return Ok(TokenReply::refused(unavailable(&e), audit())),
                },
                _ => None,
            };
            let typed_name = typed.as_deref();
            let before: &[&str] = match &typed_name {
                Some(t) => std::slice::from_ref(t),
                None => &[],
            };
            match gate(&this.limiter, before, address, digest).await {
                Ok(Gate::Open) => {}
                Ok(Gate::Locked(retry_after)) => {
                    return Ok(TokenReply::refused(
                        ApiError::RateLimited { retry_after },
                        audit(),
                    ));
                }
                Ok(Gate::KnownBad) => {
                    // The same wrong password a moment ago: the answer the backend gave then,
                    // without asking it again (no hash, no bind), and nothing more to count.
                    tracing::debug!("a wrong password sent again: refused without a check");
                    return Ok(TokenReply::refused(
                        ApiError::Unauthorized("invalid username or password".into()),
                        audit(),
                    ));
                }
                Err(e) => return Ok(TokenReply::refused(unavailable(&e), audit())),
            }
            let mut reply = this.inner.oneshot(call).await?;
            match &reply.verdict {
                LoginVerdict::NotChecked => {}
                LoginVerdict::Accepted { account } => {
                    if typed.as_deref() != Some(account.as_str()) {
                        match gate(&this.limiter, &[account], address, None).await {
                            Ok(Gate::Locked(retry_after)) => {
                                // The token was made already; it is not handed out.
                                reply.result = Err(ApiError::RateLimited { retry_after });
                                return Ok(reply);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                reply.result = Err(unavailable(&e));
                                return Ok(reply);
                            }
                        }
                    }
                    // The address becomes trusted by the account, under both its names.
                    let both = [account.as_str(), typed.as_deref().unwrap_or_default()];
                    let accounts = if typed.as_deref().is_some_and(|t| t != account) {
                        &both[..]
                    } else {
                        &both[..1]
                    };
                    let attempt = LoginAttempt {
                        accounts,
                        address,
                        password: None,
                    };
                    if let Err(e) = this.limiter.record_success(&attempt).await {
                        tracing::warn!(error = %e, "the failed-login limiter could not note a success");
                    }
                }
                LoginVerdict::Failed { accounts, known } => {
                    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
                    // A locked account stays locked whatever the spelling: a wrong password
                    // under another spelling is answered as the lock, not as a fresh failure.
                    let others: Vec<&str> = names
                        .iter()
                        .copied()
                        .filter(|n| Some(*n) != typed.as_deref())
                        .collect();
                    if !others.is_empty() {
                        if let Ok(Gate::Locked(retry_after)) =
                            gate(&this.limiter, &others, address, None).await
                        {
                            reply.result = Err(ApiError::RateLimited { retry_after });
                            return Ok(reply);
                        }
                    }
                    // A failure the backend did not decide on a known account is counted under
                    // a digest of its own: repeats still count once, but the gate, which asks
                    // with the plain digest, never answers them without a check.
                    let password = if *known {
                        digest
                    } else {
                        digest.map(unanswered)
                    };
                    let attempt = LoginAttempt {
                        accounts: &names,
                        address,
                        password,
                    };
                    record_failure(&this.limiter, &this.metrics, &attempt).await;
                }
            }
            Ok(reply)
        })
    }
}

/// The keyed digest of the name as typed and the password: never the password itself, and
/// meaningless without the store's key.
fn password_digest(mut mac: Hmac<Sha256>, account: &str, password: &str) -> PasswordDigest {
    // The name's length first, so that ("ab", "c") and ("a", "bc") differ.
    mac.update(&(account.len() as u64).to_be_bytes());
    mac.update(account.as_bytes());
    mac.update(password.as_bytes());
    PasswordDigest(mac.finalize().into_bytes().into())
}

/// The digest under which a failure that must be checked again is counted: derived from the
/// login's digest, so repeats of it are one failure, but never equal to a digest the gate asks.
fn unanswered(d: PasswordDigest) -> PasswordDigest {
    let mut h = Sha256::new();
    h.update(b"purser: counted, never answered without a check\0");
    h.update(d.0);
    PasswordDigest(h.finalize().into())
}

/// A limiter that cannot answer refuses (it says so only with `on_error: closed`).
fn unavailable(e: &LimiterError) -> ApiError {
    tracing::debug!(error = %e, "password login refused: the failed-login store is unavailable");
    ApiError::Unavailable {
        retry_after: UNAVAILABLE_RETRY,
        message: "the failed-login store is unavailable; try again later".into(),
    }
}

/// What the limiter says of these accounts and this address.
async fn gate(
    limiter: &Arc<dyn LoginLimiter>,
    accounts: &[&str],
    address: Option<IpAddr>,
    password: Option<PasswordDigest>,
) -> Result<Gate, LimiterError> {
    let attempt = LoginAttempt {
        accounts,
        address,
        password,
    };
    limiter.locked(&attempt).await
}

async fn record_failure(
    limiter: &Arc<dyn LoginLimiter>,
    metrics: &Metrics,
    attempt: &LoginAttempt<'_>,
) {
    match limiter.record_failure(attempt).await {
        Ok(locked) => {
            for scope in locked {
                metrics.lockouts.with_label_values(&[scope.label()]).inc();
            }
        }
        Err(e) => tracing::warn!(error = %e, "the failed-login limiter could not count a failure"),
    }
}
