//! `check` says what STABLE rules out, and `--sensitivity` holds a run to
//! a leak size: the case of a service leaking 2 KiB per request,
//! 900 requests, under RSS's 4 MiB floor.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use leakscope_rundir::{LoadSample, Meta, ProcSample, RunWriter, Sample, SCHEMA_VERSION};

/// 10 idle ticks, 900 requests over 45 ticks, 2 KiB kept by each, a
/// little noise, then 10 idle ticks.
fn write_run(out: &Path) {
    let mut w = RunWriter::create(
        out,
        Meta {
            schema_version: SCHEMA_VERSION,
            interval_ms: 250,
            ..Meta::default()
        },
    )
    .unwrap();
    for seq in 0..65u64 {
        let requests = seq.saturating_sub(10).min(45) * 20;
        w.append(&Sample {
            seq,
            t_ms: seq * 250,
            proc: Some(ProcSample {
                rss_bytes: (40 << 20) + requests * 2048 + (seq * 7919 % 5) * 4096,
                fds: 12,
                ..ProcSample::default()
            }),
            load: Some(LoadSample {
                requests_total: requests,
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

fn rss_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("resident memory"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn stable_says_what_it_rules_out_and_a_sensitivity_it_cannot_reach_is_inconclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(&run);
    let run = run.to_str().unwrap();

    let o = check(&[run]);
    let line = rss_line(&o);
    assert_eq!(o.status.code(), Some(0), "{line}");
    assert!(line.contains("STABLE"), "{line}");
    // 4 MiB over the window's requests (its warm-up dropped): 4 MiB / 800.
    assert!(
        line.contains("rules out leaks above 5.1 KiB per request"),
        "{line}"
    );

    let o = check(&["--sensitivity", "rss=1KiB", run]);
    let line = rss_line(&o);
    assert_eq!(o.status.code(), Some(1), "{line}");
    assert!(line.contains("INCONCLUSIVE"), "{line}");
    assert!(line.contains("not the 1.0 KiB asked"), "{line}");
    assert!(line.contains("× the work would reach it"), "{line}");

    let o = check(&["--sensitivity", "rss=8KiB", run]);
    assert_eq!(o.status.code(), Some(0), "{}", rss_line(&o));
    assert!(rss_line(&o).contains("STABLE"));

    let o = check(&["--json", run]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rss = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "rss")
        .unwrap();
    let limit = rss["detection_limit"].as_f64().unwrap();
    assert!((5000.0..5500.0).contains(&limit), "{limit}");
}

#[test]
fn a_bad_sensitivity_is_a_clear_error() {
    for (arg, says) in [
        ("heapish=1KiB", "not a metric with a verdict"),
        ("rss", "expected METRIC=AMOUNT"),
        ("rss=lots", "lots"),
        ("fds=0", "above 0"),
        ("allocation=1KiB", "not a metric with a verdict"),
    ] {
        let o = check(&["--sensitivity", arg, "nowhere"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
    }
}
