//! The failed-login limiters: [`purser_core::LoginLimiter`] implementations, and the one
//! configured by `limits.failed_logins` and `state`.

mod memory;
mod redis;

use std::sync::Arc;

use purser_core::{Clock, LoginLimiter};

pub use self::redis::{RedisLimiter, RedisSettings};
pub use memory::{LockoutSettings, MemoryLimiter, DEFAULT_CAPACITY};

use crate::build::ctx::BuildError;
use crate::config::{Config, StateBackend};
use crate::metrics::Metrics;

/// Largest CA bundle read for `state.redis.ca_file`.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// The limiter the configuration asks for; with Redis, also the store, for `/readyz`.
pub struct Built {
    pub limiter: Arc<dyn LoginLimiter>,
    pub redis: Option<Arc<RedisLimiter>>,
}

/// `limits.failed_logins` as the limiters take it.
pub fn settings(config: &Config) -> LockoutSettings {
    let f = &config.limits.failed_logins;
    LockoutSettings {
        max: f.max,
        per_address_max: f.per_address_max,
        window: f.window.0,
        lockout: f.lockout.0,
        trusted_address_ttl: f.trusted_address_ttl.0,
    }
}

/// The limiter `limits.failed_logins` and `state` ask for. Nothing is contacted: a Redis
/// store connects at its first operation (so `check-config` builds it too).
pub fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
) -> Result<Built, BuildError> {
    let settings = settings(config);
    match config.state.backend {
        StateBackend::Memory => Ok(Built {
            limiter: Arc::new(MemoryLimiter::new(settings, DEFAULT_CAPACITY, clock)),
            redis: None,
        }),
        StateBackend::Redis => {
            let r = &config.state.redis;
            let other = |key: &str, message: String| BuildError::Other {
                key: key.into(),
                message,
            };
            if r.url.to_ascii_lowercase().starts_with("rediss://") {
                // The Redis client's TLS asks rustls for the process's provider: the same ring
                // provider as the token listener's (a second call finds it installed).
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            let client = if r.ca_file.as_os_str().is_empty() {
                ::redis::Client::open(r.url.as_str())
            } else {
                let pem = purser_fs::read_bytes(&r.ca_file, MAX_CA_FILE).map_err(|e| {
                    other(
                        "state.redis.ca_file",
                        format!("cannot read {}: {}", r.ca_file.display(), e.kind()),
                    )
                })?;
                ::redis::Client::build_with_tls(
                    r.url.as_str(),
                    ::redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            // The error's text could quote the URL, which may hold a password: only its kind.
            .map_err(|e| {
                other(
                    "state.redis.url",
                    format!("cannot be used ({})", e.category()),
                )
            })?;
            let store = Arc::new(RedisLimiter::new(
                client,
                settings,
                RedisSettings {
                    key_prefix: r.key_prefix.clone(),
                    timeout: r.timeout.0,
                    on_error: r.on_error,
                },
                clock,
                metrics.clone(),
            ));
            Ok(Built {
                limiter: store.clone(),
                redis: Some(store),
            })
        }
    }
}
