//! The htpasswd and htgroup parsers answer every input with a value or an error, never a panic.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test code: a panic is the failure report, and tests may read the real clock"
)]

use proptest::prelude::*;
use purser_authn::{HtgroupDb, HtpasswdDb};

/// Text that looks like the files: user names, colons, hash prefixes, comments, odd bytes.
fn file_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("alice".to_owned()),
        Just("zoë".to_owned()),
        Just(":".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("#".to_owned()),
        Just(" ".to_owned()),
        Just("$2y$".to_owned()),
        Just("$2b$10$".to_owned()),
        Just("$apr1$".to_owned()),
        Just("$".to_owned()),
        Just("{SHA}".to_owned()),
        Just("\0".to_owned()),
        "[./A-Za-z0-9]{1,60}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn htpasswd_parse_never_panics(text in file_like()) {
        let _ = HtpasswdDb::parse(&text, "f");
    }

    #[test]
    fn htpasswd_parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = HtpasswdDb::parse(&text, "f");
    }

    #[test]
    fn htgroup_parse_never_panics(text in file_like()) {
        let _ = HtgroupDb::parse(&text, "f");
    }

    #[test]
    fn htgroup_parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = HtgroupDb::parse(&text, "f");
    }

    #[test]
    fn loaded_users_all_have_a_colon_line(text in file_like()) {
        if let Ok((db, issues)) = HtpasswdDb::parse(&text, "f") {
            for user in db.users() {
                let needle = format!("{}:", user);
                prop_assert!(text.contains(&needle));
            }
            for issue in issues {
                prop_assert!(issue.to_string().starts_with("f"));
            }
        }
    }
}
