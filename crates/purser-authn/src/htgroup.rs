//! Apache htgroup files: `group: user1 user2`, one group per line (several lines for the same
//! group add up), `#` comments and blank lines ignored.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::error::HtpasswdError;
use crate::htpasswd::{content_lines, read_bounded};

/// The groups of each user, from one htgroup file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HtgroupDb {
    source: String,
    by_user: HashMap<String, Vec<String>>,
}

impl fmt::Debug for HtgroupDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtgroupDb")
            .field("source", &self.source)
            .field("users", &self.by_user.len())
            .finish()
    }
}

impl HtgroupDb {
    /// No groups for anyone (no `groups_file` configured).
    pub fn empty() -> Self {
        HtgroupDb::default()
    }

    /// Reads and parses a file; see [`HtgroupDb::parse`].
    pub fn load(path: impl AsRef<Path>) -> Result<HtgroupDb, HtpasswdError> {
        let path = path.as_ref();
        let text = read_bounded(path)?;
        HtgroupDb::parse(&text, &path.display().to_string())
    }

    /// Parses htgroup text; `source` names the file in messages. A line without `:` or with an
    /// empty group name refuses the whole file.
    pub fn parse(text: &str, source: &str) -> Result<HtgroupDb, HtpasswdError> {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        for (number, line) in content_lines(text, source)? {
            let Some((group, members)) = line.split_once(':') else {
                return Err(HtpasswdError::MissingColon {
                    source_name: source.to_owned(),
                    line: number,
                    expected: "group: user1 user2",
                });
            };
            let group = group.trim();
            if group.is_empty() {
                return Err(HtpasswdError::EmptyName {
                    source_name: source.to_owned(),
                    line: number,
                    what: "group",
                });
            }
            for user in members.split_whitespace() {
                by_user
                    .entry(user.to_owned())
                    .or_default()
                    .push(group.to_owned());
            }
        }
        for groups in by_user.values_mut() {
            groups.sort();
            groups.dedup();
        }
        Ok(HtgroupDb {
            source: source.to_owned(),
            by_user,
        })
    }

    /// The user's groups, sorted; empty when the user is in none.
    pub fn groups_of(&self, user: &str) -> &[String] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// The file name given at parse time (empty for [`HtgroupDb::empty`]).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many users are in at least one group.
    pub fn user_count(&self) -> usize {
        self.by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_lines_and_sorts() {
        let text =
            "# teams\nadmins: alice\ndevelopers: bob  alice\n\nadmins: carol alice\r\nempty:\n";
        let db = HtgroupDb::parse(text, "groups").unwrap();
        assert_eq!(db.groups_of("alice"), ["admins", "developers"]);
        assert_eq!(db.groups_of("bob"), ["developers"]);
        assert_eq!(db.groups_of("carol"), ["admins"]);
        assert!(db.groups_of("dave").is_empty());
        assert_eq!(db.user_count(), 3);
    }

    #[test]
    fn refuses_lines_without_colon() {
        let err = HtgroupDb::parse("admins: a\nbroken line\n", "groups").unwrap_err();
        assert!(
            err.to_string().starts_with("groups:2: the line has no ':'"),
            "{err}"
        );
        let err = HtgroupDb::parse("  : a\n", "groups").unwrap_err();
        assert!(
            err.to_string().starts_with("groups:1: empty group name"),
            "{err}"
        );
    }
}
