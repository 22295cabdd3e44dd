//! The JSON log format's one addition to tracing-subscriber's: in audit records, the fields
//! that hold JSON text (`scopes`, `groups`) are written as JSON values, so that log pipelines
//! (Loki, Elasticsearch) index the array as it is instead of a string of JSON.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::stack::telemetry::AUDIT_TARGET;

/// The audit record's fields that carry JSON text.
const JSON_FIELDS: &[&str] = &["scopes", "groups", "labels", "cap", "shadow"];

/// Wraps the JSON event format: audit records are re-read and their JSON-text fields embedded.
pub struct AuditJson<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for AuditJson<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != AUDIT_TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(512);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&embed_json_fields(&line))
    }
}

/// `line` (one JSON object and a newline) with each of [`JSON_FIELDS`] that holds JSON text
/// replaced by that JSON; anything else is returned as it was.
fn embed_json_fields(line: &str) -> String {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(line.trim_end()) else {
        return line.to_string();
    };
    for key in JSON_FIELDS {
        if let Some(serde_json::Value::String(text)) = map.get(*key) {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
                map.insert((*key).to_string(), value);
            }
        }
    }
    let mut out = serde_json::Value::Object(map).to_string();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_fields_become_values_and_the_rest_stays() {
        let line = r#"{"timestamp":"t","level":"INFO","scopes":"[{\"granted\":[\"pull\"],\"rule\":null,\"scope\":\"repository:a:pull\"}]","groups":"[\"devs\"]","account":"alice","status":200,"target":"purser::audit"}"#;
        let out: serde_json::Value = serde_json::from_str(&embed_json_fields(line)).unwrap();
        assert_eq!(out["scopes"][0]["granted"][0], "pull");
        assert_eq!(out["scopes"][0]["scope"], "repository:a:pull");
        assert_eq!(out["groups"], serde_json::json!(["devs"]));
        assert_eq!(out["account"], "alice");
        assert_eq!(out["status"], 200);
        assert!(embed_json_fields(line).ends_with('\n'));
        // Not JSON: passed through untouched.
        assert_eq!(embed_json_fields("not json\n"), "not json\n");
    }
}
