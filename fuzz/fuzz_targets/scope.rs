//! The scope parser: any text gives a scope or an error, never a panic; a parsed scope prints
//! back to text that parses to the same scope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purser_core::ResourceScope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scope) = text.parse::<ResourceScope>() {
        let again: ResourceScope = scope
            .to_string()
            .parse()
            .expect("a printed scope parses again");
        assert_eq!(again, scope);
        assert!(scope.name.len() <= purser_core::MAX_NAME_LEN);
    }
    if let Ok(all) = ResourceScope::parse_all(text.lines()) {
        // Merged: one entry per resource.
        for (i, a) in all.iter().enumerate() {
            assert!(!all[i + 1..]
                .iter()
                .any(|b| b.rtype == a.rtype && b.name == a.name));
        }
    }
});
