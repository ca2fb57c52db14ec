//! `leakscope fleet` on a live fleet: three download-server replicas on
//! loopback, one leaky and two fixed, scraped every second by a real
//! Prometheus while `leakscope load` drives all three at once. The command
//! must name the leaking replica with its rate per request, pass the two
//! others, and exit 1.
//!
//! The truth comes from the scenario, not from a run: in the leaky variant
//! of `fd-leak` every aborted download leaks its file's descriptor (the
//! raw fd's hand-written `close` is skipped by the `?` on the failed send),
//! and the load aborts every download after 64 KiB of an 8 MiB file, so the
//! leak is 1 fd per request; the fixed variant keeps the fd owned, 0.
//!
//! Needs the servers: `cargo test` lists it as ignored, and `cargo xtask
//! test` runs it where they are installed (CI installs Debian's
//! `prometheus` and `victoria-metrics`, and there a missing one fails the
//! run).

mod fleet_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_support::live::{self, Replica};
use serde_json::Value;

/// The scenario's file: far larger than what the load reads (64 KiB) plus
/// what loopback's socket buffers take, so every download is aborted
/// mid-send and the leaky handler's early return is taken every time.
const FILE_BYTES: usize = 8 << 20;
/// Fds leaked per request: one per aborted download in the leaky variant.
const TRUTH_FDS_PER_REQUEST: f64 = 1.0;
/// Load, all replicas together, in turn: paced so a loaded 2-core machine
/// keeps up and Prometheus' 1 s scrapes see the load many times; the
/// requests and the duration bound it (about 530 fds leaked at most, far
/// below any fd limit).
const RATE: &str = "80";
const REQUESTS: &str = "1600";
const LOAD_FOR: &str = "20s";
/// Seconds of scrapes before the load and after it, so the fit has the
/// baseline and the idle tail it judges a plateau against.
const BASELINE_S: f64 = 3.0;
const TAIL_S: f64 = 4.0;

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
#[ignore = "needs prometheus: cargo xtask test runs it where prometheus is installed"]
fn fleet_names_the_leaking_replica_of_a_live_fleet() {
    fleet_support::require("prometheus", "--version");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![1u8; FILE_BYTES]).unwrap();
    let replicas = [
        live::replica("leaky", &root, "leaky"),
        live::replica("fixed-a", &root, "fixed"),
        live::replica("fixed-b", &root, "fixed"),
    ];
    let prom = live::prometheus(&replicas);
    let limit = Duration::from_secs(30);
    let targets = 2.0 * replicas.len() as f64;
    live::wait_for(&prom, "count(up == 1)", |n| n >= targets, limit);
    let start = now_s().floor();
    // Every target scraped BASELINE_S after the start.
    let newest = "min(timestamp(up))";
    live::wait_for(&prom, newest, |t| t >= start + BASELINE_S, limit);
    drive(&replicas);
    let load_end = now_s();
    live::wait_for(&prom, newest, |t| t >= load_end + TAIL_S, limit);
    judge(&prom.url, start as i64, now_s().ceil() as i64);
}

/// `leakscope load` at every replica at the same time, one URL each, in
/// turn; bounded in requests and time, loopback only.
fn drive(replicas: &[Replica]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakscope"));
    cmd.args(["load", "--quiet", "--load", "abort:64KiB"])
        .args(["--concurrency", "6", "--rate", RATE])
        .args(["--requests", REQUESTS, "--load-duration", LOAD_FOR])
        .args(["--request-timeout", "10s"]);
    for r in replicas {
        cmd.args(["--url", &format!("http://{}/s/fd-leak/big.bin", r.server)]);
    }
    let o = cmd.output().expect("running leakscope load");
    eprintln!(
        "leakscope load: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn judge(url: &str, start: i64, end: i64) {
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report");
    let range = [
        "--by".to_string(),
        "replica".into(),
        "--requests".into(),
        "http_requests_total{route=\"scenario\"}".into(),
        "--start".into(),
        start.to_string(),
        "--end".into(),
        end.to_string(),
        "--step".into(),
        "1s".into(),
    ];
    let mut args: Vec<&str> = range.iter().map(String::as_str).collect();
    let (code, text, stderr) = fleet_support::fleet(url, &out.path().join("text"), &args);
    eprintln!("leakscope fleet {}\n{text}{stderr}", args.join(" "));
    let report_s = report.display().to_string();
    args.extend(["--json", "--report", &report_s]);
    let (json_code, stdout, stderr) = fleet_support::fleet(url, &out.path().join("runs"), &args);
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(code, 1, "a leak must fail the gate\n{text}");
    assert_eq!(json_code, 1, "{stdout}\n{stderr}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("LEAK") && l.contains("leaky")),
        "{text}"
    );
    let instances: BTreeMap<&str, &Value> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instance"].as_str().unwrap(), i))
        .collect();
    assert_eq!(instances.len(), 3, "{stdout}");
    assert_eq!(v["instances"][0]["instance"], "leaky", "the leak first");
    leaky(instances["leaky"]);
    for name in ["fixed-a", "fixed-b"] {
        let i = instances[name];
        let status = i["status"].as_str().unwrap();
        assert!(["BOUNDED", "STABLE"].contains(&status), "{name}:\n{i:#}");
        let fds = fds_metric(&i["segments"][0]);
        assert!(["BOUNDED", "STABLE"].contains(&fds["verdict"].as_str().unwrap()));
    }
    let index = std::fs::read_to_string(report.join("index.html")).expect("the report's index");
    let first = index
        .find("leaky")
        .expect("the leaking replica in the report");
    let fine = index
        .find("fixed-a")
        .expect("a fixed replica in the report");
    assert!(first < fine, "the leaking replica must come first");
}

/// LEAK on fds, one segment (no restart), at 1 fd per request: the
/// interval holds the truth, or misses it by no more than its own width
/// (the counter and the fds are scraped from two ports a moment apart,
/// which only blurs the edges of the load).
fn leaky(i: &Value) {
    let segments = i["segments"].as_array().unwrap();
    assert_eq!(i["status"], "LEAK", "{i:#}");
    assert_eq!(segments.len(), 1, "no restart, one segment:\n{i:#}");
    let seg = &segments[0];
    assert!(seg["requests"].as_f64().unwrap() > 100.0, "{seg:#}");
    let fds = fds_metric(seg);
    assert_eq!(fds["verdict"], "LEAK", "{fds:#}");
    let s = &fds["slope"];
    let (value, lo, hi) = (
        s["value"].as_f64().unwrap(),
        s["lo"].as_f64().unwrap(),
        s["hi"].as_f64().unwrap(),
    );
    let width = hi - lo;
    let truth = TRUTH_FDS_PER_REQUEST;
    assert!(
        lo - width <= truth && truth <= hi + width,
        "fds per request {value} ({lo}..{hi}), truth {truth}"
    );
    eprintln!("leaky: {value:.4} fds per request (95% CI {lo:.4} to {hi:.4}), truth {truth}");
}

fn fds_metric(segment: &Value) -> &Value {
    segment["check"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "fds")
        .expect("an fds verdict")
}
