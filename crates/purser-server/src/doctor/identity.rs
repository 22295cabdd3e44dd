//! Issuer and service: the two names a token must carry for the registry to accept it.

use super::{Finding, RegistryToken};
use crate::config::Config;

/// The registry's `issuer` must be purser's `token.issuer`, exactly.
pub(super) fn check_issuer(config: &Config, reg: &RegistryToken) -> Finding {
    let ours = &config.token.issuer;
    match &reg.issuer {
        None => Finding::problem(
            "issuer",
            "the registry's auth.token.issuer is not set",
            format!("set auth.token.issuer: {ours:?} in the registry config"),
        ),
        Some(theirs) if theirs == ours => {
            Finding::ok("issuer", format!("{ours:?} on both sides"))
        }
        Some(theirs) => Finding::problem(
            "issuer",
            format!("the registry expects issuer {theirs:?} but purser signs tokens as {ours:?}"),
            format!(
                "set auth.token.issuer: {ours:?} in the registry config, or token.issuer: {theirs:?} in purser's"
            ),
        ),
    }
}

/// The registry's `service` must be one of purser's: clients ask for a token for it.
pub(super) fn check_service(config: &Config, reg: &RegistryToken) -> Finding {
    let ours = config.token.service.to_vec();
    match &reg.service {
        None => Finding::problem(
            "service",
            "the registry's auth.token.service is not set",
            format!(
                "set auth.token.service: {:?} in the registry config",
                ours.first().cloned().unwrap_or_default()
            ),
        ),
        Some(theirs) if ours.contains(theirs) => Finding::ok(
            "service",
            format!("{theirs:?} is among purser's token.service"),
        ),
        Some(theirs) => Finding::problem(
            "service",
            format!(
                "the registry's service {theirs:?} is not among purser's token.service {ours:?}: purser answers its clients 400"
            ),
            format!("add {theirs:?} to token.service in purser's config, or set auth.token.service to one of {ours:?}"),
        ),
    }
}
