//! `authn.oidc`: OIDC workload identity. A CI job logs in with its issuer's ID token as the
//! password of the issuer's `username` (or through the token exchange grant); the token is
//! verified against the keys the issuer publishes (discovery, then its JWKS, over HTTPS) and
//! its claims become the account, groups and labels the policy sees.

mod fetch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use purser_authn::oidc::{
    parse_algorithm, valid_claim_name, ClaimGlob, IssuerSettings, JwksSource, KeyTiming,
    OidcAuthenticator, OidcEvents, Template,
};
use purser_core::Authenticator;
use serde::{Deserialize, Serialize};

use super::Backend;
use crate::build::ctx::{BuildError, Ctx, Mode};
use crate::config::problem::Problem;
use crate::config::values::{resolve, HumanDuration};
use crate::metrics::Metrics;

/// Keys holding secrets: none (issuers publish their keys; tokens are never configured).
pub(crate) const SECRET_KEYS: &[&str] = &[];

/// Largest `ca_file` read, in bytes.
const MAX_CA_FILE: u64 = 4 << 20;
/// Most issuers in one configuration.
const MAX_ISSUERS: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuers whose tokens are accepted; the token's `iss` picks one. Default: none.
    pub issuers: Vec<OidcIssuerConfig>,
    /// Fetch each issuer's keys again this long after the last successful fetch. Default `5m`.
    pub jwks_refresh: HumanDuration,
    /// At most one fetch per issuer in this long, whatever asks (a token naming an unknown key
    /// id, a failed fetch retried). Default `30s`.
    pub jwks_min_interval: HumanDuration,
    /// Keys not refreshed for this long (the issuer unreachable) are no longer used: the
    /// issuer's logins answer 503 until a fetch succeeds. Default `24h`.
    pub jwks_max_age: HumanDuration,
    /// Bound on each step of a fetch (connect, TLS, answer, body). Default `10s`.
    pub timeout: HumanDuration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuers: Vec::new(),
            jwks_refresh: HumanDuration::secs(300),
            jwks_min_interval: HumanDuration::secs(30),
            jwks_max_age: HumanDuration::secs(86_400),
            timeout: HumanDuration::secs(10),
        }
    }
}

/// One issuer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer URL, `https://`, exactly as the tokens' `iss`. Required. Default empty.
    pub issuer: String,
    /// The token's `aud` must contain one of these. Required. Default empty.
    pub audience: Vec<String>,
    /// The Basic user name that marks a login with this issuer's tokens. Default `oidc`.
    pub username: String,
    /// The account, from the claims (`${claims.NAME}`). Default `${claims.sub}`.
    pub account: String,
    /// Groups, one per template; a template whose claim is missing gives none. Default `[]`.
    pub groups: Vec<String>,
    /// Labels for the policy (`match.labels`, `${labels.KEY}`), name -> template; one whose
    /// claim is missing is left out. Default `{}`.
    pub labels: BTreeMap<String, String>,
    /// Claim name -> glob (`*` any run, `/` included; `?` one character): every one must
    /// match, a missing claim fails. Default `{}`.
    pub require: BTreeMap<String, String>,
    /// The signature algorithms accepted (asymmetric only). Default `[RS256, ES256]`.
    pub algorithms: Vec<String>,
    /// A PEM CA bundle trusted, beside the system's roots, for the issuer's HTTPS. Default
    /// empty.
    pub ca_file: PathBuf,
    /// Refuse tokens whose `exp - iat` is longer; `0s` no bound. Default `1h`.
    pub max_token_lifetime: HumanDuration,
}

impl Default for OidcIssuerConfig {
    fn default() -> Self {
        OidcIssuerConfig {
            issuer: String::new(),
            audience: Vec::new(),
            username: "oidc".into(),
            account: "${claims.sub}".into(),
            groups: Vec::new(),
            labels: BTreeMap::new(),
            require: BTreeMap::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            ca_file: PathBuf::new(),
            max_token_lifetime: HumanDuration::secs(3600),
        }
    }
}

/// Whether `issuer` is an `https://` URL with a host and nothing after its path.
fn https_url(issuer: &str) -> bool {
    let Some(rest) = issuer.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    !host.is_empty()
        && issuer.parse::<http::Uri>().is_ok()
        && !issuer.contains(['?', '#'])
        && !issuer.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl OidcIssuerConfig {
    fn validate(&self, at: &str, p: &mut Vec<Problem>) {
        if !https_url(&self.issuer) {
            p.push(Problem::new(
                format!("{at}.issuer"),
                "must be the issuer's https:// URL, exactly as its tokens' iss (https://token.actions.githubusercontent.com)",
            ));
        }
        if self.audience.is_empty() || self.audience.iter().any(String::is_empty) {
            p.push(Problem::new(
                format!("{at}.audience"),
                "list the audiences accepted (the token's aud must contain one), e.g. [registry.example.com]",
            ));
        }
        if self.username.is_empty() || self.username.contains(':') {
            p.push(Problem::new(
                format!("{at}.username"),
                "must be a user name without a colon, e.g. oidc",
            ));
        }
        if let Err(e) = Template::parse(&self.account) {
            p.push(Problem::new(format!("{at}.account"), e));
        } else if !self.account.contains("${claims.") {
            p.push(Problem::new(
                format!("{at}.account"),
                "must name a claim, e.g. \"github:${claims.repository}\": every token would otherwise be one account",
            ));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if let Err(e) = Template::parse(g) {
                p.push(Problem::new(format!("{at}.groups[{i}]"), e));
            }
        }
        for (k, v) in &self.labels {
            if !purser_core::is_label_name(k) {
                p.push(Problem::new(
                    format!("{at}.labels"),
                    format!(
                        "{k:?} is not a label name: letters, digits, _ and -, at most {} characters",
                        purser_core::MAX_LABEL_NAME
                    ),
                ));
            }
            if let Err(e) = Template::parse(v) {
                p.push(Problem::new(format!("{at}.labels.{k}"), e));
            }
        }
        for k in self.require.keys() {
            if !valid_claim_name(k) {
                p.push(Problem::new(
                    format!("{at}.require"),
                    format!("{k:?} is not a claim name"),
                ));
            }
        }
        if self.algorithms.is_empty() {
            p.push(Problem::new(
                format!("{at}.algorithms"),
                "list at least one algorithm, e.g. [RS256]",
            ));
        }
        for a in &self.algorithms {
            if parse_algorithm(a).is_none() {
                p.push(Problem::new(
                    format!("{at}.algorithms"),
                    format!(
                        "{:?} is not accepted: use {} (never none or an HMAC algorithm)",
                        a.chars().take(20).collect::<String>(),
                        purser_authn::oidc::ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
    }

    fn settings(&self) -> Result<IssuerSettings, String> {
        let t = |s: &str| Template::parse(s);
        Ok(IssuerSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            username: self.username.clone(),
            account: t(&self.account)?,
            groups: self.groups.iter().map(|g| t(g)).collect::<Result<_, _>>()?,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| Ok((k.clone(), t(v)?)))
                .collect::<Result<_, String>>()?,
            require: self
                .require
                .iter()
                .map(|(k, v)| (k.clone(), ClaimGlob::new(v)))
                .collect(),
            algorithms: self
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a))
                .collect(),
            max_token_lifetime: (!self.max_token_lifetime.0.is_zero())
                .then_some(self.max_token_lifetime.0),
        })
    }
}

impl Backend for OidcConfig {
    fn validate(&self, at: &str, p: &mut Vec<Problem>) {
        if self.issuers.is_empty() {
            p.push(Problem::new(
                format!("{at}.issuers"),
                "list at least one issuer (issuer, audience, account)",
            ));
        }
        if self.issuers.len() > MAX_ISSUERS {
            p.push(Problem::new(
                format!("{at}.issuers"),
                format!("at most {MAX_ISSUERS} issuers"),
            ));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("{at}.issuers[{i}]"), p);
            if self.issuers[..i]
                .iter()
                .any(|o| o.issuer == issuer.issuer && o.username == issuer.username)
            {
                p.push(Problem::new(
                    format!("{at}.issuers[{i}].issuer"),
                    "this issuer is listed twice with the same username",
                ));
            }
        }
        for (key, d) in [
            ("jwks_refresh", self.jwks_refresh),
            ("jwks_min_interval", self.jwks_min_interval),
            ("jwks_max_age", self.jwks_max_age),
            ("timeout", self.timeout),
        ] {
            if d.0.is_zero() {
                p.push(Problem::new(format!("{at}.{key}"), "must be more than 0s"));
            }
        }
        if self.jwks_max_age < self.jwks_refresh {
            p.push(Problem::new(
                format!("{at}.jwks_max_age"),
                "must be at least jwks_refresh, or keys go stale before they are refreshed",
            ));
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        for i in &mut self.issuers {
            resolve(&mut i.ca_file, base);
        }
    }

    fn read_secrets(&mut self, _at: &str, _problems: &mut Vec<Problem>) {}

    fn redact(&mut self) {}

    /// A token carries its own expiry and costs one signature check: never remembered.
    fn credential_cache(&self) -> bool {
        false
    }

    /// Reads each `ca_file` and prepares the fetchers, contacting no issuer: an issuer down at
    /// start leaves its logins at 503 (and `/readyz` degraded) while the rest serve.
    fn build(
        &self,
        at: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Arc<dyn Authenticator>>, BuildError> {
        let mut issuers: Vec<(IssuerSettings, Arc<dyn JwksSource>)> = Vec::new();
        let mut complete = true;
        for (i, c) in self.issuers.iter().enumerate() {
            let key = format!("{at}.issuers[{i}]");
            let built = issuer(c, &key, self.timeout.0);
            match ctx.check(built)? {
                Some(pair) => issuers.push(pair),
                None => complete = false,
            }
        }
        if !complete {
            return Ok(None);
        }
        let events: Arc<dyn OidcEvents> = Arc::new(MetricEvents(ctx.metrics.clone()));
        let timing = KeyTiming {
            refresh: self.jwks_refresh.0,
            min_refetch: self.jwks_min_interval.0,
            max_age: self.jwks_max_age.0,
        };
        let oidc = Arc::new(OidcAuthenticator::new(
            issuers,
            timing,
            Arc::new(purser_core::SystemClock),
            events,
        ));
        for name in oidc.issuer_names() {
            for o in ["accepted", "rejected", "unavailable"] {
                ctx.metrics.oidc_logins.with_label_values(&[&name, o]);
            }
            for o in ["success", "failure"] {
                ctx.metrics.oidc_jwks_fetches.with_label_values(&[&name, o]);
            }
            ctx.metrics
                .oidc_jwks_age
                .with_label_values(&[&name])
                .set(-1.0);
        }
        if ctx.mode == Mode::Serve {
            let held = oidc.clone();
            ctx.note(Arc::new(move || held.problems()));
            keep_keys_fresh(&oidc, ctx.metrics);
        }
        Ok(Some(oidc))
    }
}

fn issuer(
    c: &OidcIssuerConfig,
    key: &str,
    timeout: std::time::Duration,
) -> Result<(IssuerSettings, Arc<dyn JwksSource>), BuildError> {
    let ca = if c.ca_file.as_os_str().is_empty() {
        None
    } else {
        Some(
            purser_fs::read_bytes(&c.ca_file, MAX_CA_FILE)
                .map_err(|e| BuildError::backend(&format!("{key}.ca_file"), e))?,
        )
    };
    let tls = fetch::client_config(ca.as_deref()).map_err(|e| {
        BuildError::backend(
            &format!("{key}.ca_file"),
            format!("{}: {e}", c.ca_file.display()),
        )
    })?;
    let settings = c.settings().map_err(|e| BuildError::backend(key, e))?;
    let source: Arc<dyn JwksSource> = Arc::new(fetch::HttpsJwks::new(&c.issuer, tls, timeout));
    Ok((settings, source))
}

/// The backend's events as metrics.
struct MetricEvents(Metrics);

impl OidcEvents for MetricEvents {
    fn login(&self, issuer: &str, outcome: &'static str) {
        self.0
            .oidc_logins
            .with_label_values(&[issuer, outcome])
            .inc();
    }
    fn fetch(&self, issuer: &str, outcome: &'static str) {
        self.0
            .oidc_jwks_fetches
            .with_label_values(&[issuer, outcome])
            .inc();
    }
}

/// Fetches each issuer's keys at start and whenever due, and keeps
/// `purser_oidc_jwks_age_seconds` current, once a second for as long as the backend lives.
fn keep_keys_fresh(oidc: &Arc<OidcAuthenticator>, metrics: &Metrics) {
    // Outside a runtime (a synchronous caller) keys are fetched at the first login instead.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(oidc);
    let gauge = metrics.oidc_jwks_age.clone();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(oidc) = weak.upgrade() else { return };
            oidc.refresh_due().await;
            for (issuer, age) in oidc.key_ages() {
                let v = age.map_or(-1.0, |a| a.as_secs_f64());
                gauge.with_label_values(&[&issuer]).set(v);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> OidcConfig {
        OidcConfig {
            issuers: vec![OidcIssuerConfig {
                issuer: "https://token.actions.githubusercontent.com".into(),
                audience: vec!["registry.example.com".into()],
                account: "github:${claims.repository}".into(),
                labels: BTreeMap::from([("repository".into(), "${claims.repository}".into())]),
                require: BTreeMap::from([("repository_owner".into(), "acme".into())]),
                ..OidcIssuerConfig::default()
            }],
            ..OidcConfig::default()
        }
    }

    fn problems(c: &OidcConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate("authn.oidc", &mut p);
        p.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_good_block_passes_and_mistakes_are_named_by_key() {
        assert!(problems(&good()).is_empty(), "{:?}", problems(&good()));
        let mut c = good();
        let i = &mut c.issuers[0];
        i.issuer = "http://insecure.example".into();
        i.audience = vec![];
        i.algorithms = vec!["none".into(), "HS256".into()];
        i.account = "everyone".into();
        i.labels.insert("bad key".into(), "${claims.x}".into());
        i.groups = vec!["${claim.x}".into()];
        let p = problems(&c).join("\n");
        for key in [
            "authn.oidc.issuers[0].issuer",
            "authn.oidc.issuers[0].audience",
            "authn.oidc.issuers[0].algorithms",
            "authn.oidc.issuers[0].account",
            "authn.oidc.issuers[0].labels",
            "authn.oidc.issuers[0].groups[0]",
        ] {
            assert!(p.contains(key), "{key} in\n{p}");
        }
        assert!(p.contains("never none or an HMAC"), "{p}");
        assert!(problems(&OidcConfig::default())
            .join("\n")
            .contains("authn.oidc.issuers"));
    }
}
