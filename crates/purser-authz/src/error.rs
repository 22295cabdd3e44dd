use std::fmt;

/// Where a problem sits: the file name and, when known, the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub source: String,
    pub line: Option<usize>,
}

impl Loc {
    pub(crate) fn new(source: &str, line: Option<usize>) -> Self {
        Loc {
            source: source.to_string(),
            line,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.source, line),
            None => f.write_str(&self.source),
        }
    }
}

/// One problem in a policy file or a policy test-case file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read, or was refused by the bounded reader (not a regular file,
    /// too large, not UTF-8); `message` says which.
    #[error("{loc}: {message}")]
    Io { loc: Loc, message: String },
    /// The file is not valid YAML.
    #[error("{loc}: YAML syntax error: {message}")]
    Syntax { loc: Loc, message: String },
    /// A key the format does not know, with the closest known key when one is near.
    #[error("{loc}: unknown {context} field {field:?}{}", suggestion_text(.suggestion, .expected))]
    UnknownField {
        loc: Loc,
        /// `top-level`, `rule`, `match` or `case`.
        context: &'static str,
        field: String,
        suggestion: Option<&'static str>,
        expected: &'static [&'static str],
    },
    /// A required key is absent.
    #[error("{loc}: {context} is missing the field {field:?}{hint}")]
    MissingField {
        loc: Loc,
        context: String,
        field: &'static str,
        hint: &'static str,
    },
    /// A field holds a value it cannot hold (wrong type, bad glob or regex, bad CIDR, ...).
    #[error("{loc}: {field}: {message}")]
    InvalidValue {
        loc: Loc,
        field: String,
        message: String,
    },
    /// The file or one of its parts is larger than the limits allow.
    #[error("{loc}: {message}")]
    TooLarge { loc: Loc, message: String },
    /// Reporting stopped after this many problems.
    #[error("{loc}: {count} more problems not shown; fix the ones above first")]
    TooMany { loc: Loc, count: usize },
}

fn suggestion_text(suggestion: &Option<&'static str>, expected: &[&'static str]) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => format!(" (expected one of: {})", expected.join(", ")),
    }
}

impl PolicyError {
    /// The file and line the problem is at.
    pub fn loc(&self) -> &Loc {
        match self {
            PolicyError::Io { loc, .. }
            | PolicyError::Syntax { loc, .. }
            | PolicyError::UnknownField { loc, .. }
            | PolicyError::MissingField { loc, .. }
            | PolicyError::InvalidValue { loc, .. }
            | PolicyError::TooLarge { loc, .. }
            | PolicyError::TooMany { loc, .. } => loc,
        }
    }

    /// The 1-based line, when known.
    pub fn line(&self) -> Option<usize> {
        self.loc().line
    }
}

/// Every problem found in one file; `Display` writes one line per problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_vec(self) -> Vec<PolicyError> {
        self.0
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        PolicyErrors(vec![e])
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
