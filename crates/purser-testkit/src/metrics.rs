//! Prometheus text expositions: parsing, and reading one series.

use std::collections::BTreeMap;

use crate::http::Http;
use crate::purser::Purser;

/// Parses a Prometheus text exposition into `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of a series in a Prometheus text exposition; 0 when absent.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .find(|(key, _)| {
            let (n, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .unwrap_or(0.0)
}

impl Purser {
    /// The value of the series `name` whose labels include `labels`; 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let resp = Http::get(&self.metrics_url()).send().expect("GET /metrics");
        assert_eq!(resp.status, 200, "GET /metrics: {}", resp.text());
        metric_in(&resp.text(), name, labels)
    }
}
