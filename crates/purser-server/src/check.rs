//! Offline checks and policy tools behind `purser check-config`, `purser policy explain` and
//! `purser policy test`. They use the same loaders and the same decision code as the server.

use std::net::IpAddr;
use std::path::Path;

use purser_authn::htgroup::HtgroupDb;
use purser_authn::htpasswd::HtpasswdDb;
use purser_authz::{CaseFile, Policy};
use purser_core::{Identity, RequestContext, ResourceScope};

use crate::config::{BackendKind, Config};

/// Every problem that can be found without the network: the config's own validation, then each
/// file it names (key, certificate, published keys, htpasswd, htgroup, policy) and the LDAP
/// settings. Problems are collected, never returned early.
pub fn check(config: &Config) -> Vec<String> {
    let mut problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
    let t = &config.token;
    if t.signing_key_file.exists() {
        let cert =
            (!t.certificate_file.as_os_str().is_empty()).then_some(t.certificate_file.as_path());
        if let Err(e) = purser_token::JwsSigner::from_files(
            &t.signing_key_file,
            cert,
            crate::build::key_id_mode(t.key_id),
        ) {
            problems.push(format!("token.signing_key_file: {e}"));
        }
    } else if !t.generate_key {
        problems.push(format!(
            "token.signing_key_file: {} does not exist and token.generate_key is false: run `purser keygen`",
            t.signing_key_file.display()
        ));
    }
    for (i, p) in t.publish_keys.iter().enumerate() {
        if let Err(e) = purser_token::public_jwk_from_file(p, crate::build::key_id_mode(t.key_id)) {
            problems.push(format!("token.publish_keys[{i}]: {e}"));
        }
    }
    for kind in &config.authn.order {
        match kind {
            BackendKind::Static => {
                if let Some(s) = &config.authn.r#static {
                    let users = s
                        .users
                        .iter()
                        .map(|(name, u)| purser_authn::static_users::StaticUserEntry {
                            name: name.clone(),
                            password_hash: u.password_hash.clone(),
                            groups: u.groups.clone(),
                        })
                        .collect();
                    if let Err(e) = purser_authn::static_users::StaticAuthenticator::new(users) {
                        problems.push(format!("authn.static: {e}"));
                    }
                }
            }
            BackendKind::Htpasswd => {
                if let Some(h) = &config.authn.htpasswd {
                    match HtpasswdDb::load(&h.file) {
                        Ok((_, issues)) => problems.extend(
                            issues
                                .iter()
                                .filter(|i| i.severity == purser_authn::Severity::LineRefused)
                                .map(|i| format!("authn.htpasswd.file: {i}")),
                        ),
                        Err(e) => problems.push(format!("authn.htpasswd.file: {e}")),
                    }
                    if !h.groups_file.as_os_str().is_empty() {
                        if let Err(e) = HtgroupDb::load(&h.groups_file) {
                            problems.push(format!("authn.htpasswd.groups_file: {e}"));
                        }
                    }
                }
            }
            BackendKind::Ldap => {
                if let Some(l) = &config.authn.ldap {
                    if let Err(e) = purser_authn::ldap::LdapAuthenticator::new(l.settings()) {
                        problems.push(format!("authn.ldap: {e}"));
                    }
                }
            }
        }
    }
    if let Err(e) = load_policy(&config.authz.policy_file) {
        problems.push(format!("authz.policy_file: {e}"));
    }
    problems
}

/// Reads the policy the way the server does, with the size bound applied while reading.
fn load_policy(path: &Path) -> Result<Policy, String> {
    Policy::from_file(path).map_err(|e| e.to_string())
}

/// `purser policy explain`: one line per scope, from the same decision the server makes.
pub fn explain(
    config: &Config,
    account: &str,
    groups: Vec<String>,
    ip: Option<IpAddr>,
    service: Option<String>,
    scopes: &[String],
) -> Result<String, String> {
    let policy = load_policy(&config.authz.policy_file)?;
    let scopes =
        ResourceScope::parse_all(scopes.iter().map(String::as_str)).map_err(|e| e.to_string())?;
    let service = service.unwrap_or_else(|| {
        config
            .token
            .service
            .to_vec()
            .into_iter()
            .next()
            .unwrap_or_default()
    });
    let who = Identity::new(account, groups);
    let ctx = RequestContext {
        service,
        client_ip: ip,
    };
    let explanations = policy.explain(&who, &ctx, &scopes);
    Ok(purser_authz::render_explanation(&explanations))
}

/// `purser policy test`: (cases passed, rendered failures).
pub fn policy_test(config: &Config, cases: &Path) -> Result<(usize, Vec<String>), String> {
    let policy = load_policy(&config.authz.policy_file)?;
    let file = CaseFile::from_file(cases).map_err(|e| e.to_string())?;
    let service = config
        .token
        .service
        .to_vec()
        .into_iter()
        .next()
        .unwrap_or_default();
    let failures = purser_authz::run_cases(&policy, &file, &service);
    let passed = file.len() - failures.len();
    Ok((passed, failures.iter().map(|f| f.to_string()).collect()))
}
