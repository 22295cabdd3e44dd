//! Stored password hashes: recognising the formats Apache's `htpasswd` writes and checking a
//! password against them. Everything here is CPU work: callers run it through [`run_limited`],
//! on `spawn_blocking` and under the shared [`hash_limiter`].

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::{apr1, des_crypt};

/// The salt and digest of a real cost-4 bcrypt hash of a random password: the dummy hash used
/// for unknown users, with the cost digits put in front (see [`dummy_bcrypt`]).
const DUMMY_BCRYPT_TAIL: &str = "dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a";

/// The bcrypt costs the `bcrypt` crate accepts.
pub const BCRYPT_MIN_COST: u32 = 4;
pub const BCRYPT_MAX_COST: u32 = 31;

/// A bcrypt hash of the given cost that no password matches in practice. Verifying against it
/// costs exactly what verifying a real user's hash of that cost costs.
pub(crate) fn dummy_bcrypt(cost: u32) -> String {
    let cost = cost.clamp(BCRYPT_MIN_COST, BCRYPT_MAX_COST);
    format!("$2b${cost:02}${DUMMY_BCRYPT_TAIL}")
}

const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn is_crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// The cost of a well-formed bcrypt hash (`$2y$`, `$2a$`, `$2b$`), `None` for anything else.
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnknownHash(pub &'static str);

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
                None => Err(UnknownHash(
                    "malformed bcrypt hash (expected $2y$, $2a$ or $2b$, a cost of 04 to 31 and 60 characters); rehash with `htpasswd -B`",
                )),
            };
        }
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let malformed = UnknownHash(
                "malformed $apr1$ hash (expected $apr1$SALT$ and 22 characters); rehash with `htpasswd -B`",
            );
            let Some((salt, digest)) = rest.split_once('$') else {
                return Err(malformed);
            };
            if salt.is_empty() || salt.len() > 8 || digest.len() != 22 {
                return Err(malformed);
            }
            if !digest.bytes().all(is_crypt_char) {
                return Err(malformed);
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
                .map_err(|_| UnknownHash("malformed {SHA} hash (expected base64 of 20 bytes)"))?;
            let digest: [u8; 20] = bytes
                .try_into()
                .map_err(|_| UnknownHash("malformed {SHA} hash (expected base64 of 20 bytes)"))?;
            return Ok(StoredHash::Sha1(digest));
        }
        if s.starts_with("$5$") || s.starts_with("$6$") {
            return Err(UnknownHash(
                "SHA-256/SHA-512 crypt ($5$/$6$) is not supported; rehash with `htpasswd -B`",
            ));
        }
        if s.starts_with('$') {
            return Err(UnknownHash(
                "unknown hash format; rehash with `htpasswd -B`",
            ));
        }
        if s.len() == 13 && s.bytes().all(is_crypt_char) {
            let mut full = [0u8; 13];
            full.copy_from_slice(s.as_bytes());
            return Ok(StoredHash::DesCrypt { full });
        }
        Err(UnknownHash(
            "plaintext password or unknown hash format; plaintext is refused, rehash with `htpasswd -B`",
        ))
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

/// Counts the expensive hash checks a backend ran, so tests can show that unknown users and
/// wrong passwords cost the same work (and operators can see the load).
#[derive(Debug, Default)]
pub struct HashWork {
    bcrypt_checks: AtomicU64,
    bcrypt_cost_total: AtomicU64,
    other_checks: AtomicU64,
    /// Checks running right now, and the most ever seen at once.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// Marks one check as running while it lives.
struct InFlight<'a>(&'a HashWork);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A snapshot of [`HashWork`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashWorkSnapshot {
    /// bcrypt verifications run.
    pub bcrypt_checks: u64,
    /// Sum of `2^cost` over those verifications: the number of key-expansion rounds.
    pub bcrypt_rounds: u64,
    /// Verifications of other formats (apr1, SHA-1, crypt).
    pub other_checks: u64,
}

impl HashWork {
    fn count_bcrypt(&self, cost: u32) {
        self.bcrypt_checks.fetch_add(1, Ordering::Relaxed);
        self.bcrypt_cost_total
            .fetch_add(1u64 << cost.min(63), Ordering::Relaxed);
    }
    fn count_other(&self) {
        self.other_checks.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(self)
    }
    /// The most checks that ever ran at the same time.
    #[cfg(test)]
    pub(crate) fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Acquire)
    }
    pub fn snapshot(&self) -> HashWorkSnapshot {
        HashWorkSnapshot {
            bcrypt_checks: self.bcrypt_checks.load(Ordering::Relaxed),
            bcrypt_rounds: self.bcrypt_cost_total.load(Ordering::Relaxed),
            other_checks: self.other_checks.load(Ordering::Relaxed),
        }
    }
}

/// A limiter for password checks: one permit per CPU this process may use
/// (`available_parallelism`, which follows CPU affinity and cgroup quotas), at least one.
///
/// Give the same limiter to every hashing backend
/// ([`crate::StaticAuthenticator::with_hash_limiter`],
/// [`crate::HtpasswdAuthenticator::with_hash_limiter`]): logins beyond the number of cores
/// then wait their turn in the semaphore (first come, first served) instead of as runnable
/// threads competing with the async workers, so the server keeps answering (`/healthz`, cache
/// hits) while bcrypt saturates the cores, at the same login throughput.
pub fn hash_limiter() -> Arc<Semaphore> {
    let permits = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    Arc::new(Semaphore::new(permits.max(1)))
}

/// Runs one password check on the blocking pool, after taking a permit of `limiter` (held
/// until the check ends). `None` if the check could not run (the limiter was closed or the
/// check panicked).
pub(crate) async fn run_limited<T, F>(
    limiter: &Arc<Semaphore>,
    work: &Arc<HashWork>,
    check: F,
) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&HashWork) -> T + Send + 'static,
{
    let permit = Arc::clone(limiter).acquire_owned().await.ok()?;
    let work = Arc::clone(work);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _running = work.enter();
        check(&work)
    })
    .await
    .ok()
}

/// Encodes `n` 6-bit groups of `v`, lowest first, in the crypt alphabet.
pub(crate) fn to64(out: &mut Vec<u8>, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(CRYPT_ALPHABET[(v & 0x3f) as usize]);
        v >>= 6;
    }
}

/// Encodes 64 bits (one per byte), 6 at a time from the first, in the crypt alphabet: 11
/// characters, the last padded with two zero bits.
pub(crate) fn to64_msb_first(out: &mut Vec<u8>, bits: &[u8; 64]) {
    for chunk in 0..11 {
        let mut v = 0usize;
        for j in 0..6 {
            let i = chunk * 6 + j;
            v = (v << 1) | usize::from(if i < 64 { bits[i] } else { 0 });
        }
        out.push(CRYPT_ALPHABET[v]);
    }
}

/// The value of a crypt-alphabet character.
pub(crate) fn crypt_char_value(c: u8) -> Option<u8> {
    CRYPT_ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
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
    fn sha1_verifies() {
        // {SHA} of "password", as `htpasswd -s` writes it.
        let h = StoredHash::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap();
        let work = HashWork::default();
        assert!(h.verify(b"password", &work));
        assert!(!h.verify(b"Password", &work));
    }
}
