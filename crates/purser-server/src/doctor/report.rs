//! Findings and the report: what each check found, in the one line format operators read.

use std::fmt;

/// The verdict of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Problem,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Problem => "problem",
        })
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    /// The check's name: `issuer`, `service`, `realm`, `trust`, `algorithm`, ...
    pub check: String,
    /// What was found.
    pub what: String,
    /// How to fix it; empty when there is nothing to do.
    pub fix: String,
}

impl Finding {
    pub(crate) fn new(
        status: Status,
        check: &str,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            status,
            check: check.to_string(),
            what: what.into(),
            fix: fix.into(),
        }
    }
    pub(crate) fn ok(check: &str, what: impl Into<String>) -> Self {
        Self::new(Status::Ok, check, what, "")
    }
    pub(crate) fn warn(check: &str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Status::Warn, check, what, fix)
    }
    pub(crate) fn problem(check: &str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(Status::Problem, check, what, fix)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.check, self.what)?;
        if !self.fix.is_empty() {
            write!(f, " -> {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every finding, in the order checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when no check found a problem (warnings allowed).
    pub fn healthy(&self) -> bool {
        !self.findings.iter().any(|f| f.status == Status::Problem)
    }
    /// The findings of one check.
    pub fn of(&self, check: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == check).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}
