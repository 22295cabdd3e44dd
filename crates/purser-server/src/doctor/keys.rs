//! The key: purser's signing key and certificate chain, what the registry trusts (its
//! `rootcertbundle` and 3.x's `jwks`), and the per-version checks run over both.

use std::time::SystemTime;

use purser_token::{cert_public_key, load_cert_chain, KeyIdMode};
use serde_json::Value as Json;

use super::expiry::check_expiry;
use super::material::{OurKey, Trust};
use super::registry_config::read_bounded;
use super::trust::version_checks;
use super::{Finding, RegistryToken, RegistryVersion, Status};
use crate::config::Config;

/// Whether the registry whose config is at `registry_config` trusts `public` (a key of
/// `token.keys_dir`, certificate `cert_file`) under the key id tokens will carry: the doctor's
/// key checks for that key alone. Returns the problems, each with its fix; none when trusted.
pub fn key_trust_problems(
    config: &Config,
    registry_config: &std::path::Path,
    public: &purser_token::PublicKey,
    cert_file: &std::path::Path,
) -> Vec<Finding> {
    let reg = match super::read_registry_config(registry_config, None) {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding::problem(
                "registry config",
                e,
                "give the registry's config.yml",
            )]
        }
    };
    let ours = OurKey {
        public: public.clone(),
        mode: crate::build::key_id_mode(config.token.key_id),
        chain: Vec::new(),
        cert_file: None,
    };
    let trust = match load_trust(&reg) {
        Ok(t) => t,
        Err(f) => return vec![f],
    };
    let versions = match reg.version {
        Some(v) => vec![v],
        None => vec![RegistryVersion::V2, RegistryVersion::V3],
    };
    let per_version: Vec<Vec<Finding>> = versions
        .iter()
        .map(|v| version_checks(*v, &ours, &trust, &reg, cert_file))
        .collect();
    // An unknown version is trusted when either version's checks all pass.
    if per_version
        .iter()
        .any(|fs| fs.iter().all(|f| f.status != Status::Problem))
    {
        return Vec::new();
    }
    per_version
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.status == Status::Problem)
        .collect()
}

/// The active key of `token.keys_dir`, as the signing key the checks look at.
fn keys_dir_active(
    config: &Config,
) -> Result<(purser_token::PublicKey, std::path::PathBuf), Finding> {
    let folder = crate::keys::admin::Folder::of(config).ok_or_else(|| {
        Finding::problem(
            "signing key",
            "token.keys_dir is not set",
            "set token.keys_dir",
        )
    })?;
    let set = folder.load().map_err(|e| {
        Finding::problem(
            "signing key",
            e.to_string(),
            "start purser once (it makes the folder's first key), or run `purser keys list`",
        )
    })?;
    let a = set.active();
    Ok((
        a.signer.public_key().clone(),
        crate::keys::cert_path(folder.dir, &a.entry.name),
    ))
}

/// purser's signing key (and certificate chain) against what the registry trusts, for the
/// registry's version or, when unknown, for both; then the certificates' expiry.
pub(super) fn check_key(config: &Config, reg: &RegistryToken, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    let t = &config.token;
    if !t.keys_dir.as_os_str().is_empty() {
        return match keys_dir_active(config) {
            Ok((public, cert)) => check_key_with(config, reg, now, public, Vec::new(), None, &cert),
            Err(f) => vec![f],
        };
    }
    // The certificate to name in fixes: the chain file, else the one generated beside the key.
    let cert_hint = crate::build::generated_cert_path(config);
    if !t.signing_key_file.exists() {
        let what = if t.generate_key {
            "does not exist yet (purser creates it at its first start)"
        } else {
            "does not exist"
        };
        out.push(Finding::problem(
            "signing key",
            format!("{} {what}, so trust cannot be checked", t.signing_key_file.display()),
            format!(
                "start purser once or run `purser keygen --out {}`, put {} in the registry's rootcertbundle, and run doctor again",
                t.signing_key_file.parent().map(|p| p.display().to_string()).unwrap_or_else(|| ".".into()),
                cert_hint.display()
            ),
        ));
        return out;
    }
    let key = match purser_token::load_signing_key_file(&t.signing_key_file) {
        Ok(k) => k,
        Err(e) => {
            out.push(Finding::problem(
                "signing key",
                e.to_string(),
                "fix token.signing_key_file (purser check-config says more)",
            ));
            return out;
        }
    };
    let public = key.public_key();
    let (chain, cert_file) = if t.certificate_file.as_os_str().is_empty() {
        (Vec::new(), None)
    } else {
        let chain = match purser_fs::read_text(
            &t.certificate_file,
            purser_token::MAX_PEM_FILE_BYTES,
        )
        .map_err(|e| e.kind().to_string())
        .and_then(|text| load_cert_chain(&text).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                out.push(Finding::problem(
                    "certificate",
                    format!("token.certificate_file {}: {e}", t.certificate_file.display()),
                    "point token.certificate_file at the PEM certificate of the signing key, or leave it empty",
                ));
                return out;
            }
        };
        (chain, Some(t.certificate_file.clone()))
    };
    out.extend(check_key_with(
        config, reg, now, public, chain, cert_file, &cert_hint,
    ));
    out
}

/// [`check_key`] for a loaded key.
fn check_key_with(
    config: &Config,
    reg: &RegistryToken,
    now: SystemTime,
    public: purser_token::PublicKey,
    chain: Vec<Vec<u8>>,
    cert_file: Option<std::path::PathBuf>,
    cert_hint: &std::path::Path,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let t = &config.token;
    let mode = crate::build::key_id_mode(t.key_id);
    let ours = OurKey {
        public,
        mode,
        chain,
        cert_file,
    };
    out.push(Finding::ok(
        "signing key",
        format!(
            "{} key, kid {} ({} mode){}",
            ours.public.alg(),
            purser_token::key_id(&ours.public, mode),
            match mode {
                KeyIdMode::Libtrust => "libtrust",
                KeyIdMode::Thumbprint => "thumbprint",
            },
            if ours.chain.is_empty() {
                String::new()
            } else {
                format!("; tokens carry x5c from {}", t.certificate_file.display())
            }
        ),
    ));

    let trust = match load_trust(reg) {
        Ok(tr) => tr,
        Err(f) => {
            out.push(f);
            return out;
        }
    };

    // Version-dependent checks: for a known version, as they are; for an unknown one, both,
    // and when purser suits one of them, the other's problems are only warnings.
    let versions = match reg.version {
        Some(v) => vec![v],
        None => vec![RegistryVersion::V2, RegistryVersion::V3],
    };
    let per_version: Vec<(RegistryVersion, Vec<Finding>)> = versions
        .iter()
        .map(|v| (*v, version_checks(*v, &ours, &trust, reg, cert_hint)))
        .collect();
    let unknown = per_version.len() > 1;
    let any_clean = per_version
        .iter()
        .any(|(_, fs)| fs.iter().all(|f| f.status != Status::Problem));
    for (v, findings) in per_version {
        for mut f in findings {
            if unknown {
                f.what = format!("({v}) {}", f.what);
                if any_clean && f.status == Status::Problem {
                    f.status = Status::Warn;
                    f.what = format!("{} — only if the registry is this version", f.what);
                }
            }
            out.push(f);
        }
    }
    out.extend(check_expiry(&ours, &trust, reg, now));
    out
}

fn load_trust(reg: &RegistryToken) -> Result<Trust, Finding> {
    let mut bundle = Vec::new();
    if let Some(path) = &reg.rootcertbundle {
        let text = read_bounded(path).map_err(|e| {
            Finding::problem(
                "rootcertbundle",
                e,
                "point auth.token.rootcertbundle at a PEM file holding purser's certificate",
            )
        })?;
        bundle = load_cert_chain(&text).map_err(|e| {
            Finding::problem(
                "rootcertbundle",
                format!("{}: {e}", path.display()),
                "the bundle must hold PEM CERTIFICATE blocks, e.g. the certificate purser keygen wrote",
            )
        })?;
    }
    let mut bundle_keys = Vec::new();
    for der in &bundle {
        if let Ok(k) = cert_public_key(der) {
            bundle_keys.push(k);
        }
    }
    let mut jwks = Vec::new();
    if let Some(path) = &reg.jwks {
        let text = read_bounded(path).map_err(|e| {
            Finding::problem(
                "jwks",
                e,
                "point auth.token.jwks at a copy of purser's /.well-known/jwks.json",
            )
        })?;
        let doc: Json = serde_json::from_str(&text).map_err(|e| {
            Finding::problem(
                "jwks",
                format!("{} is not JSON: {e}", path.display()),
                "save purser's /.well-known/jwks.json there",
            )
        })?;
        jwks = doc
            .get("keys")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
    }
    if bundle.is_empty() && jwks.is_empty() {
        return Err(Finding::problem(
            "rootcertbundle",
            "the registry trusts no key: neither rootcertbundle nor jwks holds one (the registry refuses to start)",
            "set auth.token.rootcertbundle to purser's certificate",
        ));
    }
    Ok(Trust {
        bundle,
        bundle_keys,
        jwks,
    })
}
