//! Trust per registry version: 2.x looks keys up by libtrust id in the bundle and has no EdDSA;
//! 3.x looks them up by the thumbprint it computes (or its `jwks` file's `kid`) and honours
//! `signingalgorithms`; both verify an `x5c` chain against the bundle first.

use std::path::Path;

use purser_token::{distribution_thumbprint, jwk_of, libtrust_key_id, Alg, KeyIdMode, PublicKey};
use serde_json::Value as Json;

use super::material::{OurKey, Trust};
use super::{Finding, RegistryToken, RegistryVersion};

/// True when the JWK describes `key` (same type and parameters).
fn jwk_matches(jwk: &Json, key: &PublicKey) -> bool {
    let ours = jwk_of(key, KeyIdMode::Libtrust, &[]);
    ["kty", "crv", "n", "e", "x", "y"]
        .iter()
        .all(|m| jwk.get(*m) == ours.get(*m))
}

/// The checks whose rules differ between registry versions: the algorithm, the key id, and
/// whether the registry trusts purser's key under that key id (or its `x5c` chain, first).
pub(crate) fn version_checks(
    v: RegistryVersion,
    ours: &OurKey,
    trust: &Trust,
    reg: &RegistryToken,
    cert_hint: &Path,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let alg = ours.public.alg();
    // Algorithm.
    match v {
        RegistryVersion::V2 => {
            if alg == Alg::EdDsa {
                out.push(Finding::problem(
                    "algorithm",
                    "the signing key is Ed25519 (EdDSA), which registry 2.x cannot verify",
                    "use an RS256, ES256 or ES384 key (`purser keygen --alg es256`), or run registry 3.x",
                ));
            } else {
                out.push(Finding::ok(
                    "algorithm",
                    format!("{alg} is accepted by {v}"),
                ));
            }
            if trust
                .bundle_keys
                .iter()
                .any(|k| matches!(k, PublicKey::Ed25519(_)))
            {
                out.push(Finding::problem(
                    "rootcertbundle",
                    "the bundle holds an Ed25519 certificate, which makes registry 2.x stop at start",
                    "remove the Ed25519 certificate from the bundle, or run registry 3.x",
                ));
            }
        }
        RegistryVersion::V3 => match &reg.signingalgorithms {
            Some(list) if !list.iter().any(|a| a.eq_ignore_ascii_case(alg.as_str())) => {
                out.push(Finding::problem(
                    "algorithm",
                    format!(
                        "the signing key signs {alg}, which is not in the registry's signingalgorithms {list:?}"
                    ),
                    format!("add {alg} to auth.token.signingalgorithms, or use a key of one of those"),
                ));
            }
            _ => out.push(Finding::ok(
                "algorithm",
                format!("{alg} is accepted by {v}"),
            )),
        },
    }

    // Trust: the x5c chain first, which both versions verify against the bundle.
    if !ours.chain.is_empty() {
        let cert_file = ours
            .cert_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let in_bundle = ours.chain.iter().any(|c| trust.bundle.contains(c));
        if in_bundle {
            out.push(Finding::ok(
                "trust",
                format!("tokens carry x5c from {cert_file}, and the rootcertbundle holds a certificate of that chain"),
            ));
        } else {
            out.push(Finding::problem(
                "trust",
                format!(
                    "tokens carry x5c from {cert_file}, but no certificate of that chain is in the registry's rootcertbundle: the registry refuses them (signed by unknown authority)"
                ),
                format!("append {cert_file} (or its CA) to the registry's rootcertbundle, then restart the registry"),
            ));
        }
        return out;
    }

    let kid = purser_token::key_id(&ours.public, ours.mode);
    let bundle_name = reg
        .rootcertbundle
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the rootcertbundle".into());
    let fix_bundle = format!(
        "append {} (purser's certificate) to {bundle_name}, then restart the registry",
        cert_hint.display()
    );
    match v {
        RegistryVersion::V2 => {
            if ours.mode != KeyIdMode::Libtrust {
                out.push(Finding::problem(
                    "key id",
                    format!(
                        "tokens carry a thumbprint kid ({kid}), which registry 2.x never accepts: it looks keys up by libtrust id"
                    ),
                    "set token.key_id: libtrust in purser's config",
                ));
            } else {
                out.push(Finding::ok(
                    "key id",
                    format!("libtrust kid {kid}, as {v} needs"),
                ));
            }
            let want = libtrust_key_id(&ours.public);
            if trust.bundle_keys.iter().any(|k| libtrust_key_id(k) == want) {
                out.push(Finding::ok(
                    "trust",
                    format!("{bundle_name} holds a certificate of purser's signing key (libtrust id {want})"),
                ));
            } else {
                let have: Vec<String> = trust.bundle_keys.iter().map(libtrust_key_id).collect();
                out.push(Finding::problem(
                    "trust",
                    format!(
                        "{bundle_name} holds no certificate of purser's signing key (libtrust id {want}; the bundle has {}): the registry answers \"token signed by untrusted key\"",
                        list_or_none(&have)
                    ),
                    fix_bundle,
                ));
            }
        }
        RegistryVersion::V3 => {
            if ours.mode != KeyIdMode::Thumbprint {
                out.push(Finding::problem(
                    "key id",
                    format!(
                        "tokens carry a libtrust kid ({kid}), which registry 3.x never accepts: it looks keys up by JWK thumbprint"
                    ),
                    "set token.key_id: thumbprint in purser's config",
                ));
            } else {
                out.push(Finding::ok(
                    "key id",
                    format!("thumbprint kid {kid}, as {v} needs"),
                ));
            }
            let thumb = distribution_thumbprint(&ours.public);
            let in_bundle = trust
                .bundle_keys
                .iter()
                .any(|k| distribution_thumbprint(k) == thumb);
            let jwks_exact = trust.jwks.iter().any(|j| {
                j.get("kid").and_then(Json::as_str) == Some(kid.as_str())
                    && jwk_matches(j, &ours.public)
            });
            let jwks_other_kid = trust
                .jwks
                .iter()
                .find(|j| jwk_matches(j, &ours.public))
                .and_then(|j| j.get("kid").and_then(Json::as_str).map(str::to_string));
            if (in_bundle && kid == thumb) || jwks_exact {
                let via = if jwks_exact {
                    "jwks"
                } else {
                    bundle_name.as_str()
                };
                out.push(Finding::ok(
                    "trust",
                    format!("{via} trusts purser's signing key under kid {kid}"),
                ));
            } else if let Some(other) =
                jwks_other_kid.filter(|_| ours.mode == KeyIdMode::Thumbprint)
            {
                out.push(Finding::problem(
                    "trust",
                    format!("the registry's jwks lists purser's key under kid {other}, but tokens carry kid {kid}"),
                    "save purser's /.well-known/jwks.json as the registry's jwks file, then restart the registry",
                ));
            } else if in_bundle {
                // The key is trusted, the kid is wrong: the "key id" finding says what to do.
                out.push(Finding::ok(
                    "trust",
                    format!("{bundle_name} holds purser's certificate (thumbprint {thumb})"),
                ));
            } else {
                let have: Vec<String> =
                    trust
                        .bundle_keys
                        .iter()
                        .map(distribution_thumbprint)
                        .chain(trust.jwks.iter().filter_map(|j| {
                            j.get("kid").and_then(Json::as_str).map(str::to_string)
                        }))
                        .collect();
                out.push(Finding::problem(
                    "trust",
                    format!(
                        "neither the rootcertbundle nor the jwks holds purser's signing key (thumbprint {thumb}; trusted: {}): the registry answers \"token signed by untrusted key\"",
                        list_or_none(&have)
                    ),
                    format!("{fix_bundle}; or save purser's /.well-known/jwks.json as the registry's jwks file"),
                ));
            }
        }
    }
    out
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
