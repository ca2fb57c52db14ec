//! `/metrics`: the process, allocator and task figures as Prometheus metrics.
//!
//! Everything is read when a scrape asks (a prometheus-client [`Collector`]),
//! so between scrapes the agent spends nothing on metrics, and a value is
//! never older than the scrape that carries it. [`register`] mounts the same
//! collector in the host's own [`Registry`] for services that already serve
//! `/metrics`.
//!
//! What is exported (full list with types in docs/agent.md):
//! - The standard process metrics with the names, types, units and help
//!   texts of Go's client_golang process collector (`process_threads` from
//!   the Rust `prometheus` crate's), read from `/proc/self`. Linux only:
//!   elsewhere they are absent. `process_max_fds` is the soft
//!   `RLIMIT_NOFILE`; an `unlimited` limit has no finite value and the
//!   series is then left out (Linux refuses an unlimited `RLIMIT_NOFILE`,
//!   so it does not happen there).
//! - With the `jemalloc` feature, jemalloc's byte figures and the agent's
//!   allocation counters, as `/debug/heap/stats` reports them.
//! - With the task hooks ([`crate::tasks`]), live tasks in total and by spawn
//!   site: the [`TOP_SITES`] sites with most live tasks, and one
//!   `site="other"` series holding the rest, so the label set stays bounded
//!   however many sites a program has.
//! - The collector's own cost: collections and the wall seconds they took,
//!   and the CPU seconds of the agent's listener thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

mod procfs;

/// How many spawn sites get a series of their own in
/// `leakscope_tasks_live_by_site`; the rest are summed into `site="other"`.
pub const TOP_SITES: usize = 20;

/// The content type of the OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text (0.0.4) answer.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The name the agent's threads carry (also their `comm`): its listener
/// and its runtime's blocking threads, which run heap dumps and CPU
/// profiles and are kept, so their CPU stays countable.
pub(crate) const AGENT_THREAD: &str = "leakscope-agent";

static COLLECTIONS: AtomicU64 = AtomicU64::new(0);
static COLLECTION_NANOS: AtomicU64 = AtomicU64::new(0);

/// Adds the agent's collector to `registry`: every metric listed in the
/// module documentation, read at each scrape. Mount it once per registry
/// (twice would export every series twice). A prefixed sub-registry
/// prefixes these names too, which breaks the standard `process_*` names
/// dashboards and alerts expect: mount it at the top level.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(AgentCollector));
}

/// The collector [`register`] mounts.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentCollector;

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let started = Instant::now();
        let out = encode_all(&mut encoder);
        // Counted after the fact: a scrape reports the collections before
        // it, never a half-measured one.
        COLLECTIONS.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        COLLECTION_NANOS.fetch_add(nanos, Ordering::Relaxed);
        out
    }
}

fn encode_all(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    process(e)?;
    #[cfg(feature = "jemalloc")]
    allocator(e)?;
    tasks(e)?;
    own_cost(e)
}

fn gauge<N>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// `name` without `_total`: the encoder appends it.
fn counter<N>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    let m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

/// client_golang's process collector, name for name and help for help, so
/// existing dashboards and the fd-exhaustion alert work unchanged. A read
/// that fails leaves its series out rather than exporting a made-up zero.
fn process(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(p) = procfs::read_self() else {
        return Ok(());
    };
    if let Some(cpu) = p.cpu_seconds {
        let help = "Total user and system CPU time spent in seconds.";
        counter(e, "process_cpu", help, Some(&Unit::Seconds), cpu)?;
    }
    if let Some(fds) = p.open_fds {
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            fds,
        )?;
    }
    if let Some(max) = p.max_fds {
        let help = "Maximum number of open file descriptors.";
        gauge(e, "process_max_fds", help, None, max)?;
    }
    if let Some(v) = p.virtual_bytes {
        let help = "Virtual memory size in bytes.";
        gauge(e, "process_virtual_memory", help, Some(&Unit::Bytes), v)?;
    }
    if let Some(r) = p.resident_bytes {
        let help = "Resident memory size in bytes.";
        gauge(e, "process_resident_memory", help, Some(&Unit::Bytes), r)?;
    }
    if let Some(s) = p.start_time_seconds {
        let help = "Start time of the process since unix epoch in seconds.";
        gauge(e, "process_start_time", help, Some(&Unit::Seconds), s)?;
    }
    if let Some(t) = p.threads {
        gauge(
            e,
            "process_threads",
            "Number of OS threads in the process.",
            None,
            t,
        )?;
    }
    Ok(())
}

/// jemalloc's figures and its per-thread byte counters' totals; a failed
/// mallctl read leaves them all out. (jemalloc keeps no call counts that
/// see its thread caches, so there are none here.)
#[cfg(feature = "jemalloc")]
fn allocator(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Ok(s) = crate::heap::stats() else {
        return Ok(());
    };
    let bytes = Some(&Unit::Bytes);
    for (name, help, v) in [
        ("leakscope_jemalloc_allocated", "Bytes in live allocations (jemalloc stats.allocated): what a leak grows.", s.allocated),
        ("leakscope_jemalloc_active", "Bytes in active pages (jemalloc stats.active).", s.active),
        ("leakscope_jemalloc_resident", "Bytes physically resident in jemalloc's mappings (stats.resident); resident minus allocated is held, not leaked.", s.resident),
        ("leakscope_jemalloc_mapped", "Bytes mapped by jemalloc (stats.mapped).", s.mapped),
        ("leakscope_jemalloc_retained", "Virtual bytes jemalloc keeps reserved for reuse (stats.retained).", s.retained),
        ("leakscope_jemalloc_metadata", "jemalloc metadata bytes (stats.metadata).", s.metadata),
        ("leakscope_allocator_live", "Bytes allocated and not yet freed, without thread-cache slack (jemalloc: size-class bytes from its per-thread counters).", s.live_bytes),
    ] {
        if let Some(v) = v {
            gauge(e, name, help, bytes, v)?;
        }
    }
    if let Some(v) = s.allocated_bytes_total {
        let help = "Bytes of all allocations since start (jemalloc: size-class bytes).";
        counter(e, "leakscope_allocator_allocated", help, bytes, v)?;
    }
    Ok(())
}

/// Live tasks from the task hooks; absent without them (a zero would read
/// as "no tasks").
fn tasks(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(snap) = crate::tasks::snapshot() else {
        return Ok(());
    };
    let help = "Live tokio tasks, counted by the runtime's spawn and terminate hooks.";
    gauge(e, "leakscope_tasks_live", help, None, snap.live)?;
    let help = "Tokio tasks spawned since the hooks were installed.";
    counter(e, "leakscope_tasks_spawned", help, None, snap.spawned_total)?;
    let help = "Live tokio tasks by spawn site (file:line:column): the sites with most live \
                tasks, the rest summed in the site other.";
    let mut m = e.encode_descriptor(
        "leakscope_tasks_live_by_site",
        help,
        None,
        MetricType::Gauge,
    )?;
    let other: u64 = snap.sites.iter().skip(TOP_SITES).map(|s| s.live).sum();
    for s in snap.sites.iter().take(TOP_SITES) {
        let labels = [("site", s.location.as_str())];
        ConstGauge::new(s.live).encode(m.encode_family(&labels)?)?;
    }
    ConstGauge::new(other).encode(m.encode_family(&[("site", "other")])?)
}

fn own_cost(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let help = "Times the agent's collector has run, not counting the one in progress.";
    counter(
        e,
        "leakscope_agent_collections",
        help,
        None,
        COLLECTIONS.load(Ordering::Relaxed),
    )?;
    let secs = COLLECTION_NANOS.load(Ordering::Relaxed) as f64 / 1e9;
    let help = "Wall seconds the agent's collector has spent reading and encoding, over the \
                collections counted in leakscope_agent_collections_total.";
    counter(
        e,
        "leakscope_agent_collection",
        help,
        Some(&Unit::Seconds),
        secs,
    )?;
    if let Some(cpu) = procfs::thread_cpu_seconds(AGENT_THREAD) {
        let help = "User and system CPU seconds of the agent's threads: its listener (serving the \
                    endpoints) and the blocking threads its heap dumps and CPU profiles run on.";
        counter(
            e,
            "leakscope_agent_thread_cpu",
            help,
            Some(&Unit::Seconds),
            cpu,
        )?;
    }
    Ok(())
}

/// The agent's registry: the collector alone.
fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::default();
        register(&mut r);
        r
    })
}

/// The `/metrics` body and content type for a request's `Accept` header:
/// OpenMetrics when the client asks for it (Prometheus does), else the
/// Prometheus text format, which `promtool check metrics`, curl and older
/// scrapers read.
pub(crate) fn render(accept: Option<&str>) -> Result<(&'static str, String), std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry())?;
    if accept.is_some_and(wants_openmetrics) {
        Ok((OPENMETRICS_CONTENT_TYPE, body))
    } else {
        Ok((PROMETHEUS_TEXT_CONTENT_TYPE, to_prometheus_text(&body)))
    }
}

/// Whether an `Accept` header takes OpenMetrics: listed with a quality
/// above 0 (`q=0` means "not this").
fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let openmetrics = parts.next() == Some("application/openmetrics-text");
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        openmetrics && q > 0.0
    })
}

/// OpenMetrics text to Prometheus text 0.0.4. The two differ, for what this
/// collector writes, in three places: a counter's family is named without
/// `_total` in OpenMetrics and with it in Prometheus text (whose parser
/// otherwise sees a second, untyped family), and `# UNIT` and `# EOF` exist
/// only in OpenMetrics.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{p}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn openmetrics_only_when_the_client_takes_it() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ));
        assert!(wants_openmetrics("application/openmetrics-text; q=0.1"));
        assert!(!wants_openmetrics(
            "application/openmetrics-text;q=0, text/plain"
        ));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
    }

    use super::*;

    #[test]
    fn counters_get_total_in_their_family_name_and_openmetrics_only_lines_go() {
        let om = "# HELP a_seconds A.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\n\
                  a_seconds_total 1.5\n# HELP b B.\n# TYPE b gauge\nb 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_seconds_total A.\n# TYPE a_seconds_total counter\na_seconds_total 1.5\n\
             # HELP b B.\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn a_collection_is_counted_after_it_ends() {
        let before = COLLECTIONS.load(Ordering::Relaxed);
        let (_, body) = render(None).expect("encodes");
        assert!(COLLECTIONS.load(Ordering::Relaxed) > before);
        assert!(body.contains("leakscope_agent_collections_total"), "{body}");
    }
}
