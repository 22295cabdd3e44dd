//! Telemetry of token requests: the request counters and durations, and one audit record per
//! request. The endpoint hands up what it served as a response extension ([`Served`]); this
//! layer alone turns it into metrics and the log line. Requests shed or timed out below it are
//! answered 503 here and counted as `unavailable`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use tower::{BoxError, Layer, Service};

use super::call::Audit;
use super::endpoint::Served;
use crate::error::{ApiError, Body, Dialect};
use crate::metrics::{Metrics, RequestOutcome};

/// The `target` of audit records in the log.
pub const AUDIT_TARGET: &str = "purser::audit";

#[derive(Clone)]
pub struct TelemetryLayer {
    metrics: Metrics,
    realm: std::sync::Arc<str>,
}

impl TelemetryLayer {
    pub fn new(metrics: Metrics, realm: &str) -> Self {
        TelemetryLayer {
            metrics,
            realm: realm.into(),
        }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;
    fn layer(&self, inner: S) -> Telemetry<S> {
        Telemetry {
            metrics: self.metrics.clone(),
            realm: self.realm.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Telemetry<S> {
    metrics: Metrics,
    realm: std::sync::Arc<str>,
    inner: S,
}

// === impl Telemetry ===

impl<S, B> Service<Request<B>> for Telemetry<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Load shedding below answers readiness at once; an error here is answered per call.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = if req.method() == Method::POST {
            "POST"
        } else {
            "GET"
        };
        let metrics = self.metrics.clone();
        let realm = self.realm.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = match fut.await {
                Ok(mut response) => {
                    let served = response.extensions_mut().remove::<Served>();
                    let outcome = served
                        .as_ref()
                        .map_or(RequestOutcome::Issued, |s| s.outcome);
                    count(&metrics, method, outcome, started.elapsed());
                    if let Some(s) = served {
                        audit_record(&s);
                    }
                    response
                }
                Err(e) => {
                    count(
                        &metrics,
                        method,
                        RequestOutcome::Unavailable,
                        started.elapsed(),
                    );
                    shed_or_timeout(e.into(), &realm)
                }
            };
            Ok(response)
        })
    }
}

fn count(metrics: &Metrics, method: &str, outcome: RequestOutcome, took: Duration) {
    metrics
        .token_requests
        .with_label_values(&[method, outcome.label()])
        .inc();
    metrics
        .token_request_duration
        .with_label_values(&[method])
        .observe(took.as_secs_f64());
}

/// A request the server did not get to: shed at the in-flight bound, or past its time.
pub fn shed_or_timeout(e: BoxError, realm: &str) -> Response<Body> {
    let message = if e.is::<tower::load_shed::error::Overloaded>() {
        "the server is overloaded; try again shortly"
    } else if e.is::<tower::timeout::error::Elapsed>() {
        "the request took too long; try again shortly"
    } else {
        "the server could not handle the request"
    };
    tracing::warn!(error = %e, "request not served");
    ApiError::Unavailable {
        retry_after: Duration::from_secs(1),
        message: message.into(),
    }
    .into_response(Dialect::Distribution, realm)
}

/// The audit record: one structured line per token request. Never a password or a token.
/// `scopes`, `groups`, `labels`, `cap` and `shadow` are written as JSON text; the JSON log
/// format turns them into arrays and an object (see `crate::logging`). Fields without a value
/// (no machine token, no labels, no cap, no difference with the shadow policy) are left out.
fn audit_record(s: &Served) {
    let a: &Audit = &s.audit;
    let scopes = scopes_json(&a.decisions);
    let groups = serde_json::to_string(&a.groups).unwrap_or_default();
    // Written only when there is one: a capped credential's cap, the shadow's differences.
    let cap = a
        .cap
        .as_ref()
        .map(|c| serde_json::to_string(c).unwrap_or_default());
    let shadow = (!a.shadow.is_empty()).then(|| crate::shadow::diffs_json(&a.shadow));
    // The labels a backend attached (an OIDC token's claims, directory attributes), as the
    // policy saw them; written only when there are any.
    let labels =
        (!a.labels.is_empty()).then(|| serde_json::to_string(&a.labels).unwrap_or_default());
    tracing::info!(
        target: AUDIT_TARGET,
        client_ip = %s.client,
        method = s.method,
        account = a.account.as_deref().unwrap_or(""),
        backend = a.backend.unwrap_or(""),
        machine_token = a.machine_token.as_deref(),
        groups = %groups,
        labels = labels.as_deref(),
        cap = cap.as_deref(),
        stale = a.stale,
        service = %a.service,
        scopes = %scopes,
        shadow = shadow.as_deref(),
        outcome = s.outcome.label(),
        status = s.status.as_u16(),
        "token request"
    );
}

/// The audit record's `scopes` field: a JSON array with, per requested scope,
/// `{"granted":[..],"rule":{"index":N,"name":".."}|null,"scope":".."}` (keys in this order),
/// written straight into one buffer.
pub(crate) fn scopes_json(
    decisions: &[(purser_core::ResourceScope, purser_core::Grant)],
) -> String {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut out: Vec<u8> = Vec::with_capacity(2 + 96 * decisions.len());
    let mut scope_text = String::new();
    out.push(b'[');
    for (i, (scope, grant)) in decisions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"granted\":");
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &grant.actions);
        out.extend_from_slice(b",\"rule\":");
        match &grant.rule {
            Some(rule) => {
                let _ = write!(out, "{{\"index\":{},\"name\":", rule.index);
                let _ = serde_json::to_writer(&mut out, &rule.name);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"scope\":");
        scope_text.clear();
        let _ = write!(scope_text, "{scope}");
        let _ = serde_json::to_writer(&mut out, &scope_text);
        out.push(b'}');
    }
    out.push(b']');
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use purser_core::{Grant, ResourceScope, RuleRef};

    /// The audit record's scopes, as a JSON value tree would render them.
    fn scopes_via_value(decisions: &[(ResourceScope, Grant)]) -> String {
        let items: Vec<serde_json::Value> = decisions
            .iter()
            .map(|(scope, grant)| {
                let rule = grant
                    .rule
                    .as_ref()
                    .map(|r| serde_json::json!({"index": r.index, "name": r.name}));
                serde_json::json!({"scope": scope.to_string(), "granted": grant.actions, "rule": rule})
            })
            .collect();
        serde_json::Value::Array(items).to_string()
    }

    #[test]
    fn scopes_are_written_as_a_json_value_would_be() {
        let scope = |s: &str| s.parse::<ResourceScope>().unwrap();
        let rule = |index, name: &str| {
            Some(RuleRef {
                index,
                name: name.into(),
            })
        };
        let cases: Vec<Vec<(ResourceScope, Grant)>> = vec![
            vec![],
            vec![(scope("repository:team/app:pull,push"), Grant::none())],
            vec![
                (
                    scope("repository:team/app:pull,push"),
                    Grant {
                        actions: vec!["pull".into()],
                        rule: rule(3, "team \"read\"\\ \u{1}\t\u{7f} é"),
                    },
                ),
                (
                    scope("registry:catalog:*"),
                    Grant {
                        actions: vec!["*".into()],
                        rule: rule(0, ""),
                    },
                ),
                (
                    scope("repository:library/alpine:pull"),
                    Grant {
                        actions: vec![],
                        rule: rule(usize::MAX, "deny"),
                    },
                ),
            ],
        ];
        for decisions in cases {
            let written = scopes_json(&decisions);
            assert_eq!(written, scopes_via_value(&decisions));
            let parsed: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert_eq!(parsed.as_array().unwrap().len(), decisions.len());
        }
    }
}
