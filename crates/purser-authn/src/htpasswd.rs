//! Apache htpasswd files, and the backend that checks passwords against them.
//!
//! Parsing is all-or-nothing for problems that make the whole file suspect (not UTF-8, a NUL
//! byte, a line without `:`, a duplicate user): the caller keeps its last good version. A line
//! whose hash cannot be used (plaintext, unknown or malformed) is skipped with a [`LoadIssue`]
//! and the rest loads, so one bad entry does not lock everyone out.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity, Reloadable,
};

use crate::apache_file::{self, content_lines, FileError};
use crate::hash::{dummy_bcrypt, dummy_cost, verify_bcrypt, StoredHash, DEFAULT_DUMMY_COST};
use crate::hash_work::{
    bcrypt_rounds, hash_limiter, refused, run_limited, HashLimiter, HashWork, HashWorkSnapshot,
};
use crate::htgroup::HtgroupDb;
use crate::issue::{LoadIssue, Severity};

/// Longest password checked. `$apr1$` hashes the password about 2,000 times, so an
/// unbounded one would let a client burn CPU; longer passwords are refused after the same
/// dummy bcrypt work an unknown user costs.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// An htpasswd file refused as a whole: the holder keeps the last good version.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// Not read, or broken in a way every Apache file can be (see [`FileError`]).
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{source_name}:{line}: the line has no ':' (expected `user:hash`)")]
    MissingColon { source_name: String, line: usize },
    #[error("{source_name}:{line}: empty user name before ':'")]
    EmptyName { source_name: String, line: usize },
    #[error("{source_name}:{line}: user {user:?} is already defined on line {first_line}; remove one of the lines")]
    DuplicateUser {
        source_name: String,
        line: usize,
        user: String,
        first_line: usize,
    },
}

/// One user's line: the parsed hash, and a fingerprint of the hash as written, so that a
/// reload can tell which users' lines changed (see [`HtpasswdAuthenticator`]'s
/// `account_version`).
struct Account {
    hash: StoredHash,
    line: u64,
}

/// The users of one htpasswd file, by name.
pub struct HtpasswdDb {
    source: String,
    users: HashMap<String, Account>,
    /// A bcrypt hash of the file's most common cost, checked for unknown users.
    dummy: String,
    dummy_cost: u32,
}

impl fmt::Debug for HtpasswdDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtpasswdDb")
            .field("source", &self.source)
            .field("users", &self.users.len())
            .finish()
    }
}

impl HtpasswdDb {
    /// A database without users (every name is unknown).
    pub fn empty(source: &str) -> Self {
        HtpasswdDb {
            source: source.to_owned(),
            users: HashMap::new(),
            dummy: dummy_bcrypt(DEFAULT_DUMMY_COST),
            dummy_cost: DEFAULT_DUMMY_COST,
        }
    }

    /// Reads and parses a file; see [`HtpasswdDb::parse`].
    pub fn load(path: impl AsRef<Path>) -> Result<(HtpasswdDb, Vec<LoadIssue>), HtpasswdError> {
        let path = path.as_ref();
        let text = apache_file::read(path)?;
        HtpasswdDb::parse(&text, &path.display().to_string())
    }

    /// Parses htpasswd text. `source` names the file in messages. Returns the database and the
    /// issues to log (skipped lines, one warning listing users with weak hashes).
    pub fn parse(text: &str, source: &str) -> Result<(HtpasswdDb, Vec<LoadIssue>), HtpasswdError> {
        let lines = content_lines(text, source)?;
        let mut users: HashMap<String, Account> = HashMap::with_capacity(lines.len());
        let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(lines.len());
        let mut issues = Vec::new();
        let mut weak: Vec<String> = Vec::new();
        let mut costs = Vec::new();

        for (number, line) in lines {
            let Some((user, hash)) = line.split_once(':') else {
                return Err(HtpasswdError::MissingColon {
                    source_name: source.to_owned(),
                    line: number,
                });
            };
            if user.trim().is_empty() {
                return Err(HtpasswdError::EmptyName {
                    source_name: source.to_owned(),
                    line: number,
                });
            }
            if let Some(&first_line) = first_seen.get(user) {
                return Err(HtpasswdError::DuplicateUser {
                    source_name: source.to_owned(),
                    line: number,
                    user: user.to_owned(),
                    first_line,
                });
            }
            first_seen.insert(user, number);

            match StoredHash::parse(hash.trim()) {
                Ok(stored) => {
                    if stored.is_weak() {
                        weak.push(user.to_owned());
                    }
                    costs.extend(stored.bcrypt_cost());
                    let line = fingerprint(|h| hash.trim().hash(h));
                    users.insert(user.to_owned(), Account { hash: stored, line });
                }
                Err(why) => issues.push(LoadIssue {
                    severity: Severity::LineRefused,
                    source_name: source.to_owned(),
                    line: Some(number),
                    users: vec![user.to_owned()],
                    message: format!("line skipped: {why}"),
                }),
            }
        }

        if !weak.is_empty() {
            weak.sort();
            issues.push(LoadIssue {
                severity: Severity::Warning,
                source_name: source.to_owned(),
                line: None,
                users: weak,
                message: "weak password hashes ({SHA}, crypt or $apr1$): they are fast to crack if the file leaks; rehash with `htpasswd -B`".to_owned(),
            });
        }

        let dummy_cost = dummy_cost(costs);

        Ok((
            HtpasswdDb {
                source: source.to_owned(),
                users,
                dummy: dummy_bcrypt(dummy_cost),
                dummy_cost,
            },
            issues,
        ))
    }

    /// The file name given at parse time.
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn len(&self) -> usize {
        self.users.len()
    }
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
    /// The fingerprint of a user's stored hash (see [`crate::hash::credential_stamp`]).
    pub fn stamp(&self, user: &str) -> Option<String> {
        self.users.get(user).map(|a| a.hash.stamp())
    }
    /// The user names, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
    /// The bcrypt cost used for unknown users.
    pub fn dummy_cost(&self) -> u32 {
        self.dummy_cost
    }

    /// A fingerprint of the user's line, `None` for an unknown user.
    pub fn line_version(&self, user: &str) -> Option<u64> {
        self.users.get(user).map(|a| a.line)
    }

    /// The rounds checking `user` costs (for the limiter's queue): the user's bcrypt cost, the
    /// dummy's for an unknown user, one round for the cheaper formats.
    fn rounds(&self, user: &str) -> u64 {
        match self.users.get(user) {
            Some(a) => a.hash.bcrypt_cost().map_or(1, bcrypt_rounds),
            None => bcrypt_rounds(self.dummy_cost),
        }
    }

    /// `Some(matched)` for a known user, `None` (after the same bcrypt work as a known user)
    /// for an unknown one. Blocking CPU work.
    fn check(&self, user: &str, password: &[u8], work: &HashWork) -> Option<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            verify_bcrypt(password, &self.dummy, self.dummy_cost, work);
            return self.users.contains_key(user).then_some(false);
        }
        match self.users.get(user) {
            Some(a) => Some(a.hash.verify(password, work)),
            None => {
                verify_bcrypt(password, &self.dummy, self.dummy_cost, work);
                None
            }
        }
    }
}

/// Checks passwords against the current htpasswd file, with groups from the current htgroup
/// file. The files are parsed and reloaded by the caller (the server's watcher) into the two
/// holders; this type only reads the version current at each call.
pub struct HtpasswdAuthenticator {
    users: Arc<Reloadable<HtpasswdDb>>,
    groups: Arc<Reloadable<HtgroupDb>>,
    work: Arc<HashWork>,
    limiter: Arc<HashLimiter>,
}

impl fmt::Debug for HtpasswdAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtpasswdAuthenticator")
            .field("users", &self.users.load())
            .field("generation", &self.generation())
            .finish()
    }
}

impl HtpasswdAuthenticator {
    pub fn new(users: Arc<Reloadable<HtpasswdDb>>, groups: Arc<Reloadable<HtgroupDb>>) -> Self {
        HtpasswdAuthenticator {
            users,
            groups,
            work: Arc::new(HashWork::default()),
            limiter: hash_limiter(),
        }
    }

    /// Runs the password checks under `limiter`, shared with the other hashing backends (see
    /// [`hash_limiter`]), instead of this backend's own.
    pub fn with_hash_limiter(mut self, limiter: Arc<HashLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The password checks run so far.
    pub fn hash_work(&self) -> HashWorkSnapshot {
        self.work.snapshot()
    }

    fn identity(&self, account: &str) -> Identity {
        Identity::new(account, self.groups.load().groups_of(account).to_vec())
    }
}

#[async_trait]
impl Authenticator for HtpasswdAuthenticator {
    fn name(&self) -> BackendName {
        "htpasswd"
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        let db = self.users.load();
        let creds_owned = creds.clone();
        let rounds = db.rounds(&creds.username);
        let verdict = run_limited(&self.limiter, &self.work, rounds, move |work| {
            db.check(
                &creds_owned.username,
                creds_owned.password.expose().as_bytes(),
                work,
            )
        })
        .await
        .map_err(|e| refused("htpasswd", e))?;
        Ok(match verdict {
            None => AuthnOutcome::UnknownUser,
            Some(false) => AuthnOutcome::REJECTED,
            Some(true) => AuthnOutcome::Accepted(self.identity(&creds.username)),
        })
    }

    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
        Ok(self
            .users
            .load()
            .contains(account)
            .then(|| self.identity(account)))
    }

    fn credential_stamp(&self, account: &str) -> Option<String> {
        self.users.load().stamp(account)
    }

    /// The user's line and groups: a reload that leaves both alone leaves the user's cached
    /// logins valid, and any change to either (or the user's removal) invalidates them.
    fn account_version(&self, name: &str) -> u64 {
        let line = self.users.load().line_version(name);
        let groups = self.groups.load();
        fingerprint(|h| {
            line.hash(h);
            groups.groups_of(name).hash(h);
        })
    }

    fn generation(&self) -> u64 {
        // Both counters only grow, so their sum changes at every reload of either file.
        self.users
            .generation()
            .wrapping_add(self.groups.generation())
    }
}

/// A 64-bit fingerprint under SipHash with fixed keys: versions are compared within one
/// process, against accidental equality (a file edit), not an adversary (who would have to
/// write the file).
fn fingerprint(feed: impl FnOnce(&mut DefaultHasher)) -> u64 {
    let mut h = DefaultHasher::new();
    feed(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BC: &str = "$2y$04$dqrJtmnYXMWkl3O9s.GphOIa0qHqzZE8RXaQ7JSgA6CVZ0hj8GK3a";

    #[test]
    fn parses_and_skips_bad_lines() {
        let text = format!(
            "# users\n\nalice:{BC}\r\nbob:plaintext\ncarol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n  \ndave:$2y$04$short\n"
        );
        let (db, issues) = HtpasswdDb::parse(&text, "users.htpasswd").unwrap();
        assert_eq!(db.len(), 2);
        assert!(db.contains("alice") && db.contains("carol"));
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert_eq!(issues[0].line, Some(4));
        assert_eq!(issues[0].users, vec!["bob".to_owned()]);
        assert!(issues[0]
            .to_string()
            .starts_with("users.htpasswd:4: user \"bob\": line skipped"));
        assert!(!issues[0].to_string().contains("plaintext:"));
        assert_eq!(issues[1].line, Some(7));
        assert!(!issues[1].to_string().contains("$2y$04$short"));
        assert_eq!(issues[2].severity, Severity::Warning);
        assert_eq!(issues[2].users, vec!["carol".to_owned()]);
        assert_eq!(db.dummy_cost(), 4);
    }

    #[test]
    fn whole_file_errors_name_the_line() {
        let cases: [(&str, &str); 4] = [
            ("alice:x\nnocolon\n", "f:2: the line has no ':'"),
            (":abc\n", "f:1: empty user name"),
            (
                "a:x\n\na:y\n",
                "f:3: user \"a\" is already defined on line 1",
            ),
            ("a:x\nb\0:y\n", "f:2: the line contains a NUL byte"),
        ];
        for (text, want) in cases {
            let err = HtpasswdDb::parse(text, "f").unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn line_bound_is_enforced() {
        let text = "#\n".repeat(crate::apache_file::MAX_LINES);
        assert!(HtpasswdDb::parse(&text, "f").is_ok());
        let text = format!("{text}#");
        let err = HtpasswdDb::parse(&text, "f").unwrap_err();
        assert!(
            matches!(err, HtpasswdError::File(FileError::TooManyLines { .. })),
            "{err}"
        );
    }

    #[test]
    fn over_long_passwords_cost_one_bcrypt_check() {
        let text = format!("alice:$apr1$abc$0123456789abcdefABCDEF\nbob:{BC}\n");
        let (db, _) = HtpasswdDb::parse(&text, "f").unwrap();
        let work = HashWork::default();
        let long = vec![b'x'; MAX_PASSWORD_BYTES + 1];
        assert_eq!(db.check("alice", &long, &work), Some(false));
        assert_eq!(db.check("nobody", &long, &work), None);
        let done = work.snapshot();
        assert_eq!((done.bcrypt_checks, done.other_checks), (2, 0));
    }

    /// The htpasswd backend takes a permit of the limiter for every check, unknown users
    /// included: under one permit, never two hashes at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_limiter_of_one_runs_one_check_at_a_time() {
        let hash = crate::hash::hash_password("right", 6).unwrap();
        let text = format!("alice:{hash}\ncarol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
        let (db, _) = HtpasswdDb::parse(&text, "f").unwrap();
        let limiter = Arc::new(crate::hash_work::HashLimiter::new(
            1,
            std::time::Duration::from_secs(3600),
        ));
        let auth = Arc::new(
            HtpasswdAuthenticator::new(
                Arc::new(Reloadable::new(db)),
                Arc::new(Reloadable::new(HtgroupDb::empty())),
            )
            .with_hash_limiter(Arc::clone(&limiter)),
        );
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move {
                    let user = ["alice", "nobody", "carol", "alice"][i % 4];
                    auth.authenticate(&purser_core::Credentials::new(user, "right"))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let done = auth.hash_work();
        assert_eq!((done.bcrypt_checks, done.other_checks), (12, 4));
        assert_eq!(auth.work.peak_in_flight(), 1);
        assert_eq!(limiter.available_permits(), 1);
    }

    /// A reload changes the version of the users whose line or groups changed, and of nobody
    /// else: their cached logins stay valid.
    #[test]
    fn a_reload_changes_only_the_edited_users_versions() {
        const OTHER: &str = "$2y$04$Bu1AVJRSbqGdXBWXMfZFdOiuSzgw2AQnMIkt0bCbyqC1AHY0d8BYi";
        let parse = |t: &str| HtpasswdDb::parse(t, "f").unwrap().0;
        let groups = |t: &str| HtgroupDb::parse(t, "g").unwrap().0;
        let users = Arc::new(Reloadable::new(parse(&format!("alice:{BC}\nbob:{BC}\n"))));
        let grp = Arc::new(Reloadable::new(groups("devs: alice bob\n")));
        let auth = HtpasswdAuthenticator::new(users.clone(), grp.clone());
        let v = |u: &str| auth.account_version(u);
        let (alice, bob, carol) = (v("alice"), v("bob"), v("carol"));

        // carol added, bob's hash changed
        users.store(parse(&format!("alice:{BC}\nbob:{OTHER}\ncarol:{BC}\n")));
        assert_eq!(v("alice"), alice);
        assert_ne!(v("bob"), bob);
        assert_ne!(v("carol"), carol);
        let bob = v("bob");
        // bob leaves a group; the same file written again changes nothing
        grp.store(groups("devs: alice\n"));
        assert_eq!(v("alice"), alice);
        assert_ne!(v("bob"), bob);
        let bob = v("bob");
        users.store(parse(&format!("alice:{BC}\nbob:{OTHER}\ncarol:{BC}\n")));
        assert_eq!((v("alice"), v("bob")), (alice, bob));
        // bob removed
        users.store(parse(&format!("alice:{BC}\n")));
        assert_ne!(v("bob"), bob);
        assert_eq!(v("alice"), alice);
    }

    #[test]
    fn debug_shows_no_hash() {
        let (db, _) = HtpasswdDb::parse(&format!("alice:{BC}\n"), "f").unwrap();
        let shown = format!("{db:?}");
        assert!(
            !shown.contains("dqrJ") && shown.contains("users: 1"),
            "{shown}"
        );
    }
}
