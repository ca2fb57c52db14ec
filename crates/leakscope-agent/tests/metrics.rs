//! `/metrics` from a real agent: valid for `promtool check metrics`, and
//! its values move with the process (fds opened, tasks spawned).
//!
//! The promtool test needs Debian's `prometheus` package: `cargo test` lists
//! it as ignored, and `cargo xtask test` runs it where promtool is
//! installed (in CI a missing promtool fails the run).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::get;

/// The tests here count the process's fds and tasks, which the others'
/// runtimes and sockets would move: they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test runs only when asked (`--ignored`), so a missing promtool
/// fails it.
fn require_promtool() {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "this test needs promtool (apt-get install prometheus)");
}

fn agent_on_hooked_runtime() -> (tokio::runtime::Runtime, leakscope_agent::Agent) {
    let rt = leakscope_agent::tasks::runtime()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let agent = rt.block_on(async { common::start_agent() });
    (rt, agent)
}

/// `(name and labels, value)` of every sample in a Prometheus text body.
fn samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(body: &str, series: &str) -> f64 {
    samples(body)
        .into_iter()
        .find(|(k, _)| k == series)
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .1
}

fn scrape(addr: SocketAddr) -> String {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// promtool's text parser and linter over the real answer, both formats'
/// worth: the Prometheus text a plain GET gets. Empty output and exit 0 is
/// what "no problems" looks like.
#[test]
#[ignore = "needs promtool: cargo xtask test runs it where prometheus is installed"]
fn promtool_check_metrics_reports_nothing_on_the_real_output() {
    require_promtool();
    let _turn = serial();
    let (rt, agent) = agent_on_hooked_runtime();
    let addr = agent.local_addr().unwrap();
    // Some tasks, so the by-site family has series to lint.
    let _parked: Vec<_> = (0..30)
        .map(|_| rt.spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await }))
        .collect();
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some(leakscope_agent::metrics::PROMETHEUS_TEXT_CONTENT_TYPE)
    );
    let body = r.text();
    for name in [
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
        "process_threads",
        "leakscope_jemalloc_allocated_bytes",
        "leakscope_jemalloc_resident_bytes",
        "leakscope_allocator_allocated_bytes_total",
        "leakscope_allocator_live_bytes",
        "leakscope_tasks_live",
        "leakscope_agent_collections_total",
        "leakscope_agent_thread_cpu_seconds_total",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing:\n{body}"
        );
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "promtool check metrics: exit {:?}, {} bytes of output, over {} samples",
        out.status.code(),
        said.len(),
        samples(&body).len()
    );
    assert!(out.status.success() && said.is_empty(), "{said}\n{body}");
    drop(agent);
    // Whole, before the turn passes: a background shutdown left
    // tasks ending on the workers while the next test counted.
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// OpenMetrics for a client that asks (Prometheus does), ending in `# EOF`.
#[test]
fn openmetrics_is_served_to_a_client_that_asks_for_it() {
    let _turn = serial();
    let (rt, agent) = agent_on_hooked_runtime();
    let addr = agent.local_addr().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut s, &mut raw).unwrap();
    assert!(raw.contains("application/openmetrics-text"), "{raw}");
    assert!(raw.contains("# TYPE process_cpu_seconds counter"), "{raw}");
    assert!(raw.trim_end().ends_with("# EOF"), "{raw}");
    // Not in the Prometheus text answer (its parser reads it as a comment,
    // but `# EOF` mid-body would end an OpenMetrics parse).
    assert!(!scrape(addr).contains("# EOF"));
    drop(agent);
    // Whole, before the turn passes: a background shutdown left
    // tasks ending on the workers while the next test counted.
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Files the fd test opens, and how far others' fds may move the count.
const OPENED: usize = 512;
const MARGIN: f64 = 32.0;

#[test]
fn open_fds_and_live_tasks_move_with_the_process() {
    let _turn = serial();
    let (rt, agent) = agent_on_hooked_runtime();
    let addr = agent.local_addr().unwrap();
    let (first, at) = spawn_parked(&rt);
    let prefix = format!("leakscope_tasks_live_by_site{{site=\"{at}");
    let site = |body: &str| {
        samples(body)
            .into_iter()
            .find(|(k, _)| k.starts_with(&prefix))
            .map_or(0.0, |(_, v)| v)
    };
    first.abort();
    let _ = rt.block_on(first);
    // tokio wakes the JoinHandle before it runs the terminate hook: wait
    // until the hooks saw the task end.
    let mut before = scrape(addr);
    for _ in 0..100 {
        if site(&before) == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        before = scrape(addr);
    }
    let files: Vec<std::fs::File> = (0..OPENED)
        .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
        .collect();
    let parked: Vec<_> = (0..300).map(|_| spawn_parked(&rt).0).collect();
    let during = scrape(addr);
    // The count is the whole process's: threads of the test harness and
    // of the runtimes open and close fds of their own meanwhile (seen: 3
    // fewer), so it moves by ours within a margin, not exactly.
    let opened = value(&during, "process_open_fds") - value(&before, "process_open_fds");
    assert!(
        (opened - OPENED as f64).abs() <= MARGIN,
        "open fds moved by {opened}, {OPENED} opened"
    );
    assert_eq!(site(&before), 0.0);
    assert_eq!(site(&during), 300.0, "{during}");
    let live = value(&during, "leakscope_tasks_live") - value(&before, "leakscope_tasks_live");
    assert_eq!(live, 300.0, "live tasks moved by {live}");
    // The by-site series (top sites and "other") add up to the total.
    let by_site: f64 = samples(&during)
        .iter()
        .filter(|(k, _)| k.starts_with("leakscope_tasks_live_by_site{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_site, value(&during, "leakscope_tasks_live"));
    drop(files);
    for p in parked {
        p.abort();
    }
    // Aborted tasks end on the workers; wait until the hooks saw them.
    let mut after = scrape(addr);
    for _ in 0..100 {
        if site(&after) == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        after = scrape(addr);
    }
    assert_eq!(site(&after), 0.0, "{after}");
    let closed = value(&during, "process_open_fds") - value(&after, "process_open_fds");
    assert!(
        (closed - OPENED as f64).abs() <= MARGIN,
        "open fds fell by {closed}, {OPENED} closed"
    );
    // The process's own figures against what the kernel says directly.
    let limit = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: f64 = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("a finite soft limit");
    assert_eq!(value(&after, "process_max_fds"), soft);
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count() as f64;
    assert!((value(&after, "process_threads") - threads).abs() <= 4.0);
    let collections = value(&after, "leakscope_agent_collections_total");
    assert!(collections >= 2.0, "{collections}");
    drop(agent);
    // Whole, before the turn passes: a background shutdown left
    // tasks ending on the workers while the next test counted.
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// The collector mounted in a host's own registry gives the same families.
#[test]
fn register_mounts_the_collector_in_a_host_registry() {
    // Its /proc reads would move the fd counts the other tests measure.
    let _turn = serial();
    let mut registry = prometheus_client::registry::Registry::default();
    leakscope_agent::metrics::register(&mut registry);
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
    assert!(body.contains("# TYPE process_open_fds gauge"), "{body}");
    assert!(value(&body, "process_open_fds") > 0.0);
}

/// Parks a task from one line; returns its handle and that line's
/// `file:line:` as the site label starts.
fn spawn_parked(rt: &tokio::runtime::Runtime) -> (tokio::task::JoinHandle<()>, String) {
    #[rustfmt::skip]
    let (h, line) = (rt.spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await }), line!());
    (h, format!("{}:{line}:", file!()))
}
