//! Every metric purser exports, registered on a registry passed in (never a global one).
//! Names live here and nowhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub const TOKEN_REQUESTS: &str = "purser_token_requests_total";
pub const TOKEN_REQUEST_DURATION: &str = "purser_token_request_duration_seconds";
pub const AUTHN_ATTEMPTS: &str = "purser_authn_attempts_total";
pub const AUTHN_DURATION: &str = "purser_authn_duration_seconds";
pub const AUTHN_CACHE_HITS: &str = "purser_authn_cache_hits_total";
pub const AUTHN_SHARED_ANSWERS: &str = "purser_authn_shared_answers_total";
pub const AUTHN_STALE_ANSWERS: &str = "purser_authn_stale_answers_total";
pub const AUTHZ_DECISIONS: &str = "purser_authz_decisions_total";
pub const TOKENS_ISSUED: &str = "purser_tokens_issued_total";
pub const RELOADS: &str = "purser_reloads_total";
pub const RELOAD_LAST_SUCCESS: &str = "purser_reload_last_success_timestamp_seconds";
pub const POLICY_RULES: &str = "purser_policy_rules";
pub const POLICY_SHADOW_DECISIONS: &str = "purser_policy_shadow_decisions_total";
pub const POLICY_SHADOW_RULES: &str = "purser_policy_shadow_rules";
pub const LDAP_POOL_CONNECTIONS: &str = "purser_ldap_pool_connections";
pub const LOCKOUTS: &str = "purser_lockouts_total";
pub const BUILD_INFO: &str = "purser_build_info";
pub const MACHINE_TOKENS: &str = "purser_machine_tokens";
pub const MACHINE_TOKEN_EXPIRY: &str = "purser_machine_token_expiry_timestamp_seconds";
pub const MACHINE_TOKEN_LAST_USED: &str = "purser_machine_token_last_used_timestamp_seconds";
pub const SIGNING_KEY_AGE: &str = "purser_signing_key_age_seconds";
pub const SIGNING_KEYS: &str = "purser_signing_keys";
pub const SIGNING_KEY_ROTATION_EVERY: &str = "purser_signing_key_rotation_every_seconds";
pub const SIGNING_KEY_ROTATION_OVERLAP: &str = "purser_signing_key_rotation_overlap_seconds";

/// The signing keys now: each key's state and activation time (unix seconds), and the
/// schedule (`every`, `overlap` in seconds; 0 without one).
pub struct SigningKeysView {
    pub keys: Vec<(&'static str, Option<i64>)>,
    pub every: u64,
    pub overlap: u64,
}

/// Reads the keys loaded now, at each scrape.
pub type SigningKeysSource = Box<dyn Fn() -> SigningKeysView + Send + Sync>;

/// Lists the machine tokens loaded now: each one's name and expiry (unix seconds; `None`
/// for never).
pub type MachineTokenList = Box<dyn Fn() -> Vec<(String, Option<i64>)> + Send + Sync>;

/// When each machine token was last used to log in (unix seconds), in this process's memory.
type LastUsed = Arc<Mutex<HashMap<String, i64>>>;
pub const STATE_ERRORS: &str = "purser_state_errors_total";
pub const OIDC_LOGINS: &str = "purser_oidc_logins_total";
pub const OIDC_JWKS_FETCHES: &str = "purser_oidc_jwks_fetches_total";
pub const OIDC_JWKS_AGE: &str = "purser_oidc_jwks_age_seconds";
pub const STATE_BACKEND_UP: &str = "purser_state_backend_up";

/// The `op` label of `purser_state_errors_total`: the limiter's operations on its store.
pub const STATE_OPS: [&str; 4] = ["check", "failure", "success", "key"];

/// Request latencies run from well under a millisecond (a cached login, an ES256 signature) to
/// seconds (a cold bcrypt of cost 12, a slow directory), so the buckets span both.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The outcome label of `purser_token_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Issued,
    Unauthorized,
    BadRequest,
    RateLimited,
    Unavailable,
}

impl RequestOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Issued => "issued",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::BadRequest => "bad_request",
            RequestOutcome::RateLimited => "rate_limited",
            RequestOutcome::Unavailable => "unavailable",
        }
    }
}

/// The metrics registry and every metric handle, shared: cloning it (once per layer and
/// request) is one reference count, not one per metric.
#[derive(Clone)]
pub struct Metrics(Arc<MetricHandles>);

impl std::ops::Deref for Metrics {
    type Target = MetricHandles;
    fn deref(&self) -> &MetricHandles {
        &self.0
    }
}

pub struct MetricHandles {
    registry: Registry,
    pub token_requests: IntCounterVec,
    pub token_request_duration: HistogramVec,
    pub authn_attempts: IntCounterVec,
    pub authn_duration: HistogramVec,
    pub authn_cache_hits: IntCounterVec,
    pub authn_shared_answers: IntCounterVec,
    pub authn_stale_answers: IntCounterVec,
    pub authz_decisions: IntCounterVec,
    pub tokens_issued: IntCounterVec,
    pub reloads: IntCounterVec,
    pub reload_last_success: GaugeVec,
    pub policy_rules: IntGauge,
    /// Per requested scope, the shadow policy's decision against the live one.
    pub policy_shadow_decisions: IntCounterVec,
    /// Rules of the shadow policy in use; 0 while there is none.
    pub policy_shadow_rules: IntGauge,
    pub ldap_pool_connections: IntGaugeVec,
    pub lockouts: IntCounterVec,
    machine_token_last_used: LastUsed,
    pub state_errors: IntCounterVec,
    pub state_backend_up: IntGauge,
    /// OIDC logins by issuer (configured ones only, or `""`) and outcome.
    pub oidc_logins: IntCounterVec,
    /// Fetches of an OIDC issuer's keys by outcome.
    pub oidc_jwks_fetches: IntCounterVec,
    /// Seconds since each OIDC issuer's keys were last fetched; -1 before the first fetch.
    pub oidc_jwks_age: GaugeVec,
}

impl Metrics {
    /// Creates every metric on `registry`, with the label values known up front already at zero,
    /// so dashboards and `rate()` see a series before the first event.
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<HistogramVec> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let m = MetricHandles {
            token_requests: counter(
                TOKEN_REQUESTS,
                "Token requests by method and outcome.",
                &["method", "outcome"],
            )?,
            token_request_duration: histogram(
                TOKEN_REQUEST_DURATION,
                "Token request latency.",
                &["method"],
            )?,
            authn_attempts: counter(
                AUTHN_ATTEMPTS,
                "Authentication attempts by backend and outcome.",
                &["backend", "outcome"],
            )?,
            authn_duration: histogram(
                AUTHN_DURATION,
                "Time a backend took to answer.",
                &["backend"],
            )?,
            authn_cache_hits: counter(
                AUTHN_CACHE_HITS,
                "Logins answered from the credential cache.",
                &["backend"],
            )?,
            authn_shared_answers: counter(
                AUTHN_SHARED_ANSWERS,
                "Logins answered by a concurrent check of the same user name and password.",
                &["backend"],
            )?,
            authn_stale_answers: counter(
                AUTHN_STALE_ANSWERS,
                "Logins accepted from the credential cache while the backend was unavailable.",
                &["backend"],
            )?,
            authz_decisions: counter(
                AUTHZ_DECISIONS,
                "Policy decisions per requested resource.",
                &["outcome"],
            )?,
            tokens_issued: counter(
                TOKENS_ISSUED,
                "Signed tokens by algorithm and kind.",
                &["alg", "kind"],
            )?,
            reloads: counter(
                RELOADS,
                "Reloads of watched files by source and outcome.",
                &["source", "outcome"],
            )?,
            reload_last_success: {
                let g = GaugeVec::new(
                    Opts::new(
                        RELOAD_LAST_SUCCESS,
                        "Unix time of the last successful load of each source.",
                    ),
                    &["source"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            policy_rules: {
                let g = IntGauge::new(POLICY_RULES, "Rules in the policy in force.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            policy_shadow_decisions: counter(
                POLICY_SHADOW_DECISIONS,
                "Requested scopes decided by the shadow policy too, by how its decision \
                 compares with the live one's: same, more, less or different actions.",
                &["outcome"],
            )?,
            policy_shadow_rules: {
                let g = IntGauge::new(
                    POLICY_SHADOW_RULES,
                    "Rules in the shadow policy in use; 0 when there is none.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            ldap_pool_connections: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        LDAP_POOL_CONNECTIONS,
                        "LDAP service-account connections by state.",
                    ),
                    &["state"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            lockouts: counter(
                LOCKOUTS,
                "Lockouts after failed logins, per account or client IP.",
                &["scope"],
            )?,
            state_errors: counter(
                STATE_ERRORS,
                "Operations on the shared failed-login store that failed or timed out.",
                &["op"],
            )?,
            state_backend_up: {
                let g = IntGauge::new(
                    STATE_BACKEND_UP,
                    "1 while the failed-login store answers (always, for memory); 0 while \
                     the replica counts on its own or refuses logins.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g.set(1);
                g
            },
            oidc_logins: counter(
                OIDC_LOGINS,
                "OIDC logins by issuer and outcome (accepted, rejected, unavailable).",
                &["issuer", "outcome"],
            )?,
            oidc_jwks_fetches: counter(
                OIDC_JWKS_FETCHES,
                "Fetches of an OIDC issuer's keys (discovery, then its JWKS) by outcome.",
                &["issuer", "outcome"],
            )?,
            oidc_jwks_age: {
                let g = GaugeVec::new(
                    Opts::new(
                        OIDC_JWKS_AGE,
                        "Seconds since the OIDC issuer's keys were last fetched; -1 before the first fetch.",
                    ),
                    &["issuer"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry: registry.clone(),
            machine_token_last_used: LastUsed::default(),
        };
        let build = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Build information; always 1."),
            &["version"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        for method in ["GET", "POST"] {
            for o in [
                "issued",
                "unauthorized",
                "bad_request",
                "rate_limited",
                "unavailable",
            ] {
                m.token_requests.with_label_values(&[method, o]);
            }
        }
        for o in ["full", "partial", "none"] {
            m.authz_decisions.with_label_values(&[o]);
        }
        for s in ["account", "ip"] {
            m.lockouts.with_label_values(&[s]);
        }
        for op in STATE_OPS {
            m.state_errors.with_label_values(&[op]);
        }
        Ok(Metrics(Arc::new(m)))
    }

    /// Zeroes the series of one backend so they exist from the start.
    pub fn init_backend(&self, backend: &str) {
        for o in ["accepted", "rejected", "unknown_user", "unavailable"] {
            self.authn_attempts.with_label_values(&[backend, o]);
        }
        self.authn_cache_hits.with_label_values(&[backend]);
        self.authn_shared_answers.with_label_values(&[backend]);
        self.authn_stale_answers.with_label_values(&[backend]);
        // The pool gauges exist whenever the directory backend does, before its first
        // connection, so that dashboards show 0 rather than no data.
        if backend == "ldap" {
            for s in ["idle", "busy"] {
                self.ldap_pool_connections.with_label_values(&[s]);
            }
        }
    }

    pub fn init_reload_source(&self, source: &str) {
        for o in ["success", "failure"] {
            self.reloads.with_label_values(&[source, o]);
        }
    }

    /// Notes that machine token `name` logged in (or refreshed) at `now` (unix seconds).
    pub fn machine_token_used(&self, name: &str, now: i64) {
        let mut map = self
            .machine_token_last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(name) {
            Some(t) => *t = (*t).max(now),
            None => {
                map.insert(name.to_string(), now);
            }
        }
    }

    /// Exports the machine token gauges, computed at each scrape from `list` (so that a token
    /// passing its expiry moves from active to expired without a reload). A failure to
    /// register (a second call) is logged: the first export stays.
    pub fn export_machine_tokens(&self, list: MachineTokenList) {
        let collector = MachineTokens {
            list,
            last_used: self.machine_token_last_used.clone(),
            descs: MachineTokens::gauges()
                .map(|(a, b, c)| {
                    [a.desc(), b.desc(), c.desc()]
                        .concat()
                        .into_iter()
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::warn!(error = %e, "machine token metrics not exported");
        }
    }

    /// Exports the signing key gauges, computed at each scrape (the age grows between
    /// reloads): the active key's age since its activation, the keys by state, the schedule.
    pub fn export_signing_keys(&self, source: SigningKeysSource) {
        let descs = SigningKeys::gauges()
            .map(|g| g.iter().flat_map(|v| v.desc()).cloned().collect())
            .unwrap_or_default();
        if let Err(e) = self
            .registry
            .register(Box::new(SigningKeys { source, descs }))
        {
            tracing::warn!(error = %e, "signing key metrics not exported");
        }
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The signing key gauges, made afresh at each scrape.
struct SigningKeys {
    source: SigningKeysSource,
    descs: Vec<Desc>,
}

impl SigningKeys {
    fn gauges() -> prometheus::Result<[GaugeVec; 4]> {
        Ok([
            GaugeVec::new(
                Opts::new(
                    SIGNING_KEY_AGE,
                    "Seconds since the active signing key was activated.",
                ),
                &[],
            )?,
            GaugeVec::new(
                Opts::new(SIGNING_KEYS, "Published signing keys, by state."),
                &["state"],
            )?,
            GaugeVec::new(
                Opts::new(
                    SIGNING_KEY_ROTATION_EVERY,
                    "token.rotation.every in seconds; 0 without a schedule.",
                ),
                &[],
            )?,
            GaugeVec::new(
                Opts::new(
                    SIGNING_KEY_ROTATION_OVERLAP,
                    "token.rotation.overlap in seconds; 0 without a schedule.",
                ),
                &[],
            )?,
        ])
    }
}

impl Collector for SigningKeys {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok([age, count, every, overlap]) = SigningKeys::gauges() else {
            return Vec::new();
        };
        let now = purser_core::Clock::wall(&purser_core::SystemClock)
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let view = (self.source)();
        for state in ["next", "active", "retiring"] {
            let n = view.keys.iter().filter(|(s, _)| *s == state).count();
            count.with_label_values(&[state]).set(n as f64);
        }
        if let Some((_, since)) = view.keys.iter().find(|(s, _)| *s == "active") {
            let since = since.unwrap_or(now);
            age.with_label_values(&[])
                .set(now.saturating_sub(since).max(0) as f64);
        }
        every.with_label_values(&[]).set(view.every as f64);
        overlap.with_label_values(&[]).set(view.overlap as f64);
        let mut out = Vec::new();
        for g in [age, count, every, overlap] {
            out.extend(g.collect());
        }
        out
    }
}

/// The machine token gauges, made afresh at each scrape from the loaded tokens.
struct MachineTokens {
    list: MachineTokenList,
    last_used: LastUsed,
    descs: Vec<Desc>,
}

impl MachineTokens {
    fn gauges() -> prometheus::Result<(IntGaugeVec, GaugeVec, GaugeVec)> {
        Ok((
            IntGaugeVec::new(
                Opts::new(MACHINE_TOKENS, "Machine tokens in the tokens file, by state."),
                &["state"],
            )?,
            GaugeVec::new(
                Opts::new(
                    MACHINE_TOKEN_EXPIRY,
                    "Unix time when each machine token expires (tokens that never expire are not listed).",
                ),
                &["name"],
            )?,
            GaugeVec::new(
                Opts::new(
                    MACHINE_TOKEN_LAST_USED,
                    "Unix time of each machine token's last login or refresh seen by this process.",
                ),
                &["name"],
            )?,
        ))
    }
}

impl Collector for MachineTokens {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok((count, expiry, used)) = MachineTokens::gauges() else {
            return Vec::new();
        };
        let now = purser_core::Clock::wall(&purser_core::SystemClock)
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let tokens = (self.list)();
        let last = self
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut active, mut expired) = (0, 0);
        for (name, expires) in &tokens {
            match expires {
                Some(e) if now >= *e => expired += 1,
                _ => active += 1,
            }
            if let Some(e) = expires {
                expiry.with_label_values(&[name]).set(*e as f64);
            }
            if let Some(t) = last.get(name) {
                used.with_label_values(&[name]).set(*t as f64);
            }
        }
        count.with_label_values(&["active"]).set(active);
        count.with_label_values(&["expired"]).set(expired);
        let mut out = count.collect();
        out.extend(expiry.collect());
        out.extend(used.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_exported() {
        let m = Metrics::new(Registry::new()).unwrap();
        m.init_backend("static");
        m.init_reload_source("policy");
        m.authn_duration
            .with_label_values(&["static"])
            .observe(0.01);
        m.token_request_duration
            .with_label_values(&["GET"])
            .observe(0.01);
        m.tokens_issued
            .with_label_values(&["RS256", "access"])
            .inc();
        m.reload_last_success
            .with_label_values(&["policy"])
            .set(1.0);
        m.ldap_pool_connections.with_label_values(&["idle"]).set(0);
        let text = m.render();
        for name in [
            TOKEN_REQUESTS,
            TOKEN_REQUEST_DURATION,
            AUTHN_ATTEMPTS,
            AUTHN_DURATION,
            AUTHN_CACHE_HITS,
            AUTHZ_DECISIONS,
            TOKENS_ISSUED,
            RELOADS,
            RELOAD_LAST_SUCCESS,
            POLICY_RULES,
            LDAP_POOL_CONNECTIONS,
            LOCKOUTS,
            BUILD_INFO,
            STATE_ERRORS,
            STATE_BACKEND_UP,
        ] {
            assert!(text.contains(&format!("# TYPE {name}")), "{name} missing");
        }
        assert!(text.contains("process_"), "process metrics missing");
    }

    #[test]
    fn machine_token_gauges_follow_the_clock_and_the_file() {
        let m = Metrics::new(Registry::new()).unwrap();
        m.export_machine_tokens(Box::new(|| {
            vec![
                ("old".to_string(), Some(1_000)),
                ("ci-app".to_string(), Some(4_000_000_000)),
                ("forever".to_string(), None),
            ]
        }));
        m.machine_token_used("ci-app", 1_700_000_000);
        m.machine_token_used("ci-app", 1_600_000_000);
        let text = m.render();
        for line in [
            "purser_machine_tokens{state=\"active\"} 2",
            "purser_machine_tokens{state=\"expired\"} 1",
            "purser_machine_token_expiry_timestamp_seconds{name=\"ci-app\"} 4000000000",
            "purser_machine_token_expiry_timestamp_seconds{name=\"old\"} 1000",
            "purser_machine_token_last_used_timestamp_seconds{name=\"ci-app\"} 1700000000",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("name=\"forever\"}"), "{text}");
    }
}
