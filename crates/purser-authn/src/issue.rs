//! What a file that loaded anyway deserves to have logged: skipped lines, weak hashes,
//! suspicious group members.

use std::fmt;

/// How serious a [`LoadIssue`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The file loaded fully, but something deserves the operator's attention (weak hashes,
    /// an htgroup member that looks like a comment).
    Warning,
    /// One line was skipped; the rest of the file loaded.
    LineRefused,
}

/// Something about a file that loaded anyway: a skipped line or a weak hash format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadIssue {
    pub severity: Severity,
    /// The file name given to the parser.
    pub source_name: String,
    /// 1-based line, when the issue is about one line.
    pub line: Option<usize>,
    /// The user (or users) concerned.
    pub users: Vec<String>,
    /// What is wrong and what to do. Never holds a hash or a password.
    pub message: String,
}

impl fmt::Display for LoadIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source_name)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match self.users.as_slice() {
            [] => {}
            [one] => write!(f, "user {one:?}: ")?,
            many => {
                const SHOWN: usize = 10;
                f.write_str("users ")?;
                for (i, u) in many.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{u:?}")?;
                }
                if many.len() > SHOWN {
                    write!(f, " and {} more", many.len() - SHOWN)?;
                }
                f.write_str(": ")?;
            }
        }
        f.write_str(&self.message)
    }
}
