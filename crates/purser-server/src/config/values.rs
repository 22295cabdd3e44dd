//! The values and helpers every part of the configuration shares (durations, paths, secret
//! files, redaction), with no dependency on the configuration's sections, so that the
//! sections' own modules (the backends) can use them without an import cycle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problem::Problem;

/// A secret file larger than this is a mistake, not a password.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A duration written `300s`, `5m`, `12h`, `30d` (also `0s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!(
                "invalid duration {s:?}: write a whole number and a unit, e.g. 300s, 5m, 12h, 30d"
            )
        })?;
        let mult = match unit {
            "ms" => return Ok(HumanDuration(Duration::from_millis(n))),
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: the unit must be ms, s, m, h or d"
                ))
            }
        };
        n.checked_mul(mult)
            .map(|v| HumanDuration(Duration::from_secs(v)))
            .ok_or_else(|| format!("duration {s:?} is too large"))
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        if s != 0 && s % 86400 == 0 {
            write!(f, "{}d", s / 86400)
        } else if s != 0 && s % 3600 == 0 {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Environment variables arrive as integers when they look like one; accept seconds then.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(HumanDuration::secs(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A relative, non-empty path becomes a path under `base`.
pub(crate) fn resolve(path: &mut PathBuf, base: &Path) {
    if !path.as_os_str().is_empty() && path.is_relative() {
        *path = base.join(&*path);
    }
}

/// Reads the secret file twin of `key` into `value`: `file` set and `value` too is a problem, as
/// is a file that is unreadable, empty or larger than a secret can be.
pub(crate) fn read_twin(
    value: &mut String,
    file: Option<&Path>,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    let Some(file) = file.filter(|f| !f.as_os_str().is_empty()) else {
        return;
    };
    let file_key = format!("{key}_file");
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if !value.is_empty() {
        let env = format!("PURSER_{}", file_key.replace('.', "__").to_uppercase());
        problems.push(Problem::new(
            file_key,
            format!("set either {leaf} or {leaf}_file, not both (an empty {leaf}_file unsets it, e.g. {env}=\"\")"),
        ));
        return;
    }
    match purser_fs::read_text(file, MAX_SECRET_FILE) {
        Ok(text) => {
            let secret = text.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                problems.push(Problem::new(
                    file_key,
                    format!("{} is empty", file.display()),
                ));
            } else {
                *value = secret.to_string();
            }
        }
        Err(e) => problems.push(Problem::new(
            file_key,
            format!("cannot read {}: {}", file.display(), e.kind()),
        )),
    }
}

/// What stands in for a secret in printed configuration and `Debug` output.
pub const REDACTED: &str = "<redacted>";

/// `REDACTED` for a set secret, `""` for an unset one (so a reader still sees whether it is set).
pub(crate) fn redacted_if_set(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        REDACTED
    }
}
