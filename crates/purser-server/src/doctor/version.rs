//! Which registry version: 2.x and 3.x differ in the key ids and algorithms they accept. The
//! config tells 3.x by keys only it knows; the running registry tells by which kid it accepts.

use std::time::SystemTime;

use purser_token::KeyIdMode;

use super::{parse_bearer_challenge, Finding, HttpClient, RegistryToken, RegistryVersion};
use crate::config::{Config, KeyIdConfig};

/// Tells 2.x from 3.x by behaviour: signs two tokens for the registry's own issuer and service
/// with purser's key, one with a libtrust kid (only 2.x accepts it) and one with a thumbprint
/// kid (only 3.x does), and sees which `GET /v2/` accepts. Sets `reg.version` when that tells.
/// Nothing is found out when the registry trusts neither (the trust check then says why).
pub(super) fn probe_version(
    client: &HttpClient,
    config: &Config,
    reg: &mut RegistryToken,
    url: &str,
) -> Option<Finding> {
    let key = purser_token::load_signing_key_file(&config.token.signing_key_file).ok()?;
    let v2 = format!("{}/v2/", url.trim_end_matches('/'));
    let first = client.get(&v2, None).ok()?;
    let challenge = first
        .header("www-authenticate")
        .and_then(parse_bearer_challenge)?;
    let service = challenge.get("service").cloned().or(reg.service.clone())?;
    let issuer = reg.issuer.clone()?;
    let now = purser_core::Clock::wall(&purser_core::SystemClock)
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": "",
        "aud": service,
        "exp": now + 60,
        "nbf": now,
        "iat": now,
        "jti": purser_token::new_jti(),
        "access": [],
    });
    let payload = serde_json::to_vec(&claims).ok()?;
    let accepted = |mode: KeyIdMode| -> bool {
        use purser_core::Signer;
        purser_token::JwsSigner::new(key.clone(), mode, Vec::new())
            .ok()
            .and_then(|s| s.sign_payload(&payload).ok())
            .and_then(|t| client.get(&v2, Some(&format!("Bearer {t}"))).ok())
            .is_some_and(|r| r.status == 200)
    };
    let found = match (
        accepted(KeyIdMode::Libtrust),
        accepted(KeyIdMode::Thumbprint),
    ) {
        (true, false) => RegistryVersion::V2,
        (false, true) => RegistryVersion::V3,
        _ => return None,
    };
    let finding = match reg.version {
        Some(v) if v != found => Finding::warn(
            "version",
            format!("the registry behaves as {found} (it accepts only a {} kid), though its config uses keys of {v}", kid_name(found)),
            "check that --registry and --registry-config describe the same registry",
        ),
        _ => Finding::ok(
            "version",
            format!("the running registry behaves as {found}: it accepts a token of purser's key with a {} kid only", kid_name(found)),
        ),
    };
    reg.version = Some(found);
    reg.version_probed = true;
    Some(finding)
}

fn kid_name(v: RegistryVersion) -> &'static str {
    match v {
        RegistryVersion::V2 => "libtrust",
        RegistryVersion::V3 => "thumbprint",
    }
}

/// The version the config tells, or that it tells none and what purser's key id suits.
pub(super) fn version_finding(config: &Config, reg: &RegistryToken) -> Finding {
    match reg.version {
        Some(v) => Finding::ok(
            "version",
            format!("{v} (the config uses keys only 3.x knows)"),
        ),
        None => {
            let assumed = match config.token.key_id {
                KeyIdConfig::Libtrust => "2.x",
                KeyIdConfig::Thumbprint => "3.x",
            };
            Finding::ok(
                "version",
                format!(
                    "the config reads the same for registry 2.x and 3.x; version-dependent checks name the version they apply to (purser's token.key_id suits {assumed})"
                ),
            )
        }
    }
}
