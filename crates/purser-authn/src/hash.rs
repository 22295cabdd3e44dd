//! Stored password hashes: recognising the formats Apache's `htpasswd` writes, checking a
//! password against them, and writing bcrypt hashes. Everything here is blocking CPU work:
//! callers run it through [`crate::hash_work::run_limited`].

use std::fmt;

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::crypt64::is_crypt_char;
use crate::hash_work::HashWork;
use crate::{apr1, des_crypt};

/// The salt and digest of a real cost-4 bcrypt hash of a random password: the dummy hash used
/// for unknown users, with the cost digits put in front (see [`dummy_bcrypt`]).
const DUMMY_BCRYPT_TAIL: &str = "dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a";

/// The bcrypt costs the `bcrypt` crate accepts.
pub const BCRYPT_MIN_COST: u32 = 4;
pub const BCRYPT_MAX_COST: u32 = 31;
/// bcrypt cost of the dummy check for unknown users when a backend has no bcrypt hash.
pub const DEFAULT_DUMMY_COST: u32 = 10;
/// The longest password bcrypt uses; longer ones would be cut silently.
const BCRYPT_MAX_PASSWORD_BYTES: usize = 72;

/// A bcrypt hash of the given cost that no password matches in practice. Verifying against it
/// costs exactly what verifying a real user's hash of that cost costs.
pub(crate) fn dummy_bcrypt(cost: u32) -> String {
    let cost = cost.clamp(BCRYPT_MIN_COST, BCRYPT_MAX_COST);
    format!("$2b${cost:02}${DUMMY_BCRYPT_TAIL}")
}

/// The cost unknown users are checked at: the most common of `costs` (the highest on a tie),
/// so that unknown users are as slow as most users; [`DEFAULT_DUMMY_COST`] when there is none.
pub(crate) fn dummy_cost(costs: impl IntoIterator<Item = u32>) -> u32 {
    let mut counts: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for cost in costs {
        *counts.entry(cost).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(cost, count)| (count, cost))
        .map_or(DEFAULT_DUMMY_COST, |(cost, _)| cost)
}

/// The cost of a well-formed bcrypt hash (`$2y$`, `$2a$`, `$2b$`), `None` for anything else.
pub(crate) fn bcrypt_cost(hash: &str) -> Option<u32> {
    let b = hash.as_bytes();
    if b.len() != 60 || &b[..2] != b"$2" || !matches!(b[2], b'a' | b'b' | b'y') || b[3] != b'$' {
        return None;
    }
    if b[6] != b'$' || !b[4].is_ascii_digit() || !b[5].is_ascii_digit() {
        return None;
    }
    let cost = u32::from(b[4] - b'0') * 10 + u32::from(b[5] - b'0');
    if !(BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&cost) {
        return None;
    }
    if !b[7..].iter().all(|&c| is_crypt_char(c)) {
        return None;
    }
    Some(cost)
}

/// A parsed stored hash. `Debug` never shows the hash.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoredHash {
    /// `$2y$`/`$2a$`/`$2b$`, checked by the `bcrypt` crate.
    Bcrypt { hash: String, cost: u32 },
    /// `$apr1$salt$digest`, Apache's MD5 crypt.
    Apr1 { salt: String, encoded: [u8; 22] },
    /// `{SHA}` + base64 of the unsalted SHA-1.
    Sha1([u8; 20]),
    /// Traditional DES crypt: 2 salt characters and 11 digest characters.
    DesCrypt { full: [u8; 13] },
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredHash({} <redacted>)", self.format_name())
    }
}

/// A short fingerprint of a stored credential, for refresh tokens: it changes whenever the
/// stored hash changes (a new password, or the same one hashed again with a new salt), so a
/// refresh token issued under the old hash is refused. It is a SHA-256 of the stored hash, cut
/// to 96 bits: it tells nothing about the password that the stored hash does not already, and
/// the stored hash itself never leaves the server.
pub fn credential_stamp(stored: &[u8]) -> String {
    use sha2::Sha256;
    let mut h = Sha256::new();
    h.update(b"purser credential stamp\0");
    h.update(stored);
    data_encoding::BASE64URL_NOPAD.encode(&h.finalize()[..12])
}

/// Why a stored hash was not understood. The message never repeats the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnknownHash {
    #[error("malformed bcrypt hash (expected $2y$, $2a$ or $2b$, a cost of 04 to 31 and 60 characters); rehash with `htpasswd -B`")]
    MalformedBcrypt,
    #[error(
        "malformed $apr1$ hash (expected $apr1$SALT$ and 22 characters); rehash with `htpasswd -B`"
    )]
    MalformedApr1,
    #[error("malformed {{SHA}} hash (expected base64 of 20 bytes)")]
    MalformedSha1,
    #[error("SHA-256/SHA-512 crypt ($5$/$6$) is not supported; rehash with `htpasswd -B`")]
    ShaCrypt,
    #[error("unknown hash format; rehash with `htpasswd -B`")]
    UnknownScheme,
    #[error("plaintext password or unknown hash format; plaintext is refused, rehash with `htpasswd -B`")]
    Plaintext,
}

impl StoredHash {
    /// See [`credential_stamp`].
    pub(crate) fn stamp(&self) -> String {
        match self {
            StoredHash::Bcrypt { hash, .. } => credential_stamp(hash.as_bytes()),
            StoredHash::Apr1 { salt, encoded } => credential_stamp(
                format!("$apr1${salt}${}", String::from_utf8_lossy(encoded)).as_bytes(),
            ),
            StoredHash::Sha1(d) => credential_stamp(&[b"{SHA}".as_slice(), d].concat()),
            StoredHash::DesCrypt { full } => credential_stamp(full),
        }
    }

    pub(crate) fn parse(s: &str) -> Result<StoredHash, UnknownHash> {
        if s.starts_with("$2") {
            return match bcrypt_cost(s) {
                Some(cost) => Ok(StoredHash::Bcrypt {
                    hash: s.to_owned(),
                    cost,
                }),
                None => Err(UnknownHash::MalformedBcrypt),
            };
        }
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let Some((salt, digest)) = rest.split_once('$') else {
                return Err(UnknownHash::MalformedApr1);
            };
            if salt.is_empty() || salt.len() > 8 || digest.len() != 22 {
                return Err(UnknownHash::MalformedApr1);
            }
            if !digest.bytes().all(is_crypt_char) {
                return Err(UnknownHash::MalformedApr1);
            }
            let mut encoded = [0u8; 22];
            encoded.copy_from_slice(digest.as_bytes());
            return Ok(StoredHash::Apr1 {
                salt: salt.to_owned(),
                encoded,
            });
        }
        if let Some(b64) = s.strip_prefix("{SHA}") {
            let bytes = data_encoding::BASE64
                .decode(b64.as_bytes())
                .map_err(|_| UnknownHash::MalformedSha1)?;
            let digest: [u8; 20] = bytes.try_into().map_err(|_| UnknownHash::MalformedSha1)?;
            return Ok(StoredHash::Sha1(digest));
        }
        if s.starts_with("$5$") || s.starts_with("$6$") {
            return Err(UnknownHash::ShaCrypt);
        }
        if s.starts_with('$') {
            return Err(UnknownHash::UnknownScheme);
        }
        if s.len() == 13 && s.bytes().all(is_crypt_char) {
            let mut full = [0u8; 13];
            full.copy_from_slice(s.as_bytes());
            return Ok(StoredHash::DesCrypt { full });
        }
        Err(UnknownHash::Plaintext)
    }

    pub(crate) fn format_name(&self) -> &'static str {
        match self {
            StoredHash::Bcrypt { .. } => "bcrypt",
            StoredHash::Apr1 { .. } => "apr1",
            StoredHash::Sha1(_) => "sha1",
            StoredHash::DesCrypt { .. } => "crypt",
        }
    }

    /// Weak formats get one warning per file.
    pub(crate) fn is_weak(&self) -> bool {
        !matches!(self, StoredHash::Bcrypt { .. })
    }

    pub(crate) fn bcrypt_cost(&self) -> Option<u32> {
        match self {
            StoredHash::Bcrypt { cost, .. } => Some(*cost),
            _ => None,
        }
    }

    /// Checks a password. Blocking CPU work.
    pub(crate) fn verify(&self, password: &[u8], work: &HashWork) -> bool {
        match self {
            StoredHash::Bcrypt { hash, cost } => verify_bcrypt(password, hash, *cost, work),
            StoredHash::Apr1 { salt, encoded } => {
                work.count_other();
                let computed = apr1::digest(password, salt.as_bytes());
                bool::from(computed.ct_eq(encoded))
            }
            StoredHash::Sha1(expected) => {
                work.count_other();
                let computed: [u8; 20] = Sha1::digest(password).into();
                bool::from(computed.ct_eq(expected))
            }
            StoredHash::DesCrypt { full } => {
                work.count_other();
                let salt = [full[0], full[1]];
                match des_crypt::crypt(password, salt) {
                    Some(computed) => bool::from(computed.ct_eq(full)),
                    None => false,
                }
            }
        }
    }
}

/// Verifies against a bcrypt hash, counting the work. A hash the crate refuses counts as a
/// mismatch (hashes are validated at load, so this does not happen in practice).
pub(crate) fn verify_bcrypt(password: &[u8], hash: &str, cost: u32, work: &HashWork) -> bool {
    work.count_bcrypt(cost);
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Why [`hash_password`] refused. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum HashPasswordError {
    #[error(
        "cannot hash the password: cost {cost} is outside {BCRYPT_MIN_COST}-{BCRYPT_MAX_COST}"
    )]
    Cost { cost: u32 },
    #[error("cannot hash the password: the password is empty")]
    Empty,
    #[error("cannot hash the password: the password is {len} bytes long; bcrypt uses at most {BCRYPT_MAX_PASSWORD_BYTES}")]
    TooLong { len: usize },
    #[error("cannot hash the password: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
}

/// A bcrypt hash of `password` in the `$2y$` form Apache's `htpasswd -B` writes, for
/// `purser hash-password`. Refuses costs outside 4-31 and passwords longer than bcrypt's
/// 72-byte limit (which would otherwise be cut silently).
pub fn hash_password(password: &str, cost: u32) -> Result<String, HashPasswordError> {
    if !(BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&cost) {
        return Err(HashPasswordError::Cost { cost });
    }
    if password.is_empty() {
        return Err(HashPasswordError::Empty);
    }
    if password.len() > BCRYPT_MAX_PASSWORD_BYTES {
        return Err(HashPasswordError::TooLong {
            len: password.len(),
        });
    }
    Ok(bcrypt::non_truncating_hash_with_result(password, cost)?
        .format_for_version(bcrypt::Version::TwoY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_formats() {
        let cases = [
            (
                "$2y$05$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
                Ok("bcrypt"),
            ),
            (
                "$2a$12$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
                Ok("bcrypt"),
            ),
            (
                "$2b$31$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
                Ok("bcrypt"),
            ),
            ("$apr1$abc$0123456789abcdefABCDEF", Ok("apr1")),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", Ok("sha1")),
            ("abJnggxhB/yWI", Ok("crypt")),
        ];
        for (s, want) in cases {
            assert_eq!(
                StoredHash::parse(s)
                    .map(|h| h.format_name())
                    .map_err(|_| ()),
                want.map_err(|_: ()| ()),
                "{s}"
            );
        }
        for bad in [
            "$2y$03$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
            "$2y$32$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
            "$2y$10$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3",
            "$2x$10$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
            "$2y$1a$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a",
            "$apr1$$0123456789abcdefABCDEF",
            "$apr1$123456789$0123456789abcdefABCDEF",
            "$apr1$abc$0123456789abcdefABCDE",
            "{SHA}notbase64!",
            "{SHA}AAAA",
            "$5$rounds=5000$salt$hash",
            "secret",
            "",
            "abJnggxhB/yW!",
        ] {
            assert!(StoredHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_hash() {
        let h = StoredHash::parse("$2y$05$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a")
            .unwrap();
        let shown = format!("{h:?}");
        assert!(!shown.contains("dqrJ"), "{shown}");
    }

    #[test]
    fn dummy_hash_is_valid_at_every_cost() {
        for cost in [4, 10, 12, 31] {
            let d = dummy_bcrypt(cost);
            assert_eq!(bcrypt_cost(&d), Some(cost));
        }
        let work = HashWork::default();
        assert!(!verify_bcrypt(b"purser", &dummy_bcrypt(4), 4, &work));
        assert_eq!(work.snapshot().bcrypt_checks, 1);
        assert_eq!(work.snapshot().bcrypt_rounds, 16);
    }

    #[test]
    fn the_dummy_cost_is_the_most_common_one() {
        assert_eq!(dummy_cost([]), DEFAULT_DUMMY_COST);
        assert_eq!(dummy_cost([5, 12, 12]), 12);
        assert_eq!(dummy_cost([5, 12]), 12);
        assert_eq!(dummy_cost([5, 5, 12]), 5);
    }

    #[test]
    fn unknown_hashes_say_what_to_do_without_the_hash() {
        let err = StoredHash::parse("$2y$04$short").unwrap_err();
        assert_eq!(err, UnknownHash::MalformedBcrypt);
        assert!(!err.to_string().contains("short"), "{err}");
        assert_eq!(StoredHash::parse("secret"), Err(UnknownHash::Plaintext));
        assert_eq!(
            StoredHash::parse("{SHA}AAAA").unwrap_err().to_string(),
            "malformed {SHA} hash (expected base64 of 20 bytes)"
        );
    }

    #[test]
    fn hash_password_refuses_what_bcrypt_cannot_do() {
        assert!(matches!(
            hash_password("x", 3),
            Err(HashPasswordError::Cost { cost: 3 })
        ));
        assert!(matches!(
            hash_password("", 4),
            Err(HashPasswordError::Empty)
        ));
        let long = "x".repeat(73);
        let err = hash_password(&long, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot hash the password: the password is 73 bytes long; bcrypt uses at most 72"
        );
        let h = hash_password(&"x".repeat(71), 4).unwrap();
        assert!(h.starts_with("$2y$04$"), "{h}");
    }

    #[test]
    fn sha1_verifies() {
        // {SHA} of "password", as `htpasswd -s` writes it.
        let h = StoredHash::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap();
        let work = HashWork::default();
        assert!(h.verify(b"password", &work));
        assert!(!h.verify(b"Password", &work));
    }
}
