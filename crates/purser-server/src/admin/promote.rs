//! `purser policy promote`: the shadow policy becomes the policy. The shadow file is read and
//! checked as the server would load it, then written over the policy file in one rename (under
//! the policy file's lock), so the server's watcher sees the old policy or the new one, never
//! half of either. The policy it replaces is kept beside it as `POLICY.previous`.

use std::path::{Path, PathBuf};

use purser_authz::{Policy, MAX_POLICY_BYTES};

use super::file_update::{self, UpdateError};
use crate::config::Config;

/// What a promotion did.
#[derive(Debug)]
pub struct Promoted {
    pub shadow: PathBuf,
    pub policy: PathBuf,
    pub rules: usize,
    /// Where the replaced policy was kept, when there was one.
    pub previous: Option<PathBuf>,
}

/// Why nothing was promoted.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("authz.shadow_policy_file is not set: there is no shadow policy to promote")]
    NoShadow,
    #[error("the shadow policy does not load, nothing was changed: {0}")]
    Invalid(String),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// `POLICY.previous`, beside the policy.
pub fn previous_path(policy: &Path) -> PathBuf {
    let mut name = policy
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".previous");
    policy.with_file_name(name)
}

/// Checks `authz.shadow_policy_file` and writes it over `authz.policy_file`.
pub fn promote(config: &Config) -> Result<Promoted, PromoteError> {
    let shadow = &config.authz.shadow_policy_file;
    if shadow.as_os_str().is_empty() {
        return Err(PromoteError::NoShadow);
    }
    let policy_path = &config.authz.policy_file;
    let text = purser_fs::read_text(shadow, MAX_POLICY_BYTES as u64)
        .map_err(|e| PromoteError::Invalid(format!("{}: {}", shadow.display(), e.kind())))?;
    // The same parse the server's loader runs: what is promoted is what it will load.
    let policy = Policy::parse(&text, &shadow.display().to_string())
        .map_err(|e| PromoteError::Invalid(e.to_string().replace('\n', "; ")))?;
    let previous = file_update::update(policy_path, |old| {
        let kept = match old {
            Some(old) => {
                let p = previous_path(policy_path);
                std::fs::write(&p, old).map_err(|e| UpdateError::Io {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                Some(p)
            }
            None => None,
        };
        Ok((text.clone(), kept))
    })?;
    Ok(Promoted {
        shadow: shadow.clone(),
        policy: policy_path.clone(),
        rules: policy.rule_count(),
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.authz.policy_file = dir.join("policy.yaml");
        c.authz.shadow_policy_file = dir.join("shadow.yaml");
        c
    }

    #[test]
    fn a_valid_shadow_replaces_the_policy_and_the_old_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        std::fs::write(&c.authz.policy_file, "rules: []\n").unwrap();
        let shadow = "rules:\n  - { name: all, actions: [pull] }\n";
        std::fs::write(&c.authz.shadow_policy_file, shadow).unwrap();
        let done = promote(&c).unwrap();
        assert_eq!(done.rules, 1);
        assert_eq!(
            std::fs::read_to_string(&c.authz.policy_file).unwrap(),
            shadow
        );
        assert_eq!(
            std::fs::read_to_string(done.previous.unwrap()).unwrap(),
            "rules: []\n"
        );
    }

    #[test]
    fn a_broken_or_missing_shadow_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        std::fs::write(&c.authz.policy_file, "rules: []\n").unwrap();
        std::fs::write(
            &c.authz.shadow_policy_file,
            "rules:\n  - { match: { acount: x }, actions: [] }\n",
        )
        .unwrap();
        let e = promote(&c).unwrap_err();
        assert!(e.to_string().contains("acount"), "{e}");
        std::fs::remove_file(&c.authz.shadow_policy_file).unwrap();
        assert!(matches!(promote(&c), Err(PromoteError::Invalid(_))));
        c.authz.shadow_policy_file = PathBuf::new();
        assert!(matches!(promote(&c), Err(PromoteError::NoShadow)));
        assert_eq!(
            std::fs::read_to_string(&c.authz.policy_file).unwrap(),
            "rules: []\n"
        );
        assert!(!previous_path(&c.authz.policy_file).exists());
    }
}
