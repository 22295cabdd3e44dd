//! `purser doctor ldap --user NAME [--scope SCOPE]...`: one login through the `ldap` backend,
//! step by step (connect to each URL with what TLS showed, service bind, user search, user
//! bind, the user's entry, its labels, group search), then what the policy grants for each scope and by
//! which rule. The steps are the backend's own (`purser_authn::ldap::diagnose`); this file runs
//! them on a runtime of its own and writes the report. No password is ever part of it.

use std::fmt::Write as _;

use purser_authn::ldap::diagnose::Diagnosis;
use purser_authn::ldap::LdapAuthenticator;

use crate::config::Config;

/// The report, and whether the login would succeed (every step passed).
pub fn ldap(config: &Config, user: &str, password: &str, scopes: &[String]) -> (String, bool) {
    let mut out = String::new();
    let Some(ldap) = &config.authn.ldap else {
        out.push_str("FAIL config: no authn.ldap section: nothing to check\n");
        return (out, false);
    };
    let authenticator = match LdapAuthenticator::new(ldap.settings()) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(out, "FAIL config: {e}");
            return (out, false);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(out, "FAIL runtime: {e}");
            return (out, false);
        }
    };
    let diagnosis = runtime.block_on(authenticator.diagnose(user, password));
    drop(authenticator);
    drop(runtime);
    render(&mut out, &diagnosis);
    let Some(identity) = &diagnosis.identity else {
        let failed = diagnosis.failed_step().unwrap_or("connect");
        let _ = writeln!(out, "login would FAIL at step: {failed}");
        return (out, false);
    };
    let _ = write!(
        out,
        "login would succeed: account {}, groups [{}]",
        identity.account,
        identity.groups.join(", ")
    );
    if !identity.labels.is_empty() {
        let labels: Vec<String> = identity
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(out, ", labels [{}]", labels.join(", "));
    }
    out.push('\n');
    if !scopes.is_empty() {
        match crate::check::explain_labeled(
            config,
            &identity.account,
            identity.groups.clone(),
            identity.labels.clone(),
            None,
            None,
            scopes,
        ) {
            Ok(text) => {
                out.push_str("policy for this identity:\n");
                for line in text.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "FAIL policy: {e}");
                let _ = writeln!(out, "login would FAIL at step: policy");
                return (out, false);
            }
        }
    }
    (out, true)
}

fn render(out: &mut String, d: &Diagnosis) {
    for (i, s) in d.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{} {}. {}",
            if s.ok { "ok  " } else { "FAIL" },
            i + 1,
            s.name
        );
        for line in &s.lines {
            let _ = writeln!(out, "       {line}");
        }
    }
}
