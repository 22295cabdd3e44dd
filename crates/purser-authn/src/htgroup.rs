//! Apache htgroup files: `group: user1 user2`, one group per line (several lines for the same
//! group add up), `#` comments and blank lines ignored.
//!
//! As in Apache, a `#` is a comment only at the start of a line: in
//! `developers: carol  # the team`, `#`, `the` and `team` are members of `developers`. They are
//! kept, as Apache keeps them, and reported as a [`LoadIssue`] warning naming the line.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::apache_file::{self, content_lines, FileError};
use crate::issue::{LoadIssue, Severity};

/// An htgroup file refused as a whole: the holder keeps the last good version.
#[derive(Debug, thiserror::Error)]
pub enum HtgroupError {
    /// Not read, or broken in a way every Apache file can be (see [`FileError`]).
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{source_name}:{line}: the line has no ':' (expected `group: user1 user2`)")]
    MissingColon { source_name: String, line: usize },
    #[error("{source_name}:{line}: empty group name before ':'")]
    EmptyName { source_name: String, line: usize },
}

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
    pub fn load(path: impl AsRef<Path>) -> Result<(HtgroupDb, Vec<LoadIssue>), HtgroupError> {
        let path = path.as_ref();
        let text = apache_file::read(path)?;
        HtgroupDb::parse(&text, &path.display().to_string())
    }

    /// Parses htgroup text; `source` names the file in messages. A line without `:` or with an
    /// empty group name refuses the whole file. Returns the groups and the issues to log (a
    /// member line that holds a `#`).
    pub fn parse(text: &str, source: &str) -> Result<(HtgroupDb, Vec<LoadIssue>), HtgroupError> {
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        let mut issues = Vec::new();
        for (number, line) in content_lines(text, source)? {
            let Some((group, members)) = line.split_once(':') else {
                return Err(HtgroupError::MissingColon {
                    source_name: source.to_owned(),
                    line: number,
                });
            };
            let group = group.trim();
            if group.is_empty() {
                return Err(HtgroupError::EmptyName {
                    source_name: source.to_owned(),
                    line: number,
                });
            }
            if let Some(issue) = inline_comment(members, group, source, number) {
                issues.push(issue);
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
        Ok((
            HtgroupDb {
                source: source.to_owned(),
                by_user,
            },
            issues,
        ))
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

/// A warning when a member holds a `#`: whoever wrote the line most likely meant a comment, and
/// made its words members of the group (`developers: carol  # several lines` gives a user named
/// `several` the group's rights). The members from the first `#` on are named.
fn inline_comment(members: &str, group: &str, source: &str, line: usize) -> Option<LoadIssue> {
    let mut words = members.split_whitespace().peekable();
    while words.next_if(|w| !w.contains('#')).is_some() {}
    let suspicious: Vec<String> = words.map(str::to_owned).collect();
    if suspicious.is_empty() {
        return None;
    }
    Some(LoadIssue {
        severity: Severity::Warning,
        source_name: source.to_owned(),
        line: Some(line),
        users: suspicious,
        message: format!(
            "made members of group {group:?}: htgroup files have no comments after members (as in Apache), so the words from '#' on are user names; put the comment on a line of its own"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_lines_and_sorts() {
        let text =
            "# teams\nadmins: alice\ndevelopers: bob  alice\n\nadmins: carol alice\r\nempty:\n";
        let (db, issues) = HtgroupDb::parse(text, "groups").unwrap();
        assert!(issues.is_empty(), "{issues:?}");
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

    /// Apache keeps `#` and the words after it as members; so do we, with a warning naming the
    /// file, the line and the members concerned.
    #[test]
    fn a_hash_among_members_is_kept_and_warned_about() {
        let text = "admins: alice # the admins\ndevelopers: carol   # several lines\nops: dave#1 erin\nqa: frank\n";
        let (db, issues) = HtgroupDb::parse(text, "users.htgroup").unwrap();
        assert_eq!(db.groups_of("several"), ["developers"]);
        assert_eq!(db.groups_of("#"), ["admins", "developers"]);
        assert_eq!(db.groups_of("dave#1"), ["ops"]);
        assert_eq!(db.groups_of("carol"), ["developers"]);
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert!(issues.iter().all(|i| i.severity == Severity::Warning));
        assert_eq!(
            issues.iter().map(|i| i.line).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(issues[1].users, ["#", "several", "lines"]);
        assert_eq!(issues[2].users, ["dave#1", "erin"]);
        let shown = issues[1].to_string();
        assert!(
            shown.starts_with(
                "users.htgroup:2: users \"#\", \"several\", \"lines\": made members of group \"developers\""
            ),
            "{shown}"
        );
    }
}
