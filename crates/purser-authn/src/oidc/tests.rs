//! The verification rules, with tokens signed here by keys made here and a JWKS served from
//! memory: every refusal of the list, the key rotation and the fetch rate limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use jsonwebtoken::{EncodingKey, Header};
use purser_core::ManualClock;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::json;

use super::*;

const ISS: &str = "https://issuer.test";
const OTHER_ISS: &str = "https://other.test";
const AUD: &str = "registry.test";

struct TestKey {
    private_pem: String,
    public_pem: String,
    jwk: Value,
}

fn make_key(kid: &str) -> TestKey {
    let mut rng = rand::thread_rng();
    let k = RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let n = BASE64URL_NOPAD.encode(&k.n().to_bytes_be());
    let e = BASE64URL_NOPAD.encode(&k.e().to_bytes_be());
    TestKey {
        private_pem: k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e}),
    }
}

/// Two keys, made once per test binary (RSA generation is the slow part).
fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| (make_key("k1"), make_key("k2")))
}

/// A JWKS served from memory, counting fetches; `fail` makes it unreachable.
struct MemJwks {
    doc: Mutex<Value>,
    fetches: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
}

impl MemJwks {
    fn new(keys: &[&TestKey]) -> Arc<MemJwks> {
        Arc::new(MemJwks {
            doc: Mutex::new(
                json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
            ),
            fetches: AtomicUsize::new(0),
            fail: false.into(),
        })
    }
    fn set(&self, keys: &[&TestKey]) {
        *self.doc.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }
    fn count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JwksSource for MemJwks {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err("connection refused".into());
        }
        Ok(serde_json::to_vec(&*self.doc.lock().unwrap()).unwrap())
    }
}

fn settings(issuer: &str, username: &str) -> IssuerSettings {
    IssuerSettings {
        issuer: issuer.into(),
        audience: vec![AUD.into()],
        username: username.into(),
        account: Template::parse("github:${claims.repository}").unwrap(),
        groups: vec![Template::parse("${claims.repository_owner}").unwrap()],
        labels: BTreeMap::from([
            (
                "repository".into(),
                Template::parse("${claims.repository}").unwrap(),
            ),
            ("ref".into(), Template::parse("${claims.ref}").unwrap()),
        ]),
        require: vec![
            ("repository_owner".into(), ClaimGlob::new("acme")),
            ("ref".into(), ClaimGlob::new("refs/heads/*")),
        ],
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        max_token_lifetime: Some(Duration::from_secs(3600)),
    }
}

struct Fixture {
    oidc: OidcAuthenticator,
    jwks: Arc<MemJwks>,
    other: Arc<MemJwks>,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let (k1, _) = keys();
    let jwks = MemJwks::new(&[k1]);
    let other = MemJwks::new(&[k1]);
    let clock = Arc::new(ManualClock::new());
    let oidc = OidcAuthenticator::new(
        vec![
            (settings(ISS, "oidc"), jwks.clone() as Arc<dyn JwksSource>),
            (
                settings(OTHER_ISS, "oidc"),
                other.clone() as Arc<dyn JwksSource>,
            ),
        ],
        KeyTiming {
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
        },
        clock.clone(),
        Arc::new(NoEvents),
    );
    Fixture {
        oidc,
        jwks,
        other,
        clock,
    }
}

impl Fixture {
    fn now(&self) -> i64 {
        self.clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn claims(&self) -> Value {
        let now = self.now();
        json!({
            "iss": ISS, "aud": [AUD, "other"], "sub": "repo:acme/app:ref:refs/heads/main",
            "iat": now, "nbf": now, "exp": now + 600, "jti": "j1",
            "repository": "acme/app", "repository_owner": "acme", "ref": "refs/heads/main",
        })
    }

    async fn login(&self, token: &str) -> Result<AuthnOutcome, BackendError> {
        self.oidc
            .authenticate(&Credentials::new("oidc", token))
            .await
    }

    async fn refused(&self, token: &str, want: &str) {
        match self.login(token).await {
            Ok(AuthnOutcome::Refused { reason, .. }) => {
                assert!(reason.contains(want), "{reason:?} should say {want:?}")
            }
            other => panic!("expected a refusal saying {want:?}, got {other:?}"),
        }
    }
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_string);
    h.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn good(f: &Fixture) -> String {
    let (k1, _) = keys();
    sign(k1, Some("k1"), &f.claims())
}

fn with(f: &Fixture, patch: Value) -> String {
    let (k1, _) = keys();
    let mut c = f.claims();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    sign(k1, Some("k1"), &c)
}

/// A compact JWS with the given header and claims and a made-up signature part.
fn raw(header: Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        BASE64URL_NOPAD.encode(&serde_json::to_vec(&header).unwrap()),
        BASE64URL_NOPAD.encode(&serde_json::to_vec(claims).unwrap()),
        BASE64URL_NOPAD.encode(sig)
    )
}

#[tokio::test]
async fn a_good_token_gives_account_groups_and_labels() {
    let f = fixture();
    let Ok(AuthnOutcome::Accepted(id)) = f.login(&good(&f)).await else {
        panic!("a good token must be accepted");
    };
    assert_eq!(id.account, "github:acme/app");
    assert_eq!(id.groups, ["acme"]);
    assert_eq!(id.labels["repository"], "acme/app");
    assert_eq!(id.labels["ref"], "refs/heads/main");
    assert_eq!(f.jwks.count(), 1, "one fetch, at the first login");
    // Cached keys: no more fetches.
    for _ in 0..5 {
        assert!(matches!(
            f.login(&good(&f)).await,
            Ok(AuthnOutcome::Accepted(_))
        ));
    }
    assert_eq!(f.jwks.count(), 1);
    // Another user name is not this backend's.
    let other = f
        .oidc
        .authenticate(&Credentials::new("alice", good(&f)))
        .await;
    assert_eq!(other, Ok(AuthnOutcome::UnknownUser));
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let f = fixture();
    f.refused(&with(&f, json!({"aud": "elsewhere"})), "audience")
        .await;
    f.refused(&with(&f, json!({"aud": null})), "required claim")
        .await;
}

#[tokio::test]
async fn expired_not_yet_valid_and_future_tokens_are_refused() {
    let f = fixture();
    let now = f.now();
    f.refused(
        &with(&f, json!({"exp": now - 61, "iat": now - 600})),
        "expired",
    )
    .await;
    f.refused(&with(&f, json!({"nbf": now + 120})), "not valid yet")
        .await;
    f.refused(&with(&f, json!({"iat": now + 120})), "future")
        .await;
    // Within the leeway: accepted.
    let ok = with(&f, json!({"exp": now - 30, "iat": now - 600}));
    assert!(matches!(f.login(&ok).await, Ok(AuthnOutcome::Accepted(_))));
    // The clock moves: the good token expires.
    let t = good(&f);
    f.clock.advance(Duration::from_secs(600 + 61));
    f.jwks.set(&[&keys().0]);
    f.refused(&t, "expired").await;
}

#[tokio::test]
async fn a_lifetime_over_the_maximum_is_refused() {
    let f = fixture();
    let now = f.now();
    f.refused(&with(&f, json!({"exp": now + 3601})), "max_token_lifetime")
        .await;
    f.refused(&with(&f, json!({"iat": null})), "no iat").await;
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_without_a_fetch() {
    let f = fixture();
    f.refused(
        &with(&f, json!({"iss": "https://evil.test"})),
        "issuer is not accepted",
    )
    .await;
    f.refused(&with(&f, json!({"iss": null})), "not a JWT")
        .await;
    f.refused("not.a.token", "not a JWT").await;
    assert_eq!(f.jwks.count() + f.other.count(), 0, "nothing fetched");
}

#[tokio::test]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let f = fixture();
    let claims = f.claims();
    f.refused(
        &raw(json!({"alg": "none", "typ": "JWT"}), &claims, b""),
        "algorithm",
    )
    .await;
    // HS256 "signed" with the issuer's public key as the secret, the classic confusion.
    let (k1, _) = keys();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    for secret in [
        k1.public_pem.as_bytes(),
        k1.jwk["n"].as_str().unwrap().as_bytes(),
    ] {
        let t = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap();
        f.refused(&t, "algorithm").await;
    }
    assert_eq!(f.jwks.count(), 0, "refused before any key was needed");
}

#[tokio::test]
async fn a_kid_not_in_the_jwks_and_another_key_are_refused() {
    let f = fixture();
    let (k1, k2) = keys();
    assert!(matches!(
        f.login(&good(&f)).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
    // Signed by a key the issuer does not publish, under its own kid and under k1's.
    f.refused(&sign(k2, Some("k2"), &f.claims()), "not among")
        .await;
    f.refused(&sign(k2, Some("k1"), &f.claims()), "signature")
        .await;
    // No kid: every key of the set is tried, none verifies.
    f.refused(&sign(k2, None, &f.claims()), "signature").await;
    assert!(matches!(
        f.login(&sign(k1, None, &f.claims())).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
}

#[tokio::test]
async fn a_claim_failing_require_is_refused() {
    let f = fixture();
    f.refused(&with(&f, json!({"ref": "refs/tags/v1"})), "requirements")
        .await;
    f.refused(
        &with(&f, json!({"repository_owner": "evil"})),
        "requirements",
    )
    .await;
    f.refused(&with(&f, json!({"ref": null})), "requirements")
        .await;
    f.refused(&with(&f, json!({"repository": null})), "account")
        .await;
}

#[tokio::test]
async fn a_token_of_one_issuer_claiming_another_is_refused() {
    let f = fixture();
    let (_, k2) = keys();
    // The other issuer's keys hold k2; a token signed by k2 names ISS (whose keys do not).
    f.other.set(&[k2]);
    f.refused(&sign(k2, Some("k2"), &f.claims()), "not among")
        .await;
    // The same token body naming OTHER_ISS is accepted by OTHER_ISS only.
    let mut c = f.claims();
    c["iss"] = json!(OTHER_ISS);
    assert!(matches!(
        f.login(&sign(k2, Some("k2"), &c)).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
}

#[tokio::test]
async fn keys_rotate_after_one_refetch_and_invented_kids_cost_one_fetch() {
    let f = fixture();
    let (k1, k2) = keys();
    assert!(matches!(
        f.login(&good(&f)).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
    assert_eq!(f.jwks.count(), 1);
    // The issuer rotates to k2; past the refetch interval, a k2 token causes one fetch.
    f.jwks.set(&[k2, k1]);
    f.clock.advance(Duration::from_secs(31));
    let t2 = sign(k2, Some("k2"), &f.claims());
    assert!(matches!(f.login(&t2).await, Ok(AuthnOutcome::Accepted(_))));
    assert_eq!(f.jwks.count(), 2);
    // A hundred tokens with invented key ids: at most one fetch per interval.
    f.clock.advance(Duration::from_secs(31));
    let body = f.claims();
    for i in 0..100 {
        let kid = format!("invented-{i}-{}", rand::random::<u64>());
        let t = raw(json!({"alg": "RS256", "kid": kid}), &body, b"sig");
        f.refused(&t, "not among").await;
    }
    assert_eq!(f.jwks.count(), 3, "one fetch for a hundred invented kids");
}

#[tokio::test]
async fn no_keys_is_unavailable_and_cached_keys_serve_until_stale() {
    let f = fixture();
    f.jwks.fail.store(true, Ordering::SeqCst);
    let e = f.login(&good(&f)).await;
    assert!(matches!(e, Err(BackendError::Unavailable { .. })), "{e:?}");
    assert_eq!(f.oidc.problems().len(), 2, "{:?}", f.oidc.problems());
    // Back: the next login past the rate limit fetches and is accepted.
    f.jwks.fail.store(false, Ordering::SeqCst);
    f.clock.advance(Duration::from_secs(31));
    assert!(matches!(
        f.login(&good(&f)).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
    // Down again: the cached keys serve while younger than max_age...
    f.jwks.fail.store(true, Ordering::SeqCst);
    f.clock.advance(Duration::from_secs(1800));
    f.oidc.refresh_due().await;
    assert!(matches!(
        f.login(&good(&f)).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
    // ...then logins are unavailable, not refused.
    f.clock.advance(Duration::from_secs(1801));
    f.oidc.refresh_due().await;
    assert!(matches!(
        f.login(&good(&f)).await,
        Err(BackendError::Unavailable { .. })
    ));
    // And they resume once the issuer answers.
    f.jwks.fail.store(false, Ordering::SeqCst);
    f.clock.advance(Duration::from_secs(31));
    f.oidc.refresh_due().await;
    assert!(matches!(
        f.login(&good(&f)).await,
        Ok(AuthnOutcome::Accepted(_))
    ));
}

#[tokio::test]
async fn oversized_tokens_and_symmetric_keys_are_refused() {
    let f = fixture();
    f.refused(&"a".repeat(MAX_TOKEN_BYTES + 1), "too long")
        .await;
    // A JWKS of only a symmetric key has no usable key.
    f.jwks.set(&[]);
    *f.jwks.doc.lock().unwrap() = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]});
    assert!(matches!(
        f.login(&good(&f)).await,
        Err(BackendError::Unavailable { .. })
    ));
    assert!(parse_algorithm("none").is_none());
    assert!(parse_algorithm("HS256").is_none());
    assert_eq!(parse_algorithm("ES256"), Some(Algorithm::ES256));
}

#[tokio::test]
async fn a_verified_token_is_remembered_until_its_exp_and_only_with_its_keys() {
    let f = fixture();
    let (k1, k2) = keys();
    let now = f.now();
    let t = with(&f, json!({"exp": now + 100, "iat": now}));
    assert!(matches!(f.login(&t).await, Ok(AuthnOutcome::Accepted(_))));
    assert_eq!(f.oidc.verified.lock().unwrap().len(), 1);
    // Refusals are never remembered.
    f.refused(&with(&f, json!({"aud": "elsewhere"})), "audience")
        .await;
    assert_eq!(f.oidc.verified.lock().unwrap().len(), 1);
    // The same token again: answered from memory, same identity.
    let Ok(AuthnOutcome::Accepted(id)) = f.login(&t).await else {
        panic!("remembered");
    };
    assert_eq!(id.labels["repository"], "acme/app");
    // Past its exp (and the leeway) it is refused, remembered or not.
    f.clock.advance(Duration::from_secs(100 + 61));
    f.refused(&t, "expired").await;
    // A refetch of the keys re-verifies: once the issuer no longer publishes k1, a token
    // remembered under k1 is refused.
    let t = good(&f);
    assert!(matches!(f.login(&t).await, Ok(AuthnOutcome::Accepted(_))));
    f.jwks.set(&[k2]);
    f.clock.advance(Duration::from_secs(301));
    f.oidc.refresh_due().await;
    f.refused(&t, "not among").await;
    let _ = k1;
}
