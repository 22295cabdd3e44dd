//! Revoked refresh tokens: `purser revoke --account NAME [--before TIME]` writes an entry to
//! `token.revocations_file`, and every refresh token of that account issued at or before TIME
//! is refused from then on, whichever backend vouched for it. The file is watched, so the
//! entry reaches every replica that mounts it; a password login is not affected.
//!
//! ```
//! use purser_server::revocations::Revocations;
//!
//! let r = Revocations::parse("- account: alice\n  before: \"2026-11-30T12:00:00Z\"\n", "revocations.yaml").unwrap();
//! let before = 1_796_040_000; // 2026-11-30T12:00:00Z
//! assert!(r.is_revoked("alice", before));
//! assert!(!r.is_revoked("alice", before + 1));
//! assert!(!r.is_revoked("bob", 0));
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use purser_authn::tokens::{format_time, parse_time};
use serde::Deserialize;

use crate::admin::file_update::{self, UpdateError};

/// Largest revocations file read.
const MAX_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    account: String,
    before: String,
}

/// The loaded revocations: per account, the latest `before` (unix seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    before: HashMap<String, i64>,
}

impl Revocations {
    pub fn empty() -> Self {
        Revocations::default()
    }

    /// A YAML list of `{account, before}` (RFC 3339); an empty file holds none.
    pub fn parse(text: &str, source: &str) -> Result<Revocations, String> {
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if blank {
            return Ok(Revocations::empty());
        }
        let raw: Vec<RawEntry> = serde_norway::from_str::<Option<Vec<RawEntry>>>(text)
            .map_err(|e| {
                let line = e
                    .location()
                    .map(|l| format!(":{}", l.line()))
                    .unwrap_or_default();
                let mut message = e.to_string();
                if let Some(i) = message.find(" at line ") {
                    message.truncate(i);
                }
                format!("{source}{line}: {message} (a list of - account: NAME, before: TIME)")
            })?
            .unwrap_or_default();
        let mut out = Revocations::empty();
        for (i, r) in raw.into_iter().enumerate() {
            let when = parse_time(&r.before)
                .map_err(|e| format!("{source}: revocation {}: before: {e}", i + 1))?;
            if r.account.is_empty() {
                return Err(format!("{source}: revocation {}: account is empty", i + 1));
            }
            let slot = out.before.entry(r.account).or_insert(when);
            *slot = (*slot).max(when);
        }
        Ok(out)
    }

    /// Reads the file; a missing file revokes nothing.
    pub fn load(path: &Path) -> Result<Revocations, String> {
        if !path.exists() {
            return Ok(Revocations::empty());
        }
        let text = purser_fs::read_text(path, MAX_BYTES).map_err(|e| e.to_string())?;
        Revocations::parse(&text, &path.display().to_string())
    }

    /// Whether a refresh token of `account` issued at `iat` (unix seconds) is revoked: issued
    /// at or before the revocation's time, to the second.
    pub fn is_revoked(&self, account: &str, iat: i64) -> bool {
        self.before.get(account).is_some_and(|&b| iat <= b)
    }

    pub fn len(&self) -> usize {
        self.before.len()
    }

    pub fn is_empty(&self) -> bool {
        self.before.is_empty()
    }

    fn render(&self) -> String {
        let mut names: Vec<_> = self.before.iter().collect();
        names.sort();
        let mut out = String::from(
            "# Refresh tokens revoked by `purser revoke`: those of each account issued at or before\n\
             # `before` are refused. Entries older than token.refresh_lifetime are dropped when the\n\
             # file is next written.\n",
        );
        for (account, before) in names {
            let account = serde_json::Value::String(account.clone());
            let _ = writeln!(
                out,
                "- account: {account}\n  before: \"{}\"",
                format_time(*before)
            );
        }
        out
    }
}

/// Adds a revocation of `account`'s refresh tokens issued at or before `before` to the file at
/// `path`, dropping entries that no refresh token can outlive any more (older than
/// `refresh_lifetime` at `now`). Returns how many entries the file keeps.
pub fn revoke(
    path: &Path,
    account: &str,
    before: i64,
    now: i64,
    refresh_lifetime: i64,
) -> Result<usize, UpdateError> {
    if account.is_empty() {
        return Err(UpdateError::Refused("--account must not be empty".into()));
    }
    let source = path.display().to_string();
    file_update::update(path, |old| {
        let mut r = match old {
            Some(text) => Revocations::parse(text, &source).map_err(|e| {
                UpdateError::Refused(format!("{e}; correct the file, then revoke again"))
            })?,
            None => Revocations::empty(),
        };
        let slot = r.before.entry(account.to_string()).or_insert(before);
        *slot = (*slot).max(before);
        r.before
            .retain(|_, b| b.saturating_add(refresh_lifetime) > now);
        let n = r.len();
        Ok((r.render(), n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_writes_merges_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.yaml");
        let day = 86_400;
        let now = 1_800_000_000;
        assert_eq!(
            revoke(&path, "old", now - 40 * day, now - 40 * day, 30 * day).unwrap(),
            1
        );
        assert_eq!(
            revoke(&path, "alice", now - 10, now - 10, 30 * day).unwrap(),
            1,
            "old is dropped"
        );
        assert_eq!(revoke(&path, "bob", now, now, 30 * day).unwrap(), 2);
        assert_eq!(revoke(&path, "alice", now - 100, now, 30 * day).unwrap(), 2);
        let r = Revocations::load(&path).unwrap();
        assert!(
            r.is_revoked("alice", now - 10),
            "the later time of two is kept"
        );
        assert!(!r.is_revoked("alice", now - 9));
        assert!(r.is_revoked("bob", now) && !r.is_revoked("old", 0));
        assert!(Revocations::load(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
        assert!(Revocations::parse("- account: a\n  before: soon\n", "r")
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(Revocations::parse("- acount: a\n", "r")
            .unwrap_err()
            .starts_with("r:1"));
    }
}
