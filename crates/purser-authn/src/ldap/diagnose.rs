//! `purser doctor ldap`: one login walked through step by step, each step saying what it did
//! and what it found, so that an operator sees where a misconfiguration bites. The steps are
//! the backend's own (its connector, trust, filters and escaping); only the reporting differs.
//! Nothing here writes the user's or the service account's password anywhere.

use ldap3::{Ldap, Scope, SearchEntry, SearchOptions};
use purser_core::Identity;

use super::escape::{fill, filter_value};
use super::refusal::BindRefusal;
use super::tls::TlsReport;
use super::{close, is_dn_template, LdapAuthenticator, UserEntry, MAX_GROUPS};

/// Most DNs listed when a search finds several entries.
const LIST_AT_MOST: usize = 5;

/// One step of the walk-through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// `connect ldaps://...`, `service bind`, `user search`, `user bind`, `user entry`,
    /// `account`, `labels` (when `labels` are configured), `group search`.
    pub name: String,
    /// Whether the login can go on past this step.
    pub ok: bool,
    /// What the step did and found, one fact a line.
    pub lines: Vec<String>,
}

/// The walk-through: its steps in order, and the identity the login would get when every
/// step passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub steps: Vec<Step>,
    pub identity: Option<Identity>,
}

impl Diagnosis {
    /// The first failing step's name.
    pub fn failed_step(&self) -> Option<&str> {
        self.steps.iter().find(|s| !s.ok).map(|s| s.name.as_str())
    }
}

fn step(name: impl Into<String>, ok: bool, lines: Vec<String>) -> Step {
    Step {
        name: name.into(),
        ok,
        lines,
    }
}

fn tls_lines(report: &Option<TlsReport>, tls_used: bool) -> Vec<String> {
    match report {
        None if tls_used => vec!["TLS: no certificate was received".into()],
        None => vec![
            "TLS: none (plain ldap:// without start_tls: passwords cross the network in clear)"
                .into(),
        ],
        Some(r) => {
            let mut lines = vec![
                format!("certificate subject: {}", r.subject),
                format!("issuer: {}", r.issuer),
                format!("valid: {} to {}", r.not_before, r.not_after),
                format!(
                    "names: {} (checked against {})",
                    if r.names.is_empty() {
                        "none".to_string()
                    } else {
                        r.names.join(", ")
                    },
                    r.checked_name
                ),
            ];
            match &r.verdict {
                Ok(why) => lines.push(format!("trusted: {why}")),
                Err(why) => lines.push(format!("NOT trusted: {why}")),
            }
            lines
        }
    }
}

impl LdapAuthenticator {
    /// Walks one login of `username` with `password` through every step, stopping at the first
    /// that fails (see the module documentation).
    pub async fn diagnose(&self, username: &str, password: &str) -> Diagnosis {
        let mut steps = Vec::new();
        let identity = self.walk(username, password, &mut steps).await;
        Diagnosis { steps, identity }
    }

    async fn walk(
        &self,
        username: &str,
        password: &str,
        steps: &mut Vec<Step>,
    ) -> Option<Identity> {
        // 1. Every URL, in order: the login uses the first that answers.
        let mut any = false;
        for url in self.connector.urls() {
            let (result, report) = self.connector.connect_one(url).await;
            let mut lines = tls_lines(&report, self.connector.uses_tls_for(url));
            match result {
                Ok(ldap) => {
                    lines.insert(0, "connected".into());
                    close(ldap).await;
                    any = true;
                    steps.push(step(format!("connect {url}"), true, lines));
                }
                Err(e) => {
                    lines.insert(0, format!("failed: {e}"));
                    steps.push(step(format!("connect {url}"), false, lines));
                }
            }
        }
        if !any {
            return None;
        }
        // A later URL may answer while an earlier one does not; the login still works then.
        for s in steps.iter_mut() {
            if !s.ok {
                s.ok = true;
                s.lines
                    .push("(a later URL answers: logins fail over to it)".into());
            }
        }

        // 2. The service account.
        let service = match &self.pool {
            None => {
                steps.push(step(
                    "service bind",
                    true,
                    vec!["no service account (bind_dn empty): direct bind".into()],
                ));
                None
            }
            Some(pool) => {
                let dn = pool.bind_dn().to_string();
                match self.bind_new(&dn, pool.bind_password()).await {
                    Ok(Ok(ldap)) => {
                        steps.push(step("service bind", true, vec![format!("bound as {dn}")]));
                        Some(ldap)
                    }
                    Ok(Err(refusal)) => {
                        steps.push(step(
                            "service bind",
                            false,
                            vec![
                                format!("bind as {dn} refused: {refusal}"),
                                "check authn.ldap.bind_dn and bind_password (or bind_password_file)".into(),
                            ],
                        ));
                        return None;
                    }
                    Err(e) => {
                        steps.push(step(
                            "service bind",
                            false,
                            vec![format!("bind as {dn}: {e}")],
                        ));
                        return None;
                    }
                }
            }
        };

        // 3. The user's DN: searched, or made from the template.
        let mut found: Option<UserEntry> = None;
        let dn = if self.search_mode {
            let ldap = service?;
            let filter = fill(&self.user_filter, &[("username", &filter_value(username))]);
            let mut lines = vec![
                format!("base: {}", self.user_base),
                "scope: subtree".into(),
                format!("filter: {filter}"),
            ];
            let attrs = self.entry_attributes();
            let result = self
                .search_on(
                    &ldap,
                    &self.user_base,
                    &filter,
                    2,
                    attrs.iter().map(String::as_str).collect(),
                )
                .await;
            close(ldap).await;
            match result {
                Err(e) => {
                    lines.push(format!("failed: {e}"));
                    steps.push(step("user search", false, lines));
                    return None;
                }
                Ok((rc, text, entries)) => {
                    let entries: Vec<UserEntry> =
                        entries.into_iter().map(|e| self.user_entry(e)).collect();
                    if rc == 32 {
                        lines.push(
                            "the base does not exist in the directory: check authn.ldap.user_base"
                                .into(),
                        );
                        steps.push(step("user search", false, lines));
                        return None;
                    }
                    if rc != 0 && rc != 4 {
                        lines.push(format!("failed: result code {rc} {text}"));
                        steps.push(step("user search", false, lines));
                        return None;
                    }
                    match entries.len() {
                        0 => {
                            lines.push("found: none (the user is unknown to this backend): check authn.ldap.user_filter and user_base".into());
                            steps.push(step("user search", false, lines));
                            return None;
                        }
                        1 if rc == 0 => {
                            let entry = entries.into_iter().next()?;
                            lines.push(format!("found: {}", entry.dn));
                            let dn = entry.dn.clone();
                            found = Some(entry);
                            steps.push(step("user search", true, lines));
                            dn
                        }
                        n => {
                            lines.push(format!(
                                "found: {} entries, the login is refused: make authn.ldap.user_filter match one entry per user",
                                if rc == 4 { format!("{n} or more") } else { n.to_string() }
                            ));
                            for e in entries.iter().take(LIST_AT_MOST) {
                                lines.push(format!("  {}", e.dn));
                            }
                            steps.push(step("user search", false, lines));
                            return None;
                        }
                    }
                }
            }
        } else {
            if let Some(ldap) = service {
                close(ldap).await;
            }
            let dn = self.direct_dn(username);
            steps.push(step(
                "user DN",
                true,
                vec![format!("from authn.ldap.user_dn: {dn}")],
            ));
            dn
        };

        // 4. The user's bind.
        let ldap = match self.bind_new(&dn, password).await {
            Ok(Ok(ldap)) => {
                steps.push(step("user bind", true, vec![format!("bound as {dn}")]));
                ldap
            }
            Ok(Err(refusal)) => {
                steps.push(step(
                    "user bind",
                    false,
                    vec![format!("bind as {dn} refused: {refusal}")],
                ));
                return None;
            }
            Err(e) => {
                steps.push(step("user bind", false, vec![format!("bind as {dn}: {e}")]));
                return None;
            }
        };

        // 5. Direct bind: the user's own entry (the account, the DN as the directory has it).
        let entry = match found {
            Some(entry) => entry,
            None => {
                let read = self.direct_entry(username, &dn, Some(&ldap)).await;
                match read {
                    Ok(Some(entry)) => {
                        steps.push(step(
                            "user entry",
                            true,
                            vec![format!("read as the user: {}", entry.dn)],
                        ));
                        entry
                    }
                    Ok(None) => {
                        steps.push(step("user entry", false, vec![if is_dn_template(&self.user_dn) {
                            format!("the user cannot read their own entry {dn}: give users read access to it")
                        } else {
                            format!("no single entry under {} matches {}: check authn.ldap.user_base and user_filter", self.user_base, fill(&self.user_filter, &[("username", &filter_value(username))]))
                        }]));
                        close(ldap).await;
                        return None;
                    }
                    Err(e) => {
                        steps.push(step("user entry", false, vec![format!("failed: {e}")]));
                        close(ldap).await;
                        return None;
                    }
                }
            }
        };
        let account = match &entry.account {
            Ok(a) => {
                steps.push(step(
                    "account",
                    true,
                    vec![format!("{}: {a}", self.account_attribute)],
                ));
                a.clone()
            }
            Err(reason) => {
                steps.push(step(
                    "account",
                    false,
                    vec![format!(
                        "{} of {}: {reason}: check authn.ldap.account_attribute",
                        self.account_attribute, entry.dn
                    )],
                ));
                close(ldap).await;
                return None;
            }
        };

        // 6. Labels: each configured attribute's first value, or its absence (not an error:
        // the label is left out and rules naming it do not match).
        if !self.labels.is_empty() {
            let lines = self
                .labels
                .iter()
                .map(|(label, attribute)| match entry.labels.get(label) {
                    Some(value) => format!("{label} ({attribute}): {value}"),
                    None => format!(
                        "{label} ({attribute}): not in the entry (or not readable): no such label"
                    ),
                })
                .collect();
            steps.push(step("labels", true, lines));
        }
        let with_labels = |identity: Identity| Identity {
            labels: entry.labels.clone(),
            ..identity
        };

        // 7. Groups.
        if self.group_base.is_empty() {
            steps.push(step(
                "group search",
                true,
                vec!["no group_base: no groups".into()],
            ));
            close(ldap).await;
            return Some(with_labels(Identity::new(account, Vec::new())));
        }
        let filter = fill(
            &self.group_filter,
            &[
                ("dn", &filter_value(&entry.dn)),
                ("username", &filter_value(&account)),
            ],
        );
        let mut lines = vec![
            format!("base: {}", self.group_base),
            "scope: subtree".into(),
            format!("filter: {filter}"),
        ];
        let result = match &self.pool {
            Some(pool) => match self.bind_new(pool.bind_dn(), pool.bind_password()).await {
                Ok(Ok(service)) => {
                    let r = self
                        .search_on(
                            &service,
                            &self.group_base,
                            &filter,
                            MAX_GROUPS,
                            vec![self.group_name_attribute.as_str()],
                        )
                        .await;
                    close(service).await;
                    r
                }
                Ok(Err(refusal)) => Err(format!("service bind refused: {refusal}")),
                Err(e) => Err(e.to_string()),
            },
            None => {
                self.search_on(
                    &ldap,
                    &self.group_base,
                    &filter,
                    MAX_GROUPS,
                    vec![self.group_name_attribute.as_str()],
                )
                .await
            }
        };
        close(ldap).await;
        let (rc, text, entries) = match result {
            Ok(r) => r,
            Err(e) => {
                lines.push(format!("failed: {e}"));
                steps.push(step("group search", false, lines));
                return None;
            }
        };
        if rc == 32 {
            lines.push(
                "the base does not exist in the directory: check authn.ldap.group_base".into(),
            );
            steps.push(step("group search", false, lines));
            return None;
        }
        if rc != 0 && rc != 4 {
            lines.push(format!("failed: result code {rc} {text}"));
            steps.push(step("group search", false, lines));
            return None;
        }
        let mut groups: Vec<String> = entries
            .into_iter()
            .flat_map(|e| {
                e.attrs
                    .into_iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(&self.group_name_attribute))
                    .flat_map(|(_, v)| v)
            })
            .collect();
        groups.sort();
        groups.dedup();
        if groups.is_empty() && entry.member_of > 0 {
            lines.push(format!(
                "found: none, while the user's entry lists {} groups in memberOf: check authn.ldap.group_base and group_filter",
                entry.member_of
            ));
            steps.push(step("group search", false, lines));
            return None;
        }
        lines.push(if groups.is_empty() {
            "found: none (the user is in no group under this base)".into()
        } else {
            format!("found: {}", groups.join(", "))
        });
        steps.push(step("group search", true, lines));
        Some(with_labels(Identity::new(account, groups)))
    }

    /// Binds as `dn` on a new connection (the user-bind path, without its slot).
    async fn bind_new(
        &self,
        dn: &str,
        password: &str,
    ) -> Result<Result<Ldap, BindRefusal>, super::DirectoryError> {
        self.user_bind(dn, password).await
    }

    /// One subtree search on `ldap`: (result code, message, entries without references).
    async fn search_on(
        &self,
        ldap: &Ldap,
        base: &str,
        filter: &str,
        limit: i32,
        attrs: Vec<&str>,
    ) -> Result<(u32, String, Vec<SearchEntry>), String> {
        let mut own = ldap.clone();
        let time = self.server_time_limit();
        let result = self
            .on_own(
                super::Op::UserSearch,
                own.with_search_options(SearchOptions::new().sizelimit(limit).timelimit(time))
                    .search(base, Scope::Subtree, filter, attrs),
            )
            .await
            .map_err(|e| e.to_string())?;
        let ldap3::SearchResult(entries, res) = result;
        Ok((
            res.rc,
            res.text,
            entries
                .into_iter()
                .filter(|e| !e.is_ref() && !e.is_intermediate())
                .map(SearchEntry::construct)
                .collect(),
        ))
    }
}
