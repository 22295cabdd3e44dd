//! purser's server: configuration layers, the token service and its tower stack, JWKS and
//! health endpoints, the metrics registry, and live reload of watched files.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use purser_server::config::{Config, LoadOptions};
//! let loaded = Config::load(&LoadOptions::default())?;
//! purser_server::serve::run(loaded.config).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod backends;
pub mod build;
pub mod check;
pub mod config;
pub mod doctor;
pub mod error;
pub mod forwarded;
pub mod http;
pub mod keys;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod replay;
pub mod request;
pub mod revocations;
pub mod serve;
pub mod shadow;
pub mod stack;
pub mod tls;
