//! `authn.static`: users written in the configuration, with bcrypt hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use purser_authn::static_users::{StaticAuthenticator, StaticUserEntry};
use purser_core::Authenticator;
use serde::{Deserialize, Serialize};

use super::Backend;
use crate::build::ctx::{BuildError, Ctx};
use crate::config::problem::Problem;
use crate::config::values::{read_twin, redacted_if_set, resolve};

/// Keys holding secrets.
pub(crate) const SECRET_KEYS: &[&str] = &["password_hash"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticConfig {
    /// User name -> bcrypt hash and groups. Default `{}`.
    pub users: BTreeMap<String, StaticUser>,
}

#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticUser {
    /// bcrypt hash (`purser hash-password`). Secret: redacted in output.
    pub password_hash: String,
    /// Or a file holding the hash (read at load, a trailing newline dropped); setting both is an
    /// error. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash_file: Option<PathBuf>,
    /// Groups for the policy's `groups` match. Default `[]`.
    pub groups: Vec<String>,
}

// Written by hand so that the hash never reaches a log line through `{:?}`.
impl std::fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticUser")
            .field("password_hash", &redacted_if_set(&self.password_hash))
            .field("password_hash_file", &self.password_hash_file)
            .field("groups", &self.groups)
            .finish()
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

impl Backend for StaticConfig {
    fn validate(&self, at: &str, p: &mut Vec<Problem>) {
        for (name, user) in &self.users {
            let path = format!("{at}.users.{name}");
            if name.is_empty() || name.contains(':') {
                p.push(Problem::new(
                    path.clone(),
                    "a user name must be non-empty and hold no ':'",
                ));
            }
            let from_file = user
                .password_hash_file
                .as_ref()
                .is_some_and(|f| !f.as_os_str().is_empty());
            if user.password_hash.is_empty() && !from_file {
                p.push(Problem::new(
                    format!("{path}.password_hash"),
                    "must be set (or password_hash_file); make one with `purser hash-password`",
                ));
            } else if !user.password_hash.is_empty() && !is_bcrypt(&user.password_hash) {
                // Never echo the value: it is a secret even when malformed.
                p.push(Problem::new(
                    format!("{path}.password_hash"),
                    "is not a bcrypt hash ($2a$, $2b$ or $2y$); make one with `purser hash-password`",
                ));
            }
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        for user in self.users.values_mut() {
            if let Some(f) = user.password_hash_file.as_mut() {
                resolve(f, base);
            }
        }
    }

    fn read_secrets(&mut self, at: &str, problems: &mut Vec<Problem>) {
        for (name, user) in self.users.iter_mut() {
            let key = format!("{at}.users.{name}.password_hash");
            read_twin(
                &mut user.password_hash,
                user.password_hash_file.as_deref(),
                &key,
                problems,
            );
        }
    }

    fn redact(&mut self) {
        for user in self.users.values_mut() {
            user.password_hash = redacted_if_set(&user.password_hash).to_string();
        }
    }

    fn build(
        &self,
        at: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<dyn Authenticator>>, BuildError> {
        let users = self
            .users
            .iter()
            .map(|(name, u)| StaticUserEntry {
                name: name.clone(),
                password_hash: u.password_hash.clone(),
                groups: u.groups.clone(),
            })
            .collect();
        let built = StaticAuthenticator::new(users)
            .map(|a| a.with_hash_limiter(Arc::clone(&ctx.hash_limiter)))
            .map_err(|e| BuildError::backend(at, e));
        Ok(ctx
            .check(built)?
            .map(|a| Arc::new(a) as Arc<dyn Authenticator>))
    }
}
