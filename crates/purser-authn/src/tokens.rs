//! Machine tokens: named, scoped, expiring secrets for CI pipelines and robots, kept as SHA-256
//! digests in a YAML file that operators review in git (`authn.tokens.file`).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use purser_authn::tokens::{generate_secret, secret_sha256, TokensAuthenticator, TokensDb};
//! use purser_core::{Authenticator, AuthnOutcome, Credentials, Reloadable};
//!
//! let secret = generate_secret();
//! let text = format!(
//!     "- name: ci-app\n  scopes: [\"repository:ci/app/**:pull,push\"]\n  sha256: {}\n  expires: null\n",
//!     secret_sha256(&secret)
//! );
//! let db = TokensDb::parse(&text, "tokens.yaml", &|_| Ok(())).unwrap();
//! let auth = TokensAuthenticator::new(Arc::new(Reloadable::new(db)));
//! let got = auth.authenticate(&Credentials::new("ci-app", secret.as_str())).await.unwrap();
//! let AuthnOutcome::Accepted(who) = got else { panic!() };
//! assert_eq!(who.account, "ci-app");
//! assert_eq!(who.cap.unwrap()[0].to_string(), "repository:ci/app/**:pull,push");
//! # });
//! ```
//!
//! The secret is `purser_`, 64 lowercase hex digits (256 bits from the operating system's
//! random source) and 8 hex digits of checksum (the first 4 bytes of a SHA-256 over a fixed
//! domain string and the random part): a typo is refused before any lookup, and secret
//! scanners can match `purser_[0-9a-f]{72}`. A random 256-bit secret needs no slow hash: the
//! file keeps its SHA-256, and a login costs one hash, one lookup and one constant-time
//! comparison.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Clock, Credentials, Identity,
    MachineLogin, Reloadable, ScopeCap, SystemClock,
};
use rand::RngCore;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The backend's name, in `authn.order` and in metrics.
pub const BACKEND: BackendName = "tokens";
/// What every secret starts with.
pub const SECRET_PREFIX: &str = "purser_";
/// Hex digits of the random part (256 bits).
const RANDOM_HEX: usize = 64;
/// Hex digits of the checksum (32 bits).
const CHECK_HEX: usize = 8;
/// The length of a secret: `purser_` and 72 hex digits.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + RANDOM_HEX + CHECK_HEX;
const CHECKSUM_DOMAIN: &[u8] = b"purser machine token checksum v1\0";
/// Largest tokens file read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most tokens in one file.
pub const MAX_TOKENS: usize = 100_000;
/// Longest token name; names are what clients type as their user name.
pub const MAX_NAME_LEN: usize = 128;
const MAX_DESCRIPTION_LEN: usize = 1024;
const MAX_GROUPS: usize = 256;
const MAX_SCOPES: usize = 64;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn checksum(random_hex: &str) -> String {
    let mut h = Sha256::new();
    h.update(CHECKSUM_DOMAIN);
    h.update(random_hex.as_bytes());
    hex(&h.finalize()[..CHECK_HEX / 2])
}

/// A new secret: `purser_`, 256 random bits in hex, and the checksum.
pub fn generate_secret() -> String {
    let mut random = [0u8; RANDOM_HEX / 2];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let random = hex(&random);
    format!("{SECRET_PREFIX}{random}{}", checksum(&random))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` has the shape of a secret (`purser_` and 72 lowercase hex digits), whatever
/// its checksum.
pub fn looks_like_secret(s: &str) -> bool {
    s.len() == SECRET_LEN && s.starts_with(SECRET_PREFIX) && is_lower_hex(&s[SECRET_PREFIX.len()..])
}

/// Whether `s` is a secret whose checksum holds: what a typo breaks.
pub fn secret_is_valid(s: &str) -> bool {
    if !looks_like_secret(s) {
        return false;
    }
    let body = &s[SECRET_PREFIX.len()..];
    let (random, check) = body.split_at(RANDOM_HEX);
    checksum(random).as_bytes().ct_eq(check.as_bytes()).into()
}

/// The digest the tokens file keeps: SHA-256 of the whole secret, lowercase hex.
pub fn secret_sha256(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A wall-clock time as unix seconds (0 before 1970).
pub fn unix_seconds(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 (UTC, whole seconds).
pub fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// RFC 3339 text as unix seconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time (2027-01-31T12:00:00Z)"))
}

/// Whether `name` may name a token: what a client can type as a Basic user name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("a token name is 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "token name {name:?}: use letters, digits, '-', '_', '.' and '@' only"
        ));
    }
    Ok(())
}

/// One token as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    /// The account the policy sees; the name when the file does not say.
    pub account: String,
    pub groups: Vec<String>,
    /// `None`: no cap (the policy alone decides); `Some`: the most the token is ever granted.
    pub cap: Option<Vec<ScopeCap>>,
    /// SHA-256 of the secret, lowercase hex. Never printed.
    sha256: String,
    /// When it was made, as written (RFC 3339); may be empty in a hand-written entry.
    pub created: String,
    /// Unix seconds when it stops working; `None` for never.
    pub expires: Option<i64>,
    pub description: String,
    /// The line of the entry in its file (1-based; 0 when unknown).
    pub line: usize,
}

impl TokenEntry {
    /// Whether the token has expired at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// The fingerprint refresh tokens carry: it changes when the token is made again.
    pub fn stamp(&self) -> String {
        crate::hash::credential_stamp(self.sha256.as_bytes())
    }

    /// The entry as [`NewToken::render`] writes it (comments around it are not kept).
    pub fn render(&self) -> String {
        let scopes: Option<Vec<String>> = self
            .cap
            .as_ref()
            .map(|c| c.iter().map(ToString::to_string).collect());
        render_entry(
            &self.name,
            &self.account,
            &self.groups,
            scopes.as_deref(),
            &self.sha256,
            &self.created,
            self.expires,
            &self.description,
        )
    }

    fn identity(&self) -> Identity {
        let mut who = Identity::new(self.account.clone(), self.groups.clone());
        who.cap = self.cap.clone();
        who.machine = Some(MachineLogin {
            name: self.name.clone(),
            expires: self.expires,
        });
        who
    }
}

/// What `purser token create` adds: a new entry, rendered by [`NewToken::render`].
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub account: &'a str,
    pub groups: &'a [String],
    /// `None`: no cap.
    pub scopes: Option<&'a [String]>,
    pub sha256: &'a str,
    pub created: i64,
    pub expires: Option<i64>,
    pub description: &'a str,
}

fn yaml_str(s: &str) -> String {
    // JSON strings are YAML double-quoted scalars.
    serde_json::Value::String(s.to_string()).to_string()
}

fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| yaml_str(s)).collect();
    format!("[{}]", quoted.join(", "))
}

impl NewToken<'_> {
    /// The entry as a block of the file, ending in a newline.
    pub fn render(&self) -> String {
        render_entry(
            self.name,
            self.account,
            self.groups,
            self.scopes,
            self.sha256,
            &format_time(self.created),
            self.expires,
            self.description,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn render_entry(
    name: &str,
    account: &str,
    groups: &[String],
    scopes: Option<&[String]>,
    sha256: &str,
    created: &str,
    expires: Option<i64>,
    description: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "- name: {}", yaml_str(name));
    let _ = writeln!(out, "  account: {}", yaml_str(account));
    let _ = writeln!(out, "  groups: {}", yaml_list(groups));
    match scopes {
        Some(s) => {
            let _ = writeln!(out, "  scopes: {}", yaml_list(s));
        }
        None => out.push_str("  scopes: null\n"),
    }
    let _ = writeln!(out, "  sha256: {sha256}");
    let _ = writeln!(out, "  created: {}", yaml_str(created));
    match expires {
        Some(e) => {
            let _ = writeln!(out, "  expires: {}", yaml_str(&format_time(e)));
        }
        None => out.push_str("  expires: null\n"),
    }
    let _ = writeln!(out, "  description: {}", yaml_str(description));
    out
}

/// Present-but-null and absent told apart: `Some(None)` is `expires: null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    sha256: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default, deserialize_with = "present")]
    expires: Option<Option<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// Why a tokens file did not load: the file and line, and what is wrong. Never a digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TokensError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// The loaded tokens.
#[derive(Clone, Debug, Default)]
pub struct TokensDb {
    entries: Vec<TokenEntry>,
    by_name: HashMap<String, usize>,
    /// Every expiry, sorted: how many have passed tells the cache when to forget.
    expiries: Vec<i64>,
}

/// The 1-based lines where top-level list items start (`- ` at the first column).
fn item_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| *l == "-" || l.starts_with("- "))
        .map(|(i, _)| i + 1)
        .collect()
}

impl TokensDb {
    /// No tokens (before the file loads).
    pub fn empty() -> Self {
        TokensDb::default()
    }

    /// Reads the file at `path` (bounded; see [`TokensDb::parse`]).
    pub fn load(
        path: &Path,
        check_cap: &dyn Fn(&ScopeCap) -> Result<(), String>,
    ) -> Result<TokensDb, TokensError> {
        let source = path.display().to_string();
        let text = purser_fs::read_text(path, MAX_FILE_BYTES).map_err(|e| TokensError {
            file: source.clone(),
            line: None,
            message: e.to_string(),
        })?;
        TokensDb::parse(&text, &source, check_cap)
    }

    /// Parses a tokens file: a YAML list of entries (an empty file holds none). `check_cap`
    /// checks each scope cap's patterns (the policy's language, which this crate does not
    /// know). The first problem stops the load, with its line.
    pub fn parse(
        text: &str,
        source: &str,
        check_cap: &dyn Fn(&ScopeCap) -> Result<(), String>,
    ) -> Result<TokensDb, TokensError> {
        let err = |line: Option<usize>, message: String| TokensError {
            file: source.to_string(),
            line,
            message,
        };
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        let raw: Vec<RawEntry> = if blank {
            Vec::new()
        } else {
            serde_norway::from_str::<Option<Vec<RawEntry>>>(text)
                .map_err(|e| {
                    let line = e.location().map(|l| l.line());
                    // The parser's message may quote a value: keep only its first sentence,
                    // and never a 64-digit digest.
                    let mut message = e.to_string();
                    if let Some(i) = message.find(" at line ") {
                        message.truncate(i);
                    }
                    if message
                        .as_bytes()
                        .windows(64)
                        .any(|w| w.iter().all(u8::is_ascii_hexdigit))
                    {
                        message = "malformed entry".into();
                    }
                    err(
                        line,
                        format!("{message} (the file is a list of tokens: - name: ...)"),
                    )
                })?
                .unwrap_or_default()
        };
        if raw.len() > MAX_TOKENS {
            return Err(err(None, format!("more than {MAX_TOKENS} tokens")));
        }
        let lines = item_lines(text);
        let mut db = TokensDb::default();
        for (i, r) in raw.into_iter().enumerate() {
            let line = lines.get(i).copied();
            let at = |message: String| err(line, format!("token {}: {message}", i + 1));
            check_name(&r.name).map_err(&at)?;
            if db.by_name.contains_key(&r.name) {
                return Err(at(format!("the name {:?} is used twice", r.name)));
            }
            let account = r.account.unwrap_or_else(|| r.name.clone());
            if account.is_empty() || account.len() > MAX_NAME_LEN {
                return Err(at(format!("account is 1 to {MAX_NAME_LEN} characters")));
            }
            if r.groups.len() > MAX_GROUPS
                || r.groups
                    .iter()
                    .any(|g| g.is_empty() || g.len() > MAX_NAME_LEN)
            {
                return Err(at("groups: at most 256 non-empty names".into()));
            }
            if r.sha256.len() != 64 || !is_lower_hex(&r.sha256) {
                return Err(at(
                    "sha256 must be 64 lowercase hex digits (the digest `purser token create` writes)"
                        .into(),
                ));
            }
            let cap = match r.scopes {
                None => None,
                Some(list) => {
                    if list.len() > MAX_SCOPES {
                        return Err(at(format!("scopes: at most {MAX_SCOPES}")));
                    }
                    let mut caps = Vec::with_capacity(list.len());
                    for s in &list {
                        let c: ScopeCap = s.parse().map_err(|e| at(format!("scopes: {e}")))?;
                        check_cap(&c).map_err(|e| at(format!("scopes: {s:?}: {e}")))?;
                        caps.push(c);
                    }
                    Some(caps)
                }
            };
            let created = r.created.unwrap_or_default();
            if !created.is_empty() {
                parse_time(&created).map_err(|e| at(format!("created: {e}")))?;
            }
            let expires = match r.expires {
                None => {
                    return Err(at(
                        "expires: say when the token ends (RFC 3339), or null for never".into(),
                    ))
                }
                Some(None) => None,
                Some(Some(t)) => Some(parse_time(&t).map_err(|e| at(format!("expires: {e}")))?),
            };
            let description = r.description.unwrap_or_default();
            if description.len() > MAX_DESCRIPTION_LEN {
                return Err(at(format!(
                    "description: at most {MAX_DESCRIPTION_LEN} bytes"
                )));
            }
            db.by_name.insert(r.name.clone(), db.entries.len());
            db.entries.push(TokenEntry {
                name: r.name,
                account,
                groups: r.groups,
                cap,
                sha256: r.sha256,
                created,
                expires,
                description,
                line: line.unwrap_or(0),
            });
        }
        db.expiries = db.entries.iter().filter_map(|e| e.expires).collect();
        db.expiries.sort_unstable();
        Ok(db)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every token, in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&TokenEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// How many tokens have expired by `now`.
    pub fn expired_count(&self, now: i64) -> usize {
        self.expiries.partition_point(|&e| e <= now)
    }
}

/// The `tokens` backend over a reloadable [`TokensDb`].
pub struct TokensAuthenticator {
    db: Arc<Reloadable<TokensDb>>,
    clock: Arc<dyn Clock>,
}

impl TokensAuthenticator {
    pub fn new(db: Arc<Reloadable<TokensDb>>) -> Self {
        TokensAuthenticator::with_clock(db, Arc::new(SystemClock))
    }

    /// As [`TokensAuthenticator::new`], with time from `clock`.
    pub fn with_clock(db: Arc<Reloadable<TokensDb>>, clock: Arc<dyn Clock>) -> Self {
        TokensAuthenticator { db, clock }
    }

    fn now(&self) -> i64 {
        unix_seconds(self.clock.wall())
    }
}

#[async_trait]
impl Authenticator for TokensAuthenticator {
    fn name(&self) -> BackendName {
        BACKEND
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        let secret = creds.password.expose();
        // A typo in a secret is caught here, before the file is consulted.
        if looks_like_secret(secret) && !secret_is_valid(secret) {
            return Ok(AuthnOutcome::REJECTED);
        }
        // Hashed before the lookup, so that a known and an unknown name cost the same.
        let digest = secret_sha256(secret);
        let db = self.db.load();
        let Some(entry) = db.get(&creds.username) else {
            return Ok(AuthnOutcome::UnknownUser);
        };
        let same: bool = digest.as_bytes().ct_eq(entry.sha256.as_bytes()).into();
        if !same {
            return Ok(AuthnOutcome::Rejected {
                account: Some(entry.account.clone()),
            });
        }
        if entry.is_expired(self.now()) {
            let when = entry.expires.map(format_time).unwrap_or_default();
            return Ok(AuthnOutcome::Refused {
                account: Some(entry.account.clone()),
                reason: format!(
                    "machine token {} expired at {when}: create a new one",
                    entry.name
                ),
            });
        }
        Ok(AuthnOutcome::Accepted(entry.identity()))
    }

    /// Looks a token up by its name (refresh tokens of machine tokens name it): `None` once it
    /// is removed or has expired.
    async fn lookup(&self, name: &str) -> Result<Option<Identity>, BackendError> {
        let now = self.now();
        Ok(self
            .db
            .load()
            .get(name)
            .filter(|e| !e.is_expired(now))
            .map(TokenEntry::identity))
    }

    fn generation(&self) -> u64 {
        // A reload changes the first term; an expiry passing changes the second, so a cached
        // login of a token ends when the token does.
        let passed = self.db.load().expired_count(self.now()) as u64;
        self.db
            .generation()
            .wrapping_mul(1 << 32)
            .wrapping_add(passed)
    }

    fn credential_stamp(&self, name: &str) -> Option<String> {
        self.db.load().get(name).map(TokenEntry::stamp)
    }
}

#[cfg(test)]
mod tests;
