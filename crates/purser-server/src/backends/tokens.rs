//! `authn.tokens`: machine tokens, a watched YAML file of SHA-256 digests that
//! `purser token create|list|revoke` manage (crate::machine_tokens).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use purser_authn::tokens::{TokensAuthenticator, TokensDb};
use purser_core::Authenticator;
use serde::{Deserialize, Serialize};

use super::Backend;
use crate::build::ctx::{BuildError, Ctx, Mode, Parsed};
use crate::config::problem::Problem;
use crate::config::values::resolve;

/// Keys holding secrets: none (the file holds digests of the secrets; its path is not secret).
pub(crate) const SECRET_KEYS: &[&str] = &[];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// The tokens file (`purser token create` writes it); watched. Default `tokens.yaml`.
    pub file: PathBuf,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            file: PathBuf::from("tokens.yaml"),
        }
    }
}

/// Reads the tokens file, checking every scope cap against the policy's pattern language.
pub fn load_tokens(p: &Path) -> Result<TokensDb, String> {
    TokensDb::load(p, &purser_authz::check_cap).map_err(|e| e.to_string())
}

fn parse(p: &Path) -> Result<Parsed<TokensDb>, String> {
    let db = load_tokens(p)?;
    let n = db.len();
    Ok(Parsed::new(db, format!("{n} machine tokens")))
}

impl Backend for TokensConfig {
    fn validate(&self, at: &str, p: &mut Vec<Problem>) {
        if self.file.as_os_str().is_empty() {
            p.push(Problem::new(
                format!("{at}.file"),
                "must name the tokens file",
            ));
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        resolve(&mut self.file, base);
    }

    fn read_secrets(&mut self, _at: &str, _problems: &mut Vec<Problem>) {}

    fn redact(&mut self) {}

    fn build(
        &self,
        at: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<dyn Authenticator>>, BuildError> {
        let Some(db) = ctx.watch(
            "tokens",
            &format!("{at}.file"),
            &self.file,
            TokensDb::empty(),
            parse,
        )?
        else {
            return Ok(None);
        };
        if ctx.mode == Mode::Serve {
            let held = db.clone();
            ctx.metrics.export_machine_tokens(Box::new(move || {
                held.load()
                    .entries()
                    .iter()
                    .map(|e| (e.name.clone(), e.expires))
                    .collect()
            }));
        }
        Ok(Some(Arc::new(TokensAuthenticator::new(db))))
    }
}
