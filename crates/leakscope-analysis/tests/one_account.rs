//! One account per resource: an fd leak that ran into RLIMIT_NOFILE, seen
//! whole (`fds`), by kind (`fds.file`, `fds.socket`) and by path pattern,
//! in a run directory written with the real writer.

use leakscope_analysis::{analyze, Analysis, Verdict};
use leakscope_rundir::{LoadSample, Meta, ProcSample, RunWriter, Sample};

const LIMIT: u64 = 1024;

fn meta() -> Meta {
    Meta {
        interval_ms: 250,
        ended_unix_ms: Some(15_000),
        limits: leakscope_rundir::Limits {
            open_files: Some(LIMIT),
            ..Default::default()
        },
        ..Meta::default()
    }
}

/// The per-request log files of the issue: each request opens
/// `/tmp/app-logs-7/req-N.log` and never closes it; `sockets_per_request`
/// more leak sockets too. 4 requests in flight, 40 per tick, until the
/// process sits at its limit and every request after fails.
fn run(sockets_per_request: u64) -> (tempfile::TempDir, Analysis) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    let mut w = RunWriter::create(&path, meta()).unwrap();
    let per_request = 1 + sockets_per_request;
    let room = (LIMIT - 3 - 12) / per_request;
    for seq in 0..60u64 {
        let asked = seq.saturating_sub(4) * 40;
        let served = asked.min(room);
        let files = 6 + served;
        let sockets = 1 + if (4..50).contains(&seq) { 4 } else { 0 } + served * sockets_per_request;
        let kinds = [
            ("file", files),
            ("socket", sockets),
            ("pipe", 4),
            ("anon_inode", 2),
        ];
        let fds = kinds.iter().map(|(_, n)| n).sum();
        let logs =
            (served.saturating_sub(9)..served).map(|n| (format!("/tmp/app-logs-7/req-{n}.log"), 1));
        let mut top_files: Vec<(String, u64)> = vec![("/usr/lib/libc.so.6".into(), 1)];
        top_files.extend(logs);
        let mut top_file_patterns = vec![("/usr/lib/libc.so.*".to_string(), 1)];
        if served > 0 {
            top_file_patterns.insert(0, ("/tmp/app-logs-*/req-*.log".into(), served));
        }
        let load = LoadSample {
            requests_total: served,
            done: served,
            failed: asked
                .saturating_sub(room)
                .min(if seq < 50 { u64::MAX } else { 0 }),
            concurrency: if (4..50).contains(&seq) { 4 } else { 0 },
            ..LoadSample::default()
        };
        w.append(&Sample {
            seq,
            t_ms: seq * 250,
            proc: Some(ProcSample {
                cpu_user_seconds: seq as f64 * 0.05,
                fds,
                rss_bytes: 50 << 20,
                fds_by_kind: kinds.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
                top_files,
                top_file_patterns,
                ..ProcSample::default()
            }),
            load: Some(load),
            ..Sample::default()
        })
        .unwrap();
    }
    drop(w);
    let a = analyze(&path).unwrap();
    (dir, a)
}

fn verdict(a: &Analysis, id: &str) -> Option<Verdict> {
    a.metric(id).and_then(|m| m.verdict())
}

/// The kind that ran the total into its limit reads EXHAUSTED and says it
/// drove the total; the others keep their verdicts, and no kind of the
/// exhausted total carries a "per request in flight" figure.
#[test]
fn the_kind_that_drove_an_exhausted_total_is_exhausted_too() {
    let (_d, a) = run(0);
    assert_eq!(verdict(&a, "fds"), Some(Verdict::Exhausted));
    let file = a.metric("fds.file").unwrap();
    let j = file.judgement.as_ref().unwrap();
    assert_eq!(j.verdict, Verdict::Exhausted, "{j:?}");
    assert!(
        j.reason.contains("drove the total to its limit"),
        "{}",
        j.reason
    );
    assert!(j.reason.contains("RLIMIT_NOFILE"), "{}", j.reason);
    for kind in ["fds.socket", "fds.pipe", "fds.anon_inode"] {
        let v = verdict(&a, kind);
        assert!(
            v.is_some() && v != Some(Verdict::Exhausted),
            "{kind}: {v:?}"
        );
    }
    for m in a.metrics.iter().filter(|m| m.id.starts_with("fds")) {
        assert_eq!(m.per_in_flight, None, "{}", m.id);
    }
}

/// Two kinds leaking in step share the account: both drove the total.
#[test]
fn two_kinds_that_grew_in_step_both_drove_it() {
    let (_d, a) = run(1);
    assert_eq!(verdict(&a, "fds"), Some(Verdict::Exhausted));
    assert_eq!(verdict(&a, "fds.file"), Some(Verdict::Exhausted));
    assert_eq!(verdict(&a, "fds.socket"), Some(Verdict::Exhausted));
    assert_ne!(verdict(&a, "fds.pipe"), Some(Verdict::Exhausted));
}

/// No path grew (each log file is open once), its pattern did: the fd
/// paths name the pattern, with the growth of the window.
#[test]
fn the_paths_are_grouped_by_their_pattern() {
    let (_d, a) = run(0);
    let top = &a.attribution.fd_paths[0];
    assert_eq!(
        top.key, "/tmp/app-logs-*/req-*.log",
        "{:?}",
        a.attribution.fd_paths
    );
    assert!(top.pattern && top.growth > 500.0, "{top:?}");
    assert!(a
        .attribution
        .fd_paths
        .iter()
        .all(|p| !p.key.contains("req-1")));
}
