//! `leakscope fleet` against real servers holding hours of a fleet's
//! history: Prometheus, backfilled with `promtool`, and VictoriaMetrics,
//! imported through its API. Each fixture instance is a shape that fools a
//! rule fleets alert on; the command must be right on every one.
//!
//! Needs the servers: `cargo test` lists it as ignored, and `cargo xtask
//! test` runs it where they are installed (CI installs Debian's
//! `prometheus` and `victoria-metrics`, and there a missing one fails the
//! run).

mod fleet_support;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use fleet_support::fixtures::{self, Shape, POINTS, STEP_S};
use serde_json::Value;

/// The fixture's first point: 7 h ago, on a minute, so the range lies in
/// the recent past of both servers' retention.
fn t0() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = now - 7 * 3600;
    t - t.rem_euclid(60)
}

fn range(t0: i64) -> [String; 6] {
    [
        "--start".into(),
        t0.to_string(),
        "--end".into(),
        (t0 + (POINTS - 1) * STEP_S).to_string(),
        "--step".into(),
        format!("{STEP_S}s"),
    ]
}

/// Runs the command with `--json` and checks every instance's verdict.
fn judge_fleet(url: &str, t0: i64) {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report");
    let mut args: Vec<String> = range(t0).into();
    args.extend([
        "--json".into(),
        "--report".into(),
        report.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = fleet_support::fleet(url, &out.path().join("runs"), &args);
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(code, 1, "a leak must fail the gate\n{stdout}\n{stderr}");
    let instances: BTreeMap<&str, &Value> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instance"].as_str().unwrap(), i))
        .collect();
    assert_eq!(instances.len(), fixtures::FLEET.len(), "{stdout}");
    for (name, shape) in fixtures::FLEET {
        let i = instances[name];
        let status = i["status"].as_str().unwrap();
        let segments: Vec<&str> = i["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        let why = format!("{name} ({shape:?}): {status} {segments:?}\n{i:#}");
        match shape {
            Shape::WarmUp | Shape::Sawtooth | Shape::TrafficDoubling => {
                assert!(["BOUNDED", "STABLE"].contains(&status), "{why}");
                assert_eq!(segments.len(), 1, "{why}");
            }
            Shape::NightLeak => {
                assert_eq!(
                    (status, segments.as_slice()),
                    ("LEAK", &["LEAK"][..]),
                    "{why}"
                );
                let fds = fds_metric(&i["segments"][0]);
                assert_eq!(fds["verdict"], "LEAK", "{why}");
                let f = fds["forecast"]
                    .as_str()
                    .expect("a forecast to the fd limit");
                assert!(f.contains("1024"), "{f}");
                // One fd per 2,500 requests, within its interval.
                let s = &fds["slope"];
                assert!(s["lo"].as_f64().unwrap() <= 1.0 / 2500.0, "{s}");
                assert!(s["hi"].as_f64().unwrap() >= 1.0 / 2500.0, "{s}");
            }
            Shape::RestartLeak => {
                // A fit on each side of the restart, none across it.
                assert_eq!(segments, ["LEAK", "LEAK"], "{why}");
            }
            Shape::NoFdLimit => {
                assert_eq!(status, "LEAK", "{why}");
                let seg = &i["segments"][0];
                assert!(seg["max_fds"].is_null(), "{why}");
                let fds = fds_metric(seg);
                assert!(
                    fds["forecast"].is_null() && fds["exhausted"].is_null(),
                    "{why}"
                );
                let text = i.to_string().to_lowercase();
                assert!(
                    !text.contains("inf\"") && !text.contains("infinity"),
                    "{why}"
                );
            }
            Shape::Idle => assert_eq!(status, "NO_LOAD", "{why}"),
            Shape::MemLeak => memory_leak(i, &why),
        }
    }
    // The leaking replicas lead: the worst status first.
    let first = v["instances"][0]["status"].as_str().unwrap();
    assert_eq!(first, "LEAK", "{stdout}");
    let index = std::fs::read_to_string(report.join("index.html")).expect("the report's index");
    // The text a person reads, in the test's output.
    let args: Vec<String> = range(t0).into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text, _) = fleet_support::fleet(url, &out.path().join("text"), &args);
    eprintln!("leakscope fleet --url {url} {}\n{text}", args.join(" "));
    assert_eq!(code, 1);
    assert!(
        text.lines()
            .any(|l| l.starts_with("LEAK") && l.contains("nightleak:9100")),
        "{text}"
    );
    let leak = index
        .find("nightleak:9100")
        .expect("the leaking replica in the index");
    let fine = index
        .find("warmup:9100")
        .expect("a healthy replica in the index");
    assert!(leak < fine, "the leaking replica must come first");
}

/// The slow memory leak: RSS LEAK at the rate it was made with (inside
/// the 95% interval), on flat fds, while RSS stays far below any static
/// threshold.
fn memory_leak(i: &Value, why: &str) {
    let segments = i["segments"].as_array().unwrap();
    assert_eq!(i["status"], "LEAK", "{why}");
    assert_eq!(segments.len(), 1, "{why}");
    let rss = metric(&segments[0], "rss");
    assert_eq!(rss["verdict"], "LEAK", "{why}");
    let truth = fixtures::MEMLEAK_BYTES_PER_REQUEST;
    let s = &rss["slope"];
    assert!(s["lo"].as_f64().unwrap() <= truth, "{s}\n{why}");
    assert!(s["hi"].as_f64().unwrap() >= truth, "{s}\n{why}");
    assert_ne!(metric(&segments[0], "fds")["verdict"], "LEAK", "{why}");
}

fn fds_metric(segment: &Value) -> &Value {
    metric(segment, "fds")
}

fn metric<'a>(segment: &'a Value, name: &str) -> &'a Value {
    segment["check"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("a {name} verdict in {segment:#}"))
}

/// What the server's errors, an unreachable server, a selector that
/// matches nothing and a value that is not finite turn into: exit 2 and a
/// line that says which.
fn errors(url: &str, port_closed: u16, t0: i64) {
    let r = range(t0);
    let r: Vec<&str> = r.iter().map(String::as_str).collect();
    let cases: [(String, Vec<&str>, &str); 4] = [
        (
            format!("http://127.0.0.1:{port_closed}"),
            vec![],
            "cannot be reached",
        ),
        (
            url.into(),
            vec!["--fds", "rate(process_open_fds"],
            "bad_data",
        ),
        (
            url.into(),
            vec!["--fds", "no_such_metric"],
            "no series match",
        ),
        (url.into(), vec!["--fds", "process_open_fds / 0"], "finite"),
    ];
    for (target, extra, says) in cases {
        let out = tempfile::tempdir().unwrap();
        let mut args = r.clone();
        args.extend(&extra);
        let (code, stdout, stderr) = fleet_support::fleet(&target, &out.path().join("runs"), &args);
        assert_eq!(code, 2, "{extra:?}: {stdout}\n{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(all.contains(says), "{extra:?} must say {says:?}:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
    }
}

/// Six hours at 1 s are 21,601 points, past Prometheus' 11,000 per
/// series: the command asks in pieces and still judges the whole range,
/// each 15 s scrape once (the lookback repeats it at 15 steps; a fit that
/// took the repeats for readings would narrow its interval for nothing).
fn past_the_points_limit(url: &str, t0: i64) {
    let out = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = range(t0).into();
    args[5] = "1s".into();
    args.extend([
        "--json".into(),
        "--fds".into(),
        "process_open_fds{instance=\"nightleak:9100\"}".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = fleet_support::fleet(url, &out.path().join("runs"), &args);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let i = &v["instances"][0];
    assert_eq!(i["instance"], "nightleak:9100", "{stdout}");
    assert_eq!(i["status"], "LEAK", "{i:#}");
    assert_eq!(i["segments"][0]["samples"], POINTS, "{i:#}");
}

#[test]
#[ignore = "needs prometheus: cargo xtask test runs it where prometheus is installed"]
fn prometheus_history_names_the_leaking_replicas() {
    fleet_support::require("promtool", "--version");
    fleet_support::require("prometheus", "--version");
    let t0 = t0();
    let fleet = fixtures::fleet(t0);
    let text = fixtures::openmetrics(&fleet);
    // For a transcript by hand: the same history, to backfill elsewhere.
    if let Some(dir) = std::env::var_os("LEAKSCOPE_FLEET_DUMP") {
        std::fs::write(std::path::Path::new(&dir).join("fleet.om"), &text).unwrap();
    }
    let server = fleet_support::prometheus(&text);
    judge_fleet(&server.url, t0);
    errors(&server.url, fleet_support::free_port(), t0);
    past_the_points_limit(&server.url, t0);
}

#[test]
#[ignore = "needs victoria-metrics: cargo xtask test runs it where it is installed"]
fn victoria_metrics_history_gives_the_same_verdicts() {
    fleet_support::require("victoria-metrics", "-version");
    let t0 = t0();
    let fleet = fixtures::fleet(t0);
    let series = fixtures::FLEET.len() * 5;
    let last = t0 + (POINTS - 1) * STEP_S;
    let server = fleet_support::victoria(&fixtures::prometheus_text(&fleet), series, last);
    judge_fleet(&server.url, t0);
}
