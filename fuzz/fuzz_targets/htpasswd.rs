//! The htpasswd parser: any text gives a user database or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purser_authn::HtpasswdDb;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((db, _issues)) = HtpasswdDb::parse(text, "fuzz.htpasswd") {
            for user in db.users() {
                assert!(db.contains(user));
            }
        }
    }
});
