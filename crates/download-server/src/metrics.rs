//! Prometheus metrics (OpenMetrics text, which Prometheus scrapes natively).
//!
//! Process gauges (open fds, resident memory) are read from procfs at scrape
//! time, so they cost nothing between scrapes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub bytes_sent: Counter,
    pub inflight: Gauge,
    pub zip_streams: Gauge,
    open_fds: Gauge,
    resident_bytes: Gauge,
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "http_response_body_bytes",
            "Response body bytes handed to the connection",
            bytes_sent.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being answered or streamed",
            inflight.clone(),
        );
        let zip_streams = Gauge::default();
        registry.register(
            "zip_streams_active",
            "ZIP archives being streamed",
            zip_streams.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            open_fds.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size in bytes",
            resident_bytes.clone(),
        );
        Self {
            registry,
            requests,
            bytes_sent,
            inflight,
            zip_streams,
            open_fds,
            resident_bytes,
        }
    }

    pub fn record(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// Refreshes the process gauges and renders the exposition text.
    pub fn render(&self) -> String {
        if let Ok(me) = procfs::process::Process::myself() {
            if let Ok(n) = me.fd_count() {
                self.open_fds.set(n as i64);
            }
            if let Ok(statm) = me.statm() {
                self.resident_bytes
                    .set((statm.resident * procfs::page_size()) as i64);
            }
        }
        let mut out = String::with_capacity(2048);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
