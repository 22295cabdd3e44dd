//! Certificate expiry: purser's `x5c` chain and the registry's bundle.

use std::time::SystemTime;

use purser_token::{cert_not_after, cert_public_key};

use super::material::{OurKey, Trust};
use super::{Finding, RegistryToken, EXPIRY_WARNING};

/// Certificates in use that expired or end within [`EXPIRY_WARNING`]: purser's chain (sent as
/// `x5c`), and the bundle's; an expired bundle certificate of purser's key is only a problem
/// when tokens carry a chain that ends in it.
pub(crate) fn check_expiry(
    ours: &OurKey,
    trust: &Trust,
    reg: &RegistryToken,
    now: SystemTime,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let describe = |t: SystemTime| -> String {
        let dt = time::OffsetDateTime::from(t);
        dt.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| format!("{dt}"))
    };
    let file = ours
        .cert_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for (i, der) in ours.chain.iter().enumerate() {
        let Ok(end) = cert_not_after(der) else {
            continue;
        };
        let which = format!("certificate {} of {file}", i + 1);
        if end <= now {
            out.push(Finding::problem(
                "certificate expiry",
                format!("{which} expired on {}: the registry refuses tokens whose x5c holds it", describe(end)),
                "issue a new certificate for the signing key (or `purser keygen` a new key and certificate), update token.certificate_file and the registry's rootcertbundle",
            ));
        } else if end.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
            out.push(Finding::warn(
                "certificate expiry",
                format!("{which} expires on {}", describe(end)),
                "renew it before then and update token.certificate_file and the rootcertbundle",
            ));
        }
    }
    let bundle_name = reg
        .rootcertbundle
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let ours_in_bundle = |der: &Vec<u8>| {
        cert_public_key(der).is_ok_and(|k| k == ours.public) || ours.chain.contains(der)
    };
    for (i, der) in trust.bundle.iter().enumerate() {
        let Ok(end) = cert_not_after(der) else {
            continue;
        };
        let which = format!("certificate {} of {bundle_name}", i + 1);
        let relevant = ours_in_bundle(der);
        if end <= now {
            if relevant && !ours.chain.is_empty() {
                out.push(Finding::problem(
                    "certificate expiry",
                    format!(
                        "{which} (purser's) expired on {}: x5c chains ending in it are refused",
                        describe(end)
                    ),
                    "replace it in the bundle with a current certificate of the signing key",
                ));
            } else {
                out.push(Finding::warn(
                    "certificate expiry",
                    format!(
                        "{which}{} expired on {}; the registry still trusts its key by key id, but tools and future versions may not",
                        if relevant { " (purser's)" } else { "" },
                        describe(end)
                    ),
                    "replace it with a current certificate",
                ));
            }
        } else if relevant && end.duration_since(now).unwrap_or_default() < EXPIRY_WARNING {
            out.push(Finding::warn(
                "certificate expiry",
                format!("{which} (purser's) expires on {}", describe(end)),
                "renew it before then",
            ));
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "certificate expiry",
            "no certificate in use expires within 30 days",
        ));
    }
    out
}
