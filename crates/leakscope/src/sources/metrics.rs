//! The load counter from a target's Prometheus / OpenMetrics endpoint.
//!
//! Requests served are the x axis of every per-request trend, so the count
//! must not include leakscope's own scrapes: series whose labels name the
//! metrics endpoint (`route="metrics"`, `path="/metrics"`, …) are left out.

use std::time::Duration;

use super::http::{self, HttpClient, HttpError};

/// The counter leakscope sums by default (the download server's, and the
/// usual name in HTTP instrumentation).
pub const DEFAULT_COUNTER: &str = "http_requests_total";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A count of requests is finite and not negative; NaN or -5 read as 0
    /// would pass for "no load".
    #[error("{counter} has a series of value {value}, which no count of requests can be")]
    NotACount { counter: String, value: f64 },
}

#[derive(Clone)]
pub struct MetricsSource {
    url: String,
    counter: String,
    client: HttpClient,
    timeout: Duration,
}

impl MetricsSource {
    pub fn new(url: &str, counter: &str, timeout: Duration) -> Self {
        Self {
            url: url.to_string(),
            counter: counter.to_string(),
            client: http::client(),
            timeout,
        }
    }

    /// The counter summed over its series, scrapes excluded. `None` while
    /// the scrape has no such counter: a labelled counter (prometheus-client's
    /// `Family`) does not appear at all until its first increment, so absence
    /// is not an error at first; the recorder reports a counter that never
    /// appears (a typo must not read as zero load).
    pub async fn requests_total(&self) -> Result<Option<u64>, MetricsError> {
        let body = http::get(&self.client, &self.url, self.timeout).await?;
        sum_counter(&String::from_utf8_lossy(&body), &self.counter)
    }

    pub fn counter(&self) -> &str {
        &self.counter
    }
}

/// Sums `name` over its series, skipping series labelled as the metrics
/// endpoint itself. `None` when no series has that name (or the text does
/// not parse); an error when a series is not a count (NaN, negative,
/// infinite).
pub fn sum_counter(text: &str, name: &str) -> Result<Option<u64>, MetricsError> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return Ok(None);
    };
    let mut found = false;
    let mut total = 0.0;
    for sample in scrape.samples.iter().filter(|s| s.metric == name) {
        found = true;
        let is_scrape = sample
            .labels
            .iter()
            .any(|(_, v)| v == "metrics" || v == "/metrics");
        if is_scrape {
            continue;
        }
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        };
        if !value.is_finite() || value < 0.0 {
            return Err(MetricsError::NotACount {
                counter: name.to_string(),
                value,
            });
        }
        total += value;
    }
    // A labelled counter has no series until its first increment, but its
    // HELP line is there: declared and empty means zero, not absent.
    let base = name.strip_suffix("_total").unwrap_or(name);
    let declared = scrape.docs.contains_key(name) || scrape.docs.contains_key(base);
    Ok((found || declared).then_some(total as u64))
}
