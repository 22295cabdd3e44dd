//! `authn.htpasswd`: an Apache htpasswd file and, optionally, an htgroup file, both watched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use purser_authn::htgroup::HtgroupDb;
use purser_authn::htpasswd::{HtpasswdAuthenticator, HtpasswdDb};
use purser_authn::Severity;
use purser_core::{Authenticator, Reloadable};
use serde::{Deserialize, Serialize};

use super::Backend;
use crate::build::ctx::{BuildError, Ctx, Parsed};
use crate::config::problem::Problem;
use crate::config::values::resolve;

/// Keys holding secrets: none (the file holds hashes; its path is not secret).
pub(crate) const SECRET_KEYS: &[&str] = &[];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HtpasswdConfig {
    /// Apache htpasswd file; watched. Default `users.htpasswd`.
    pub file: PathBuf,
    /// Apache htgroup file (`group: user user`); watched. Default empty (no groups).
    pub groups_file: PathBuf,
}

impl Default for HtpasswdConfig {
    fn default() -> Self {
        HtpasswdConfig {
            file: PathBuf::from("users.htpasswd"),
            groups_file: PathBuf::new(),
        }
    }
}

/// Parses the htpasswd file. Every issue is logged; a refused line is also returned, for a dry
/// run to report.
fn parse_users(p: &Path) -> Result<Parsed<HtpasswdDb>, String> {
    let (db, issues) = HtpasswdDb::load(p).map_err(|e| e.to_string())?;
    for issue in &issues {
        tracing::warn!(%issue, "htpasswd");
    }
    let n = db.len();
    Ok(Parsed {
        value: db,
        summary: format!("{n} users"),
        refused: issues
            .iter()
            .filter(|i| i.severity == Severity::LineRefused)
            .map(ToString::to_string)
            .collect(),
    })
}

fn parse_groups(p: &Path) -> Result<Parsed<HtgroupDb>, String> {
    let (db, issues) = HtgroupDb::load(p).map_err(|e| e.to_string())?;
    for issue in &issues {
        tracing::warn!(%issue, "htgroup");
    }
    let n = db.user_count();
    Ok(Parsed::new(db, format!("{n} users in groups")))
}

impl Backend for HtpasswdConfig {
    fn validate(&self, at: &str, p: &mut Vec<Problem>) {
        if self.file.as_os_str().is_empty() {
            p.push(Problem::new(
                format!("{at}.file"),
                "must name the htpasswd file",
            ));
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        resolve(&mut self.file, base);
        resolve(&mut self.groups_file, base);
    }

    fn read_secrets(&mut self, _at: &str, _problems: &mut Vec<Problem>) {}

    fn redact(&mut self) {}

    fn build(
        &self,
        at: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<dyn Authenticator>>, BuildError> {
        let users = ctx.watch(
            "htpasswd",
            &format!("{at}.file"),
            &self.file,
            HtpasswdDb::empty(&self.file.display().to_string()),
            parse_users,
        )?;
        let groups = if self.groups_file.as_os_str().is_empty() {
            Some(Arc::new(Reloadable::new(HtgroupDb::empty())))
        } else {
            ctx.watch(
                "htgroup",
                &format!("{at}.groups_file"),
                &self.groups_file,
                HtgroupDb::empty(),
                parse_groups,
            )?
        };
        let (Some(users), Some(groups)) = (users, groups) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(
            HtpasswdAuthenticator::new(users, groups)
                .with_hash_limiter(Arc::clone(&ctx.hash_limiter)),
        )))
    }
}
