//! The failed-login limiters: [`purser_core::LoginLimiter`] implementations, and the one
//! configured by `limits.failed_logins`.

mod memory;

use std::sync::Arc;

use purser_core::{Clock, LoginLimiter};

pub use memory::{LockoutSettings, MemoryLimiter, DEFAULT_CAPACITY};

use crate::config::Config;

/// The limiter `limits.failed_logins` asks for.
pub fn build(config: &Config, clock: Arc<dyn Clock>) -> Arc<dyn LoginLimiter> {
    let f = &config.limits.failed_logins;
    Arc::new(MemoryLimiter::new(
        LockoutSettings {
            max: f.max,
            window: f.window.0,
            lockout: f.lockout.0,
        },
        DEFAULT_CAPACITY,
        clock,
    ))
}
