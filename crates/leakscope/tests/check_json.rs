//! `leakscope check`, text and JSON, on a run directory written with the
//! real writer: a service that opens a new log file per request until it
//! runs out of descriptors. Its fd paths are grouped by pattern, the file
//! kind reads EXHAUSTED with its total, and the JSON follows the schema.

mod schema;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use leakscope_rundir::{LoadSample, Meta, ProcSample, RunWriter, Sample};

const LIMIT: u64 = 1024;

fn meta() -> Meta {
    Meta {
        command: vec!["log-leak".into()],
        labels: BTreeMap::from([("scenario".into(), "log-leak".into())]),
        interval_ms: 250,
        ended_unix_ms: Some(15_000),
        limits: leakscope_rundir::Limits {
            open_files: Some(LIMIT),
            ..Default::default()
        },
        ..Meta::default()
    }
}

/// 40 requests a tick, 4 in flight, each leaving `/tmp/app-logs-7/req-N.log`
/// open, until the process holds its limit and every request after fails.
fn write_run(out: &Path) {
    let mut w = RunWriter::create(out, meta()).unwrap();
    let room = LIMIT - 3 - 13;
    for seq in 0..60u64 {
        let asked = seq.saturating_sub(4) * 40;
        let served = asked.min(room);
        let loaded = (4..50).contains(&seq);
        let kinds = [
            ("file", 6 + served),
            ("socket", 1 + if loaded { 4 } else { 0 }),
            ("pipe", 4),
        ];
        let mut top_files = vec![("/usr/lib/libc.so.6".to_string(), 1)];
        top_files.extend(
            (served.saturating_sub(9)..served).map(|n| (format!("/tmp/app-logs-7/req-{n}.log"), 1)),
        );
        w.append(&Sample {
            seq,
            t_ms: seq * 250,
            proc: Some(ProcSample {
                cpu_user_seconds: seq as f64 * 0.05,
                fds: kinds.iter().map(|(_, n)| n).sum(),
                rss_bytes: 50 << 20,
                fds_by_kind: kinds.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
                top_files,
                top_file_patterns: vec![
                    ("/tmp/app-logs-*/req-*.log".into(), served),
                    ("/usr/lib/libc.so.*".into(), 1),
                ],
                ..ProcSample::default()
            }),
            load: Some(LoadSample {
                requests_total: served,
                done: served,
                failed: asked - served,
                concurrency: if loaded { 4 } else { 0 },
                ..LoadSample::default()
            }),
            ..Sample::default()
        })
        .unwrap();
    }
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .arg("check")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_log_file_per_request_is_one_pattern_and_the_file_kind_drove_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    write_run(&out);
    let run = out.to_str().unwrap();

    let o = check(&["--json", run]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    schema::assert_follows_schema(&v);
    let metric = |id: &str| {
        v["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {v:#}"))
    };
    assert_eq!(metric("fds")["verdict"], "EXHAUSTED");
    let file = metric("fds.file");
    assert_eq!(file["verdict"], "EXHAUSTED", "{file:#}");
    assert!(file["summary"]
        .as_str()
        .unwrap()
        .contains("drove the total to its limit"));
    assert!(file["per_in_flight"].is_null(), "{file:#}");
    assert!(metric("fds.socket")["per_in_flight"].is_null());
    let top = &v["attribution"]["fd_paths"][0];
    assert_eq!(top["key"], "/tmp/app-logs-*/req-*.log", "{v:#}");
    assert_eq!(top["pattern"], true);
    assert!(top["growth"].as_f64().unwrap() > 500.0, "{top}");

    let o = check(&[run]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("most-grown fd path pattern: /tmp/app-logs-*/req-*.log (+"),
        "{text}"
    );
    assert!(!text.contains("per request in flight"), "{text}");
}
