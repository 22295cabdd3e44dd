//! The chain of backends in `authn.order`: the first *accepted* or *rejected* decides,
//! *unknown user* passes on, and if nobody decided while a backend was unavailable the answer
//! is *unavailable* (503), never *rejected*.

use std::sync::Arc;
use std::time::{Duration, Instant};

use purser_core::{Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity};

use purser_core::SystemClock;

use crate::cache::{AnswerSource, CacheSettings, Cached, DEFAULT_MAX_ENTRIES};

/// What the chain decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainDecision {
    Accepted {
        backend: BackendName,
        identity: Identity,
    },
    /// A backend knew the user and the password was wrong. `account` is the backend's own name
    /// for the user when it knows one (see [`AuthnOutcome::Rejected`]): failed logins count
    /// against it as well as against the name typed.
    Rejected {
        backend: BackendName,
        account: Option<String>,
    },
    /// A backend knew the credential but refused it for `reason`, which the client may see
    /// (a machine token past its expiry).
    Refused {
        backend: BackendName,
        account: Option<String>,
        reason: String,
    },
    /// No backend knows the user (and every backend could answer).
    UnknownUser,
    /// No backend decided and this one could not answer; the first such backend is named.
    Unavailable {
        backend: BackendName,
        reason: String,
    },
    /// Too many password checks were waiting: this request was refused before it queued.
    Busy { backend: BackendName },
}

/// One backend asked, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub backend: BackendName,
    /// `accepted`, `rejected`, `unknown_user` or `unavailable`: the `outcome` metric label.
    pub outcome: &'static str,
    pub duration: Duration,
    /// Whether this request asked the backend, found the answer in the credential cache, or
    /// shared a concurrent identical check.
    pub source: AnswerSource,
    /// The backend could not decide and a remembered login answered
    /// (`authn.cache_stale_if_unavailable`); `outcome` is then `unavailable` and the decision
    /// is *accepted*.
    pub stale: bool,
}

impl Attempt {
    /// The answer came from the credential cache (no backend work at all).
    pub fn cache_hit(&self) -> bool {
        self.source == AnswerSource::Cache
    }
}

/// The decision and every backend asked on the way, in order.
#[derive(Clone, Debug)]
pub struct ChainResult {
    pub decision: ChainDecision,
    pub attempts: Vec<Attempt>,
}

impl ChainResult {
    /// The login was accepted from a remembered login while its backend was unavailable.
    pub fn stale(&self) -> bool {
        matches!(self.decision, ChainDecision::Accepted { .. })
            && self.attempts.last().is_some_and(|a| a.stale)
    }
}

/// The configured backends, in order, each behind its own credential cache (a pass-through
/// one when caching is off). Holding `Cached<dyn Authenticator>` rather than plain trait
/// objects lets the chain learn about cache hits without a special method on the trait.
pub struct Chain {
    backends: Vec<Cached<dyn Authenticator>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.backends.iter().map(|b| b.name()))
            .finish()
    }
}

impl Chain {
    /// A chain without caching.
    pub fn new(backends: Vec<Arc<dyn Authenticator>>) -> Self {
        Chain::with_cache(backends, Duration::ZERO)
    }

    /// A chain that remembers accepted logins for `cache_ttl` (`authn.cache_ttl`; zero: never).
    pub fn with_cache(backends: Vec<Arc<dyn Authenticator>>, cache_ttl: Duration) -> Self {
        Chain::with_cache_capacity(backends, cache_ttl, DEFAULT_MAX_ENTRIES)
    }

    /// As [`Chain::with_cache`], with at most `max_entries` remembered logins per backend.
    pub fn with_cache_capacity(
        backends: Vec<Arc<dyn Authenticator>>,
        cache_ttl: Duration,
        max_entries: usize,
    ) -> Self {
        Chain::with_cache_settings(
            backends,
            CacheSettings {
                max_entries,
                ..CacheSettings::ttl(cache_ttl)
            },
        )
    }

    /// A chain whose backends each have a credential cache with these settings (`authn.cache_*`).
    pub fn with_cache_settings(
        backends: Vec<Arc<dyn Authenticator>>,
        settings: CacheSettings,
    ) -> Self {
        Chain {
            backends: backends
                .into_iter()
                .map(|b| Cached::with_settings(b, settings, Arc::new(SystemClock)))
                .collect(),
        }
    }

    /// A chain whose backends each have their own cache settings (a backend whose
    /// credentials expire by themselves, an OIDC token, is not remembered past them).
    pub fn with_each_cache(backends: Vec<(Arc<dyn Authenticator>, CacheSettings)>) -> Self {
        Chain {
            backends: backends
                .into_iter()
                .map(|(b, settings)| Cached::with_settings(b, settings, Arc::new(SystemClock)))
                .collect(),
        }
    }

    /// The backends, each behind its cache (tests and measurements read the caches).
    pub fn cached_backends(&self) -> &[Cached<dyn Authenticator>] {
        &self.backends
    }

    /// The backend names, in order.
    pub fn backend_names(&self) -> Vec<BackendName> {
        self.backends.iter().map(|b| b.name()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub async fn authenticate(&self, creds: &Credentials) -> ChainResult {
        self.ask(self.backends.iter(), creds).await
    }

    /// Asks the named backend alone (the token exchange, which only the oidc backend answers):
    /// *unknown user* when it is not in the chain.
    pub async fn authenticate_with(&self, backend: &str, creds: &Credentials) -> ChainResult {
        self.ask(self.backends.iter().filter(|b| b.name() == backend), creds)
            .await
    }

    async fn ask<'a>(
        &'a self,
        backends: impl Iterator<Item = &'a Cached<dyn Authenticator>>,
        creds: &Credentials,
    ) -> ChainResult {
        let mut attempts = Vec::with_capacity(self.backends.len());
        let mut unavailable: Option<(BackendName, String)> = None;
        for backend in backends {
            let name = backend.name();
            let started = Instant::now();
            let answer = backend.answer(creds).await;
            attempts.push(Attempt {
                backend: name,
                outcome: answer.outcome_label(),
                duration: started.elapsed(),
                source: answer.source,
                stale: answer.stale,
            });
            match answer.result {
                Ok(AuthnOutcome::Accepted(identity)) => {
                    return ChainResult {
                        decision: ChainDecision::Accepted {
                            backend: name,
                            identity,
                        },
                        attempts,
                    }
                }
                Ok(AuthnOutcome::Rejected { account }) => {
                    return ChainResult {
                        decision: ChainDecision::Rejected {
                            backend: name,
                            account,
                        },
                        attempts,
                    }
                }
                Ok(AuthnOutcome::Refused { account, reason }) => {
                    return ChainResult {
                        decision: ChainDecision::Refused {
                            backend: name,
                            account,
                            reason,
                        },
                        attempts,
                    }
                }
                Ok(AuthnOutcome::UnknownUser) => {}
                // The backends share the password checks: asking the next one would queue too.
                Err(BackendError::Busy { backend }) => {
                    return ChainResult {
                        decision: ChainDecision::Busy { backend },
                        attempts,
                    }
                }
                Err(error) => {
                    if unavailable.is_none() {
                        unavailable = Some((name, reason_of(&error)));
                    }
                }
            }
        }
        let decision = match unavailable {
            Some((backend, reason)) => ChainDecision::Unavailable { backend, reason },
            None => ChainDecision::UnknownUser,
        };
        ChainResult { decision, attempts }
    }

    /// Looks an account up in the named backend only (the one that authenticated it, for the
    /// refresh grant). `Ok(None)` when that backend is no longer configured or no longer knows
    /// the account.
    pub async fn lookup(
        &self,
        backend: &str,
        account: &str,
    ) -> Result<Option<Identity>, BackendError> {
        match self.backends.iter().find(|b| b.name() == backend) {
            Some(b) => b.lookup(account).await,
            None => Ok(None),
        }
    }

    /// The named backend's fingerprint of the account's stored credential, for refresh tokens.
    pub fn credential_stamp(&self, backend: &str, account: &str) -> Option<String> {
        self.backends
            .iter()
            .find(|b| b.name() == backend)
            .and_then(|b| b.credential_stamp(account))
    }

    /// Each backend's readiness, in order, for `/readyz`.
    pub async fn ready(&self) -> Vec<(BackendName, Result<(), String>)> {
        let mut out = Vec::with_capacity(self.backends.len());
        for b in &self.backends {
            out.push((b.name(), b.ready().await));
        }
        out
    }
}

fn reason_of(error: &BackendError) -> String {
    match error {
        BackendError::Unavailable { reason, .. } | BackendError::Unsupported { reason, .. } => {
            reason.clone()
        }
        BackendError::Busy { .. } => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// A backend answering from a fixed script and counting calls.
    struct Scripted {
        name: BackendName,
        answer: Result<AuthnOutcome, BackendError>,
        calls: AtomicUsize,
        generation: AtomicU64,
    }

    impl Scripted {
        fn new(name: BackendName, answer: Result<AuthnOutcome, BackendError>) -> Arc<Self> {
            Arc::new(Scripted {
                name,
                answer,
                calls: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
            })
        }
    }

    #[async_trait]
    impl Authenticator for Scripted {
        fn name(&self) -> BackendName {
            self.name
        }
        async fn authenticate(&self, _: &Credentials) -> Result<AuthnOutcome, BackendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer.clone()
        }
        async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
            Ok(Some(Identity::new(
                format!("{}:{account}", self.name),
                vec![],
            )))
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        async fn ready(&self) -> Result<(), String> {
            match &self.answer {
                Err(e) => Err(e.to_string()),
                Ok(_) => Ok(()),
            }
        }
    }

    fn accepted(name: &str) -> Result<AuthnOutcome, BackendError> {
        Ok(AuthnOutcome::Accepted(Identity::new(name, vec![])))
    }

    fn down(backend: BackendName) -> Result<AuthnOutcome, BackendError> {
        Err(BackendError::Unavailable {
            backend,
            reason: "connection refused".into(),
        })
    }

    fn creds() -> Credentials {
        Credentials::new("alice", "pw")
    }

    fn outcomes(r: &ChainResult) -> Vec<(&str, &str)> {
        r.attempts.iter().map(|a| (a.backend, a.outcome)).collect()
    }

    #[tokio::test]
    async fn first_decision_wins() {
        let a = Scripted::new("static", Ok(AuthnOutcome::UnknownUser));
        let b = Scripted::new("htpasswd", Ok(AuthnOutcome::REJECTED));
        let c = Scripted::new("ldap", accepted("alice"));
        let chain = Chain::new(vec![a, b, c.clone()]);
        let r = chain.authenticate(&creds()).await;
        assert_eq!(
            r.decision,
            ChainDecision::Rejected {
                backend: "htpasswd",
                account: None,
            }
        );
        assert_eq!(
            outcomes(&r),
            [("static", "unknown_user"), ("htpasswd", "rejected")]
        );
        assert_eq!(c.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn unavailable_is_never_a_rejection() {
        let chain = Chain::new(vec![
            Scripted::new("static", Ok(AuthnOutcome::UnknownUser)),
            Scripted::new("ldap", down("ldap")),
        ]);
        let r = chain.authenticate(&creds()).await;
        assert_eq!(
            r.decision,
            ChainDecision::Unavailable {
                backend: "ldap",
                reason: "connection refused".into()
            }
        );
        assert_eq!(
            outcomes(&r),
            [("static", "unknown_user"), ("ldap", "unavailable")]
        );
    }

    #[tokio::test]
    async fn a_later_backend_decides_past_an_unavailable_one() {
        let chain = Chain::new(vec![
            Scripted::new("ldap", down("ldap")),
            Scripted::new("htpasswd", accepted("alice")),
        ]);
        let r = chain.authenticate(&creds()).await;
        assert!(matches!(
            r.decision,
            ChainDecision::Accepted {
                backend: "htpasswd",
                ..
            }
        ));
        assert_eq!(r.attempts.len(), 2);
    }

    #[tokio::test]
    async fn nobody_knows_the_user() {
        let chain = Chain::new(vec![Scripted::new("static", Ok(AuthnOutcome::UnknownUser))]);
        assert_eq!(
            chain.authenticate(&creds()).await.decision,
            ChainDecision::UnknownUser
        );
        let empty = Chain::new(vec![]);
        assert_eq!(
            empty.authenticate(&creds()).await.decision,
            ChainDecision::UnknownUser
        );
    }

    #[tokio::test]
    async fn cache_hits_are_reported_and_skip_the_backend() {
        let b = Scripted::new("htpasswd", accepted("alice"));
        let chain = Chain::with_cache(vec![b.clone()], Duration::from_secs(60));
        let first = chain.authenticate(&creds()).await;
        assert!(!first.attempts[0].cache_hit());
        let second = chain.authenticate(&creds()).await;
        assert!(second.attempts[0].cache_hit());
        assert_eq!(second.attempts[0].outcome, "accepted");
        assert_eq!(b.calls.load(Ordering::SeqCst), 1);
        b.generation.fetch_add(1, Ordering::SeqCst);
        let third = chain.authenticate(&creds()).await;
        assert!(!third.attempts[0].cache_hit());
        assert_eq!(b.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_rejection_carries_the_account_the_backend_found() {
        let found = Ok(AuthnOutcome::Rejected {
            account: Some("alice".into()),
        });
        let chain = Chain::new(vec![Scripted::new("ldap", found)]);
        let r = chain
            .authenticate(&Credentials::new("ALICE", "wrong"))
            .await;
        assert_eq!(
            r.decision,
            ChainDecision::Rejected {
                backend: "ldap",
                account: Some("alice".into()),
            }
        );
    }

    #[tokio::test]
    async fn a_cached_login_answers_with_the_backend_s_account() {
        // The cache is keyed by the name typed, but what it returns is the identity the
        // backend gave: the account, not the spelling.
        let b = Scripted::new("ldap", accepted("alice"));
        let chain = Chain::with_cache(vec![b.clone()], Duration::from_secs(60));
        let typed = Credentials::new("ALICE", "pw");
        chain.authenticate(&typed).await;
        let r = chain.authenticate(&typed).await;
        assert!(r.attempts[0].cache_hit());
        assert!(matches!(
            r.decision,
            ChainDecision::Accepted { identity, .. } if identity.account == "alice"
        ));
        assert_eq!(b.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn rejections_are_not_cached() {
        let b = Scripted::new("static", Ok(AuthnOutcome::REJECTED));
        let chain = Chain::with_cache(vec![b.clone()], Duration::from_secs(60));
        chain.authenticate(&creds()).await;
        let r = chain.authenticate(&creds()).await;
        assert!(!r.attempts[0].cache_hit());
        assert_eq!(b.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn lookup_asks_only_the_named_backend() {
        let chain = Chain::new(vec![
            Scripted::new("static", Ok(AuthnOutcome::UnknownUser)),
            Scripted::new("htpasswd", Ok(AuthnOutcome::UnknownUser)),
        ]);
        let id = chain.lookup("htpasswd", "bob").await.unwrap().unwrap();
        assert_eq!(id.account, "htpasswd:bob");
        assert_eq!(chain.lookup("ldap", "bob").await.unwrap(), None);
    }

    #[tokio::test]
    async fn ready_lists_every_backend() {
        let chain = Chain::new(vec![
            Scripted::new("static", Ok(AuthnOutcome::UnknownUser)),
            Scripted::new("ldap", down("ldap")),
        ]);
        let r = chain.ready().await;
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], ("static", Ok(())));
        assert!(r[1].1.as_ref().unwrap_err().contains("connection refused"));
    }
}
