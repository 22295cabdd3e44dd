//! The crate's errors. Messages name the file, line and user; never a password or a hash.

use std::fmt;

/// Errors raised while building an authenticator or hashing a password.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// A static user's `password_hash` is not a bcrypt hash.
    #[error("static user {user:?}: password_hash is not a bcrypt hash ($2y$/$2a$/$2b$, cost 4-31); create one with `purser hash-password`")]
    InvalidStaticHash { user: String },
    /// The same static user is listed twice.
    #[error("static user {user:?} is listed more than once")]
    DuplicateStaticUser { user: String },
    /// A static user with an empty name.
    #[error("a static user has an empty name")]
    EmptyStaticUser,
    /// `hash-password` was asked for something bcrypt cannot do.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// An htpasswd or htgroup file was refused as a whole.
    #[error(transparent)]
    File(#[from] HtpasswdError),
}

/// An htpasswd or htgroup file refused as a whole: the holder keeps the last good version.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("{source_name}: cannot read the file: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}: the file is larger than {limit} bytes; split it or use LDAP")]
    TooLarge { source_name: String, limit: u64 },
    #[error("{source_name}: the file has more than {limit} lines; split it or use LDAP")]
    TooManyLines { source_name: String, limit: usize },
    #[error("{source_name}: the file is not valid UTF-8 (near byte {offset}); save it as UTF-8")]
    NotUtf8 { source_name: String, offset: usize },
    #[error(
        "{source_name}:{line}: the line contains a NUL byte; the file looks truncated or binary"
    )]
    NulByte { source_name: String, line: usize },
    #[error("{source_name}:{line}: the line has no ':' (expected `{expected}`)")]
    MissingColon {
        source_name: String,
        line: usize,
        expected: &'static str,
    },
    #[error("{source_name}:{line}: empty {what} name before ':'")]
    EmptyName {
        source_name: String,
        line: usize,
        what: &'static str,
    },
    #[error("{source_name}:{line}: user {user:?} is already defined on line {first_line}; remove one of the lines")]
    DuplicateUser {
        source_name: String,
        line: usize,
        user: String,
        first_line: usize,
    },
}

/// How serious a [`LoadIssue`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The file loaded fully, but something deserves the operator's attention (weak hashes).
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
