//! Users written in the configuration, with bcrypt hashes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use purser_core::{Authenticator, AuthnOutcome, BackendError, BackendName, Credentials, Identity};

use crate::error::AuthnError;
use crate::hash::{bcrypt_cost, credential_stamp, dummy_bcrypt, dummy_cost, verify_bcrypt};
use crate::hash_work::{
    bcrypt_rounds, hash_limiter, refused, run_limited, HashLimiter, HashWork, HashWorkSnapshot,
};

/// `purser hash-password` writes the hashes this backend reads; kept here where callers look.
pub use crate::hash::hash_password;

/// One configured user. `Debug` hides the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticUserEntry {
    pub name: String,
    /// A bcrypt hash (`purser hash-password`, `htpasswd -nB`).
    pub password_hash: String,
    pub groups: Vec<String>,
}

impl fmt::Debug for StaticUserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticUserEntry")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("groups", &self.groups)
            .finish()
    }
}

struct StaticUser {
    hash: String,
    cost: u32,
    groups: Vec<String>,
}

struct Users {
    by_name: HashMap<String, StaticUser>,
    dummy: String,
    dummy_cost: u32,
}

/// The `static` backend: a fixed set of users with bcrypt hashes.
pub struct StaticAuthenticator {
    users: Arc<Users>,
    work: Arc<HashWork>,
    limiter: Arc<HashLimiter>,
}

impl fmt::Debug for StaticAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("StaticAuthenticator")
            .field("users", &names)
            .finish()
    }
}

impl StaticAuthenticator {
    /// Checks every hash now, so a typo in the config fails at start, naming the user.
    pub fn new(users: Vec<StaticUserEntry>) -> Result<Self, AuthnError> {
        let mut by_name = HashMap::with_capacity(users.len());
        let mut costs = Vec::new();
        for entry in users {
            if entry.name.is_empty() {
                return Err(AuthnError::EmptyStaticUser);
            }
            let Some(cost) = bcrypt_cost(entry.password_hash.trim()) else {
                return Err(AuthnError::InvalidStaticHash { user: entry.name });
            };
            if by_name.contains_key(&entry.name) {
                return Err(AuthnError::DuplicateStaticUser { user: entry.name });
            }
            costs.push(cost);
            let mut groups = entry.groups;
            groups.sort();
            groups.dedup();
            by_name.insert(
                entry.name,
                StaticUser {
                    hash: entry.password_hash.trim().to_owned(),
                    cost,
                    groups,
                },
            );
        }
        // Unknown users cost what the most common known user costs.
        let dummy_cost = dummy_cost(costs);
        Ok(StaticAuthenticator {
            users: Arc::new(Users {
                by_name,
                dummy: dummy_bcrypt(dummy_cost),
                dummy_cost,
            }),
            work: Arc::new(HashWork::default()),
            limiter: hash_limiter(),
        })
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

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.users.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.by_name.is_empty()
    }
}

#[async_trait]
impl Authenticator for StaticAuthenticator {
    fn name(&self) -> BackendName {
        "static"
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        let users = Arc::clone(&self.users);
        let creds = creds.clone();
        let cost = match users.by_name.get(&creds.username) {
            Some(user) => user.cost,
            None => users.dummy_cost,
        };
        run_limited(
            &self.limiter,
            &self.work,
            bcrypt_rounds(cost),
            move |work| {
                let password = creds.password.expose().as_bytes();
                match users.by_name.get(&creds.username) {
                    Some(user) => {
                        if verify_bcrypt(password, &user.hash, user.cost, work) {
                            AuthnOutcome::Accepted(Identity::new(
                                creds.username.clone(),
                                user.groups.clone(),
                            ))
                        } else {
                            AuthnOutcome::REJECTED
                        }
                    }
                    None => {
                        verify_bcrypt(password, &users.dummy, users.dummy_cost, work);
                        AuthnOutcome::UnknownUser
                    }
                }
            },
        )
        .await
        .map_err(|e| refused("static", e))
    }

    async fn lookup(&self, account: &str) -> Result<Option<Identity>, BackendError> {
        Ok(self
            .users
            .by_name
            .get(account)
            .map(|u| Identity::new(account, u.groups.clone())))
    }

    fn credential_stamp(&self, account: &str) -> Option<String> {
        self.users
            .by_name
            .get(account)
            .map(|u| credential_stamp(u.hash.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sixteen logins at once (known, wrong and unknown users) under a limiter of one permit:
    /// the checks queue, never two hashes run at the same time, and each still runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_limiter_of_one_runs_one_check_at_a_time() {
        let auth = StaticAuthenticator::new(vec![StaticUserEntry {
            name: "alice".into(),
            password_hash: hash_password("right", 6).unwrap(),
            groups: vec![],
        }])
        .unwrap();
        let limiter = Arc::new(crate::hash_work::HashLimiter::new(
            1,
            std::time::Duration::from_secs(3600),
        ));
        let auth = Arc::new(auth.with_hash_limiter(Arc::clone(&limiter)));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move {
                    let (user, pass) = match i % 3 {
                        0 => ("alice", "right"),
                        1 => ("alice", "wrong"),
                        _ => ("nobody", "right"),
                    };
                    auth.authenticate(&Credentials::new(user, pass)).await
                })
            })
            .collect();
        let mut outcomes = [0usize; 3];
        for task in tasks {
            match task.await.unwrap().unwrap() {
                AuthnOutcome::Accepted(_) => outcomes[0] += 1,
                AuthnOutcome::Rejected { .. } | AuthnOutcome::Refused { .. } => outcomes[1] += 1,
                AuthnOutcome::UnknownUser => outcomes[2] += 1,
            }
        }
        assert_eq!(outcomes, [6, 5, 5]);
        assert_eq!(auth.hash_work().bcrypt_checks, 16);
        assert_eq!(auth.work.peak_in_flight(), 1);
        assert_eq!(limiter.available_permits(), 1, "every permit is given back");
    }

    #[test]
    fn bad_hash_names_the_user_not_the_hash() {
        let err = StaticAuthenticator::new(vec![StaticUserEntry {
            name: "admin".into(),
            password_hash: "hunter2-not-a-hash".into(),
            groups: vec![],
        }])
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"admin\""), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn hash_password_round_trips_and_bounds() {
        let h = hash_password("p:ss wörd", 4).unwrap();
        assert!(h.starts_with("$2y$04$"), "{h}");
        assert!(bcrypt::verify("p:ss wörd", &h).unwrap());
        assert!(hash_password("x", 3).is_err());
        assert!(hash_password("x", 32).is_err());
        assert!(hash_password("", 4).is_err());
        let long = "a".repeat(73);
        let err = hash_password(&long, 4).unwrap_err().to_string();
        assert!(err.contains("73 bytes") && !err.contains("aaaa"), "{err}");
    }

    #[test]
    fn duplicates_and_empty_names_are_refused() {
        let h = hash_password("x", 4).unwrap();
        let e = |name: &str| StaticUserEntry {
            name: name.into(),
            password_hash: h.clone(),
            groups: vec![],
        };
        assert!(matches!(
            StaticAuthenticator::new(vec![e("a"), e("a")]),
            Err(AuthnError::DuplicateStaticUser { .. })
        ));
        assert!(matches!(
            StaticAuthenticator::new(vec![e("")]),
            Err(AuthnError::EmptyStaticUser)
        ));
        let shown = format!("{:?}", e("a"));
        assert!(!shown.contains(&h[7..]), "{shown}");
    }
}
