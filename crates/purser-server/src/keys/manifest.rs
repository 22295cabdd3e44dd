//! The manifest of a key folder (`manifest.json`): each key's name, algorithm, state and times.
//! The key `NAME` lives in `NAME.pem` (mode 0600) and its certificate in `NAME.crt`.

use serde::{Deserialize, Serialize};

/// The manifest's file name inside `token.keys_dir`.
pub const MANIFEST: &str = "manifest.json";
/// A manifest larger than this is not one (a few hundred bytes per key).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// More keys than this in one folder is a mistake (rotation keeps two or three).
pub const MAX_KEYS: usize = 64;

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published (JWKS, bundle) so registries can trust it; not signing yet.
    Next,
    /// Signs every new token. Exactly one key is active.
    Active,
    /// Signed tokens that may still be valid; published until retired.
    Retiring,
}

impl KeyState {
    pub const ALL: [KeyState; 3] = [KeyState::Next, KeyState::Active, KeyState::Retiring];

    pub fn label(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One key of the manifest. Times are RFC 3339 (UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `key-N`: the files are `NAME.pem` and `NAME.crt`.
    pub name: String,
    /// `RS256`, `ES256`, `ES384` or `EdDSA`; checked against the key file.
    pub alg: String,
    pub state: KeyState,
    pub created: String,
    /// When it became active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated: Option<String>,
    /// When it stopped being active (state `retiring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub keys: Vec<Entry>,
}

/// Whether `name` may name a key: `key-` and digits, so it is a safe file name.
pub fn valid_name(name: &str) -> bool {
    name.strip_prefix("key-")
        .is_some_and(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Manifest {
    /// Parses and checks the manifest's own rules: known fields, valid names, no name twice,
    /// times that parse, exactly one active key, at most [`MAX_KEYS`].
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| format!("{MANIFEST} does not parse: {e}"))?;
        m.check()?;
        Ok(m)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.keys.len() > MAX_KEYS {
            return Err(format!("{MANIFEST} lists more than {MAX_KEYS} keys"));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.keys {
            if !valid_name(&e.name) {
                return Err(format!(
                    "{MANIFEST}: {:?} is not a key name (key-1, key-2, ...)",
                    e.name
                ));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(format!("{MANIFEST}: {} is listed twice", e.name));
            }
            for t in [
                Some(&e.created),
                e.activated.as_ref(),
                e.deactivated.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                purser_authn::tokens::parse_time(t)
                    .map_err(|err| format!("{MANIFEST}: {}: {err}", e.name))?;
            }
            let needs = match e.state {
                KeyState::Next => true,
                KeyState::Active => e.activated.is_some(),
                KeyState::Retiring => e.deactivated.is_some(),
            };
            if !needs {
                return Err(format!(
                    "{MANIFEST}: {} is {} without its {} time",
                    e.name,
                    e.state,
                    if e.state == KeyState::Active {
                        "activated"
                    } else {
                        "deactivated"
                    }
                ));
            }
        }
        let active = self
            .keys
            .iter()
            .filter(|e| e.state == KeyState::Active)
            .count();
        if active != 1 {
            return Err(format!(
                "{MANIFEST} must have exactly one active key (it has {active})"
            ));
        }
        Ok(())
    }

    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The name for a new key: one above the highest in use.
    pub fn fresh_name(&self) -> String {
        let n = self
            .keys
            .iter()
            .filter_map(|e| e.name.strip_prefix("key-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("key-{}", n + 1)
    }

    pub fn active(&self) -> Option<&Entry> {
        self.keys.iter().find(|e| e.state == KeyState::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, state: KeyState) -> Entry {
        Entry {
            name: name.into(),
            alg: "ES256".into(),
            state,
            created: "2026-01-01T00:00:00Z".into(),
            activated: (state == KeyState::Active).then(|| "2026-01-01T00:00:00Z".into()),
            deactivated: (state == KeyState::Retiring).then(|| "2026-02-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn exactly_one_active_key_and_valid_names() {
        let ok = Manifest {
            keys: vec![
                entry("key-1", KeyState::Retiring),
                entry("key-2", KeyState::Active),
                entry("key-3", KeyState::Next),
            ],
        };
        assert_eq!(Manifest::parse(&ok.to_text()).unwrap(), ok);
        assert_eq!(ok.fresh_name(), "key-4");
        let none = Manifest {
            keys: vec![entry("key-1", KeyState::Next)],
        };
        assert!(none.check().unwrap_err().contains("exactly one active"));
        let two = Manifest {
            keys: vec![
                entry("key-1", KeyState::Active),
                entry("key-2", KeyState::Active),
            ],
        };
        assert!(two.check().unwrap_err().contains("(it has 2)"));
        for bad in ["../x", "key-", "key-1a", "KEY-1", "key-1234567890"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let twice = Manifest {
            keys: vec![
                entry("key-1", KeyState::Active),
                entry("key-1", KeyState::Next),
            ],
        };
        assert!(twice.check().unwrap_err().contains("twice"));
        // Half a file is not a manifest.
        let text = ok.to_text();
        assert!(Manifest::parse(&text[..text.len() / 2]).is_err());
        assert!(Manifest::parse("{\"keys\":[],\"extra\":1}").is_err());
    }
}
