//! The htgroup parser: any text gives a group database or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purser_authn::HtgroupDb;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((db, _issues)) = HtgroupDb::parse(text, "fuzz.htgroup") {
            let _ = db.groups_of("alice");
            let _ = db.user_count();
        }
    }
});
