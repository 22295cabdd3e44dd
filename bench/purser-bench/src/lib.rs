//! purser's benchmark. One command (`bench/run`) builds release binaries, makes its own keys,
//! users and policies, starts `purser serve` once per scenario pinned to one core, drives it
//! from another core with the load generator here, and prints one table (tokens/s, p50/p99
//! latency, server CPU, peak RSS) with the limits it is judged against: the raw signing and
//! bcrypt rates of the server's core and a minimal hyper endpoint under the same load. The
//! OIDC scenario adds a stand-in issuer over HTTPS (`issuer.rs`).
//!
//! ```
//! use purser_bench::fixtures;
//! let policy = fixtures::policy(true);
//! assert_eq!(policy.matches("- name:").count(), 10_000);
//! ```
#![forbid(unsafe_code)]

pub mod cache_memory;
pub mod driver;
pub mod edits;
pub mod fixtures;
pub mod issuer;
pub mod libraries;
pub mod limit;
pub mod load;
pub mod procstat;
pub mod rates;
pub mod replay;
