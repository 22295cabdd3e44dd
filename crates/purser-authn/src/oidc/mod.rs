//! OIDC workload identity: a CI job's ID token (GitHub Actions, GitLab CI, a Kubernetes
//! service account) as the password of a configured user name, verified against its issuer's
//! published keys, its claims made into the account, groups and labels the policy sees.
//!
//! The token's `iss` picks the issuer among those configured; an unknown one is refused without
//! any network call, and nothing is ever fetched from an address the token names. The keys
//! come through an [`JwksSource`] per issuer (the server's: OIDC discovery over HTTPS), kept in
//! memory, refreshed on a schedule ([`OidcAuthenticator::refresh_due`]) and when a token names
//! a key id the set does not hold, at most once per [`KeyTiming::min_refetch`], so a stream of
//! tokens with invented key ids costs at most one fetch per interval. While an issuer has no
//! keys younger than [`KeyTiming::max_age`], its logins are *unavailable* (503), never refused.

mod keys;
mod template;

pub use keys::MAX_KEYS;
pub use template::{valid_claim_name, ClaimGlob, Template, MAX_CLAIM_VALUE};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{Algorithm, Validation};
use purser_core::{
    Authenticator, AuthnOutcome, BackendError, BackendName, Clock, Credentials, Identity,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use keys::{family, parse_jwks, Key};

/// The backend's name.
pub const NAME: BackendName = "oidc";
/// Longest token accepted, in bytes (CI ID tokens are one to two KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest discovery or JWKS document read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// Most tokens remembered as verified; past it the memory is emptied and refills.
pub const MAX_VERIFIED: usize = 10_000;

/// The algorithms an issuer may be configured with: asymmetric signatures only.
pub const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Reads an algorithm of [`ALGORITHMS`]; `None` for anything else (`none`, `HS256`).
pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    if !ALGORITHMS.contains(&s) {
        return None;
    }
    s.parse::<Algorithm>().ok().filter(|a| family(*a).is_some())
}

/// One configured issuer, compiled.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    /// Compared byte for byte with the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must hold one of these.
    pub audience: Vec<String>,
    /// The Basic user name that marks a login with this issuer's tokens.
    pub username: String,
    pub account: Template,
    /// Each rendered to one group; a template whose claim is missing gives none.
    pub groups: Vec<Template>,
    /// Each rendered to one label; a template whose claim is missing gives none.
    pub labels: BTreeMap<String, Template>,
    /// Claim name -> glob: every one must match.
    pub require: Vec<(String, ClaimGlob)>,
    pub algorithms: Vec<Algorithm>,
    /// Refuse tokens whose `exp - iat` is longer; `None`: no bound.
    pub max_token_lifetime: Option<Duration>,
}

/// When keys are fetched and how long they serve.
#[derive(Clone, Copy, Debug)]
pub struct KeyTiming {
    /// Fetch the keys again this long after the last successful fetch.
    pub refresh: Duration,
    /// At most one fetch per issuer in this long, whatever asks for it (a failed fetch, unknown
    /// key ids).
    pub min_refetch: Duration,
    /// Keys not refreshed for this long are not used: logins answer unavailable.
    pub max_age: Duration,
}

impl Default for KeyTiming {
    fn default() -> Self {
        KeyTiming {
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(30),
            max_age: Duration::from_secs(86_400),
        }
    }
}

/// Where an issuer's JWKS comes from: the server fetches it through OIDC discovery over HTTPS.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The JWKS document's bytes (at most [`MAX_DOCUMENT_BYTES`]); `Err` says why not, naming
    /// no secret.
    async fn fetch(&self) -> Result<Vec<u8>, String>;
}

/// What the backend reports, for metrics.
pub trait OidcEvents: Send + Sync {
    /// A login with a token of `issuer` (`""` when the token named none configured): `outcome`
    /// is `accepted`, `rejected` or `unavailable`.
    fn login(&self, issuer: &str, outcome: &'static str);
    /// A fetch of `issuer`'s keys: `success` or `failure`.
    fn fetch(&self, issuer: &str, outcome: &'static str);
}

/// Events that go nowhere.
pub struct NoEvents;

impl OidcEvents for NoEvents {
    fn login(&self, _: &str, _: &'static str) {}
    fn fetch(&self, _: &str, _: &'static str) {}
}

/// The keys of one issuer as last fetched.
struct KeySet {
    keys: Vec<Key>,
    fetched: Instant,
}

#[derive(Default)]
struct KeyState {
    set: Option<Arc<KeySet>>,
    /// When the last fetch started, successful or not: the rate limit.
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

struct Issuer {
    settings: IssuerSettings,
    source: Arc<dyn JwksSource>,
    state: Mutex<KeyState>,
    /// One fetch at a time per issuer: concurrent logins that need keys wait for it.
    fetching: tokio::sync::Mutex<()>,
}

/// The authenticator.
pub struct OidcAuthenticator {
    issuers: Vec<Issuer>,
    /// Tokens already verified, by a SHA-256 of the user name and the token: a CI job sends
    /// one ID token for each of its requests (docker asks for a token per repository and
    /// action), and each is verified once. An entry serves only with the very key set it was
    /// verified against (a refetch re-verifies) and only until the token's `exp`.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    timing: KeyTiming,
    clock: Arc<dyn Clock>,
    events: Arc<dyn OidcEvents>,
}

impl std::fmt::Debug for OidcAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcAuthenticator")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| &i.settings.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A token verified once.
struct Verified {
    issuer: usize,
    identity: Identity,
    exp: i64,
    keys: Arc<KeySet>,
}

/// Why a token was refused: the reason is shown to the client (it names no secret and no key).
#[derive(Debug)]
struct Refusal(&'static str);

enum Failure {
    Refused(Refusal),
    Unavailable(String),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

impl OidcAuthenticator {
    /// The backend over `issuers`, each with the source of its keys. Nothing is fetched here:
    /// the first fetch happens at the first [`OidcAuthenticator::refresh_due`] or login.
    pub fn new(
        issuers: Vec<(IssuerSettings, Arc<dyn JwksSource>)>,
        timing: KeyTiming,
        clock: Arc<dyn Clock>,
        events: Arc<dyn OidcEvents>,
    ) -> Self {
        OidcAuthenticator {
            issuers: issuers
                .into_iter()
                .map(|(settings, source)| Issuer {
                    settings,
                    source,
                    state: Mutex::new(KeyState::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            verified: Mutex::new(HashMap::new()),
            timing,
            clock,
            events,
        }
    }

    /// The identity of a token verified before, while its key set is the issuer's current one
    /// and it has not expired.
    fn remembered(&self, key: &[u8; 32]) -> Option<(usize, Identity)> {
        let memory = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let v = memory.get(key)?;
        let current = self.usable(&self.issuers[v.issuer])?;
        let fresh = Arc::ptr_eq(&current, &v.keys)
            && self.now_secs() <= v.exp.saturating_add(LEEWAY.as_secs() as i64);
        fresh.then(|| (v.issuer, v.identity.clone()))
    }

    fn remember(&self, key: [u8; 32], v: Verified) {
        let mut memory = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if memory.len() >= MAX_VERIFIED {
            memory.clear();
        }
        memory.insert(key, v);
    }

    /// Whether `name` is the user name of an issuer (a login this backend answers); the empty
    /// name, the token exchange's, matches every issuer.
    pub fn knows_username(&self, name: &str) -> bool {
        name.is_empty() || self.issuers.iter().any(|i| i.settings.username == name)
    }

    /// Fetches the keys of every issuer whose keys are due (never fetched, older than
    /// [`KeyTiming::refresh`]) and not fetched within [`KeyTiming::min_refetch`]. Called by the
    /// server once a second.
    pub async fn refresh_due(&self) {
        for issuer in &self.issuers {
            let due = {
                let st = self.lock(issuer);
                let now = self.clock.now();
                let allowed = st
                    .last_attempt
                    .is_none_or(|t| now.duration_since(t) >= self.timing.min_refetch);
                let old = st
                    .set
                    .as_ref()
                    .is_none_or(|s| now.duration_since(s.fetched) >= self.timing.refresh);
                allowed && old
            };
            if due {
                self.fetch(issuer).await;
            }
        }
    }

    /// Each issuer with the age of its keys (`None`: never fetched).
    pub fn key_ages(&self) -> Vec<(String, Option<Duration>)> {
        let now = self.clock.now();
        self.issuers
            .iter()
            .map(|i| {
                let st = self.lock(i);
                (
                    i.settings.issuer.clone(),
                    st.set.as_ref().map(|s| now.duration_since(s.fetched)),
                )
            })
            .collect()
    }

    /// The issuers' names, as configured.
    pub fn issuer_names(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| i.settings.issuer.clone())
            .collect()
    }

    /// One line per issuer without fresh keys, for `/readyz`.
    pub fn problems(&self) -> Vec<String> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for i in &self.issuers {
            let st = self.lock(i);
            let fresh = st
                .set
                .as_ref()
                .is_some_and(|s| now.duration_since(s.fetched) < self.timing.max_age);
            if !fresh {
                let why = st.last_error.as_deref().unwrap_or("not fetched yet");
                out.push(format!(
                    "OIDC issuer {} has no fresh keys ({why}): its logins answer 503",
                    i.settings.issuer
                ));
            }
        }
        out
    }

    fn lock<'a>(&self, issuer: &'a Issuer) -> std::sync::MutexGuard<'a, KeyState> {
        issuer.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The issuer's keys while they are younger than [`KeyTiming::max_age`].
    fn usable(&self, issuer: &Issuer) -> Option<Arc<KeySet>> {
        let st = self.lock(issuer);
        let now = self.clock.now();
        st.set
            .as_ref()
            .filter(|s| now.duration_since(s.fetched) < self.timing.max_age)
            .cloned()
    }

    /// One fetch, if the rate limit allows it now; true when it happened and succeeded.
    async fn fetch(&self, issuer: &Issuer) -> bool {
        let _one = issuer.fetching.lock().await;
        {
            let mut st = self.lock(issuer);
            let now = self.clock.now();
            if st
                .last_attempt
                .is_some_and(|t| now.duration_since(t) < self.timing.min_refetch)
            {
                return false;
            }
            st.last_attempt = Some(now);
        }
        let name = &issuer.settings.issuer;
        let result = issuer
            .source
            .fetch()
            .await
            .and_then(|bytes| parse_jwks(&bytes));
        let mut st = self.lock(issuer);
        match result {
            Ok(keys) => {
                tracing::info!(issuer = %name, keys = keys.len(), "OIDC keys fetched");
                st.set = Some(Arc::new(KeySet {
                    keys,
                    fetched: self.clock.now(),
                }));
                st.last_error = None;
                self.events.fetch(name, "success");
                true
            }
            Err(e) => {
                tracing::warn!(issuer = %name, error = %e, "OIDC keys could not be fetched");
                st.last_error = Some(e);
                self.events.fetch(name, "failure");
                false
            }
        }
    }

    /// The keys to verify a token with key id `kid` and algorithm `alg`: fetched first when
    /// there are none usable; fetched again (rate-limited) when none of them fits.
    async fn keys_for(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, Failure> {
        let fits = |set: &KeySet| {
            set.keys
                .iter()
                .any(|k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
        };
        if let Some(s) = self.usable(issuer) {
            if fits(&s) {
                return Ok(s);
            }
        }
        // An unknown key id, or no usable keys: one fetch, when the rate limit allows.
        self.fetch(issuer).await;
        self.usable(issuer).ok_or_else(|| {
            let why = self
                .lock(issuer)
                .last_error
                .clone()
                .unwrap_or_else(|| "keys not fetched yet".into());
            Failure::Unavailable(format!(
                "no fresh keys for issuer {}: {why}",
                issuer.settings.issuer
            ))
        })
    }

    fn now_secs(&self) -> i64 {
        self.clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    async fn verify(
        &self,
        username: &str,
        token: &str,
    ) -> Result<Verified, (Option<usize>, Failure)> {
        let refused = |r: &'static str| (None, Failure::Refused(Refusal(r)));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused("the OIDC token is too long"));
        }
        // The issuer first, read without trusting anything: it only picks which configured
        // issuer's keys and rules apply. Nothing is fetched for an issuer not configured.
        let iss = unverified_issuer(token).ok_or_else(|| refused("the OIDC token is not a JWT"))?;
        let Some(index) = self.issuers.iter().position(|i| {
            i.settings.issuer == iss && (username.is_empty() || i.settings.username == username)
        }) else {
            return Err(refused("the OIDC token's issuer is not accepted here"));
        };
        let issuer = &self.issuers[index];
        let s = &issuer.settings;
        let with = |f: Failure| (Some(index), f);
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            with(
                Refusal("the OIDC token's header is malformed or its algorithm is not accepted")
                    .into(),
            )
        })?;
        if !s.algorithms.contains(&header.alg) {
            return Err(with(
                Refusal("the OIDC token's algorithm is not accepted for its issuer").into(),
            ));
        }
        let set = self
            .keys_for(issuer, header.kid.as_deref(), header.alg)
            .await
            .map_err(with)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_audience(&s.audience);
        validation.set_issuer(&[&s.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let candidates = set
            .keys
            .iter()
            .filter(|k| k.fits(header.alg) && (header.kid.is_none() || k.kid == header.kid));
        let mut claims: Option<Map<String, Value>> = None;
        let mut last = "the OIDC token's key is not among its issuer's keys";
        for k in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidAudience => "the OIDC token's audience is not accepted",
                        K::InvalidIssuer => "the OIDC token's issuer does not match",
                        K::MissingRequiredClaim(_) => {
                            "the OIDC token lacks a required claim (exp, iss, aud)"
                        }
                        K::InvalidSignature => "the OIDC token's signature is not valid",
                        _ => "the OIDC token could not be verified",
                    };
                }
            }
        }
        let claims = claims.ok_or_else(|| with(Refusal(last).into()))?;
        self.check_times(s, &claims).map_err(|r| with(r.into()))?;
        for (name, glob) in &s.require {
            let ok = template::claim_text(&claims, name).is_some_and(|v| glob.matches(&v));
            if !ok {
                return Err(with(
                    Refusal("the OIDC token's claims do not meet this issuer's requirements")
                        .into(),
                ));
            }
        }
        let account = s.account.render(&claims).ok_or_else(|| {
            with(Refusal("the OIDC token lacks the claims of the account").into())
        })?;
        let mut identity = Identity::new(account, Vec::new());
        for g in &s.groups {
            if let Some(g) = g.render(&claims) {
                if !identity.groups.contains(&g) {
                    identity.groups.push(g);
                }
            }
        }
        for (k, t) in &s.labels {
            if let Some(v) = t.render(&claims) {
                identity.labels.insert(k.clone(), v);
            }
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(Verified {
            issuer: index,
            identity,
            exp,
            keys: set,
        })
    }

    fn check_times(&self, s: &IssuerSettings, claims: &Map<String, Value>) -> Result<(), Refusal> {
        let now = self.now_secs();
        let leeway = LEEWAY.as_secs() as i64;
        let num = |name: &str| claims.get(name).and_then(Value::as_i64);
        let exp = num("exp").ok_or(Refusal("the OIDC token's exp is not a number"))?;
        if now > exp.saturating_add(leeway) {
            return Err(Refusal("the OIDC token has expired"));
        }
        if claims.contains_key("nbf") {
            let nbf = num("nbf").ok_or(Refusal("the OIDC token's nbf is not a number"))?;
            if nbf > now.saturating_add(leeway) {
                return Err(Refusal("the OIDC token is not valid yet"));
            }
        }
        let iat = match claims.get("iat") {
            None => None,
            Some(_) => Some(num("iat").ok_or(Refusal("the OIDC token's iat is not a number"))?),
        };
        if let Some(iat) = iat {
            if iat > now.saturating_add(leeway) {
                return Err(Refusal("the OIDC token is issued in the future"));
            }
        }
        if let Some(max) = s.max_token_lifetime {
            let Some(iat) = iat else {
                return Err(Refusal(
                    "the OIDC token has no iat, so its lifetime cannot be checked",
                ));
            };
            if exp.saturating_sub(iat) > max.as_secs() as i64 {
                return Err(Refusal(
                    "the OIDC token lives longer than this issuer's max_token_lifetime",
                ));
            }
        }
        Ok(())
    }
}

/// The `iss` of a compact JWS, read without verifying anything; `None` when it is not one.
fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let bytes = BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

#[async_trait]
impl Authenticator for OidcAuthenticator {
    fn name(&self) -> BackendName {
        NAME
    }

    async fn authenticate(&self, creds: &Credentials) -> Result<AuthnOutcome, BackendError> {
        if !self.knows_username(&creds.username) {
            return Ok(AuthnOutcome::UnknownUser);
        }
        let token = creds.password.expose();
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(creds.username.as_bytes());
            h.update([0u8]);
            h.update(token.as_bytes());
            h.finalize().into()
        };
        if let Some((index, identity)) = self.remembered(&key) {
            self.events
                .login(&self.issuers[index].settings.issuer, "accepted");
            return Ok(AuthnOutcome::Accepted(identity));
        }
        match self.verify(&creds.username, token).await {
            Ok(v) => {
                let (index, identity) = (v.issuer, v.identity.clone());
                self.remember(key, v);
                self.events
                    .login(&self.issuers[index].settings.issuer, "accepted");
                Ok(AuthnOutcome::Accepted(identity))
            }
            Err((index, failure)) => {
                let issuer = index.map_or("", |i| self.issuers[i].settings.issuer.as_str());
                match failure {
                    Failure::Refused(Refusal(reason)) => {
                        tracing::info!(issuer, reason, "OIDC login refused");
                        self.events.login(issuer, "rejected");
                        Ok(AuthnOutcome::Refused {
                            account: None,
                            reason: reason.to_string(),
                        })
                    }
                    Failure::Unavailable(reason) => {
                        self.events.login(issuer, "unavailable");
                        Err(BackendError::Unavailable {
                            backend: NAME,
                            reason,
                        })
                    }
                }
            }
        }
    }

    /// There is no account to look up: an OIDC login gets no refresh token.
    async fn lookup(&self, _account: &str) -> Result<Option<Identity>, BackendError> {
        Ok(None)
    }

    /// Always ready: an issuer without keys is reported by [`OidcAuthenticator::problems`] as
    /// a degraded part, and its logins answer 503; the other backends serve on.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
