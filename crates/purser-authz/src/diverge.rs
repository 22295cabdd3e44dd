//! How two decisions on the same request differ: what the shadow policy and `purser policy
//! replay` count and report. Decisions are compared by what they grant (as sets of actions),
//! not by the rule that decided: moving a rule shifts the index of every rule below it without
//! changing what they decide.
//!
//! ```
//! use purser_authz::Divergence;
//!
//! let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
//! assert_eq!(Divergence::of(&s(&["pull"]), &s(&["pull"])), Divergence::Same);
//! assert_eq!(Divergence::of(&s(&["pull"]), &s(&["pull", "push"])), Divergence::More);
//! assert_eq!(Divergence::of(&s(&["pull", "push"]), &s(&[])), Divergence::Less);
//! assert_eq!(Divergence::of(&s(&["pull"]), &s(&["push"])), Divergence::Different);
//! ```

/// The second decision against the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Divergence {
    /// The same actions granted.
    Same,
    /// Every action of the first and at least one more.
    More,
    /// A strict subset of the first's actions.
    Less,
    /// Some actions gained and some lost.
    Different,
}

impl Divergence {
    /// Every outcome, in the order of [`Divergence::label`]'s values.
    pub const ALL: [Divergence; 4] = [
        Divergence::Same,
        Divergence::More,
        Divergence::Less,
        Divergence::Different,
    ];

    /// `first` and `second` are granted actions of the same request (at most a few each).
    pub fn of(first: &[String], second: &[String]) -> Divergence {
        let gained = second.iter().any(|a| !first.contains(a));
        let lost = first.iter().any(|a| !second.contains(a));
        match (gained, lost) {
            (false, false) => Divergence::Same,
            (true, false) => Divergence::More,
            (false, true) => Divergence::Less,
            (true, true) => Divergence::Different,
        }
    }

    /// `same`, `more`, `less` or `different` (the metrics label).
    pub fn label(self) -> &'static str {
        match self {
            Divergence::Same => "same",
            Divergence::More => "more",
            Divergence::Less => "less",
            Divergence::Different => "different",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        assert_eq!(
            Divergence::of(&v(&["push", "pull"]), &v(&["pull", "push"])),
            Divergence::Same
        );
        assert_eq!(Divergence::of(&v(&[]), &v(&[])), Divergence::Same);
        assert_eq!(Divergence::of(&v(&[]), &v(&["*"])), Divergence::More);
        assert_eq!(Divergence::of(&v(&["*"]), &v(&[])), Divergence::Less);
        assert_eq!(
            Divergence::of(&v(&["*"]), &v(&["pull", "push"])),
            Divergence::Different
        );
    }
}
