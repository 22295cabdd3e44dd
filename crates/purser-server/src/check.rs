//! Offline checks and policy tools behind `purser check-config`, `purser policy explain` and
//! `purser policy test`. They use the same loaders and the same decision code as the server:
//! `check-config` builds the server through [`crate::build`] in its dry-run mode.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use purser_authz::{CaseFile, Policy};
use purser_core::{Identity, RequestContext, ResourceScope};

use crate::config::{Config, Problem};

/// Every problem that can be found without the network: the config's own validation, then
/// what building the server finds (the signing key and its certificate, the published keys, the
/// TLS pair, each backend, every watched file), each with its key path. Nothing is written,
/// bound or contacted; problems are collected, never returned early.
pub fn check(config: &Config) -> Vec<Problem> {
    let mut problems = config.validate();
    problems.extend(crate::build::dry_run(config));
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
    explain_labeled(
        config,
        account,
        groups,
        BTreeMap::new(),
        ip,
        service,
        scopes,
    )
}

/// [`explain`] for a caller with labels (`--label k=v`: an OIDC token's claims).
pub fn explain_labeled(
    config: &Config,
    account: &str,
    groups: Vec<String>,
    labels: BTreeMap<String, String>,
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
    let mut who = Identity::new(account, groups);
    who.labels = labels;
    let ctx = RequestContext {
        service,
        client_ip: ip,
    };
    let explanations = policy.explain(&who, &ctx, &scopes);
    Ok(purser_authz::render_explanation(&explanations))
}

/// `purser policy test`: (cases passed, rendered failures).
pub fn policy_test(config: &Config, cases: &Path) -> Result<(usize, Vec<String>), String> {
    policy_test_labeled(config, cases, &BTreeMap::new())
}

/// [`policy_test`] with `labels` (`--label k=v`) given to every case; a case's own win.
pub fn policy_test_labeled(
    config: &Config,
    cases: &Path,
    labels: &BTreeMap<String, String>,
) -> Result<(usize, Vec<String>), String> {
    let policy = load_policy(&config.authz.policy_file)?;
    let file = CaseFile::from_file(cases).map_err(|e| e.to_string())?;
    let service = config
        .token
        .service
        .to_vec()
        .into_iter()
        .next()
        .unwrap_or_default();
    let failures = purser_authz::run_cases_with_labels(&policy, &file, &service, labels);
    let passed = file.len() - failures.len();
    Ok((passed, failures.iter().map(|f| f.to_string()).collect()))
}

/// Reads `--label k=v`: a label name (letters, digits, `_`, `-`) and its value.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let ok = !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!(
            "{k:?} is not a label name: letters, digits, _ and -, at most 64 characters"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}
