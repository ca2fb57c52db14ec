//! Reports rendered from run directories written here with the real
//! writer: pairing, one SVG per chart, no external URL, and damaged or tiny
//! runs still rendering with a clear note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use leakscope_analysis::Verdict;
use leakscope_rundir::{
    Host, LoadSample, Meta, ProcSample, RunWriter, Sample, TargetEnd, SCHEMA_VERSION,
};

fn meta(scenario: &str, variant: &str) -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        leakscope_version: "test".into(),
        command: vec!["server".into(), "--variant".into(), variant.into()],
        pid: 1,
        labels: BTreeMap::from([
            ("scenario".into(), scenario.into()),
            ("variant".into(), variant.into()),
        ]),
        host: Host {
            hostname: "h".into(),
            kernel: "k".into(),
            cpus: 2,
        },
        interval_ms: 250,
        git_revision: None,
        started_unix_ms: 1_000,
        ended_unix_ms: Some(31_000),
        target_end: Some(TargetEnd::Exited { code: 0 }),
        sources: BTreeMap::new(),
        limits: Default::default(),
        oom_kills: None,
    }
}

/// A run of `n` ticks: 5 before the load, then 10 requests per tick; each
/// request leaves `fds_per_request` open fds on `path`.
fn write_run(dir: &Path, scenario: &str, variant: &str, n: u64, fds_per_request: f64) -> PathBuf {
    let out = dir.join(format!("{scenario}-{variant}"));
    let mut w = RunWriter::create(&out, meta(scenario, variant)).unwrap();
    for seq in 0..n {
        let requests = seq.saturating_sub(5) * 10;
        let leaked = (requests as f64 * fds_per_request) as u64;
        // In-flight jitter of a few fds, as concurrency gives.
        let fds = 20 + leaked + seq % 4;
        w.append(&Sample {
            seq,
            t_ms: seq * 250,
            proc: Some(ProcSample {
                rss_bytes: 50 << 20,
                peak_rss_bytes: 50 << 20,
                threads: 4,
                fds,
                fds_by_kind: BTreeMap::from([
                    ("file".into(), 4 + leaked),
                    ("socket".into(), 16 + seq % 4),
                ]),
                top_files: vec![("/srv/big.bin".into(), leaked + 1)],
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
    out
}

fn analyze(dirs: &[PathBuf]) -> Vec<leakscope_analysis::Analysis> {
    dirs.iter()
        .map(|d| leakscope_analysis::analyze(d).unwrap())
        .collect()
}

fn assert_self_contained(html: &str) {
    for bad in ["http://", "https://", "src=", "@import", "url("] {
        assert!(!html.contains(bad), "found {bad:?}");
    }
}

#[test]
fn leaky_and_fixed_share_a_page_with_one_svg_per_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let leaky = write_run(tmp.path(), "fd-leak", "leaky", 120, 1.0);
    let fixed = write_run(tmp.path(), "fd-leak", "fixed", 120, 0.0);
    let analyses = analyze(&[fixed, leaky]);
    let fds = |i: usize| analyses[i].metric("fds").unwrap().clone();
    assert_eq!(fds(1).verdict(), Some(Verdict::Leak));
    assert!((fds(1).slope.unwrap().value - 1.0).abs() < 0.02);
    assert_ne!(fds(0).verdict(), Some(Verdict::Leak));
    assert_eq!(analyses[1].attribution.fd_paths[0].key, "/srv/big.bin");

    let out = tmp.path().join("report");
    let written = leakscope_report::render(&analyses, &out).unwrap();
    assert_eq!(written.pages.len(), 1);
    // minijinja's HTML escaping writes '/' as an entity; browsers undo it.
    let page = std::fs::read_to_string(&written.pages[0])
        .unwrap()
        .replace("&#x2f;", "/");
    let index = std::fs::read_to_string(&written.index).unwrap();
    assert_self_contained(&page);
    assert_self_contained(&index);
    // Metrics present in these runs: rss, fds, fds.file, fds.socket; each has
    // a chart over requests and one over time.
    let metrics = analyses[0].metrics.len();
    assert_eq!(metrics, 4);
    assert_eq!(page.matches("<svg").count(), 2 * metrics);
    assert_eq!(page.matches("</svg>").count(), 2 * metrics);
    // Leaky is listed before fixed, and both are on each chart's legend.
    let (l, f) = (page.find(">leaky<").unwrap(), page.find(">fixed<").unwrap());
    assert!(l < f);
    assert!(page.contains("/srv/big.bin"));
    assert!(index.contains("fd-leak.html"));
    assert!(index.contains("LEAK") && index.contains("1.00 per request"));
    // Raw files are linked relative to the report.
    assert!(
        page.contains("href=\"../fd-leak-leaky/samples.jsonl\""),
        "links"
    );
}

#[test]
fn damaged_and_tiny_runs_render_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    // A torn last line and a profile that is listed but missing.
    let torn = write_run(tmp.path(), "torn", "leaky", 40, 1.0);
    let mut text = std::fs::read_to_string(torn.join("samples.jsonl")).unwrap();
    let mut listed =
        serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).unwrap();
    listed["heap_profile"] = "profiles/heap-000000.pb.gz".into();
    let first_line_end = text.find('\n').unwrap();
    text.replace_range(..first_line_end, &listed.to_string());
    // Names that point outside the run directory are never opened, even
    // when the file exists.
    for (seq, outside) in [(1, "/etc/passwd"), (2, "../../../../../../etc/passwd")] {
        let line = text.lines().nth(seq).unwrap().to_string();
        let mut v = serde_json::from_str::<serde_json::Value>(&line).unwrap();
        v["heap_profile"] = outside.into();
        text = text.replacen(&line, &v.to_string(), 1);
    }
    text.push_str("{\"seq\": 40, \"t_ms\"");
    std::fs::write(torn.join("samples.jsonl"), text).unwrap();
    // One sample only.
    let single = write_run(tmp.path(), "single", "leaky", 1, 0.0);

    let analyses = analyze(&[torn, single]);
    let notes = |i: usize| analyses[i].notes.join("\n");
    assert!(notes(0).contains("cut off"), "{}", notes(0));
    assert!(notes(0).contains("missing"), "{}", notes(0));
    assert!(notes(0).contains("not opened"), "{}", notes(0));
    assert!(notes(1).contains("only 1 sample"), "{}", notes(1));
    assert_eq!(
        analyses[1].metric("fds").unwrap().verdict(),
        Some(Verdict::Inconclusive)
    );

    let out = tmp.path().join("report");
    let written = leakscope_report::render(&analyses, &out).unwrap();
    assert_eq!(written.pages.len(), 2);
    for page in &written.pages {
        let html = std::fs::read_to_string(page).unwrap();
        assert_self_contained(&html);
        assert!(html.contains("class=\"note\""), "{}", page.display());
    }
}

#[test]
fn two_runs_claiming_the_same_scenario_and_variant_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "x", "leaky", 20, 0.0);
    let b_dir = tmp.path().join("again");
    std::fs::create_dir(&b_dir).unwrap();
    let b = write_run(&b_dir, "x", "leaky", 20, 0.0);
    let err = leakscope_report::render(&analyze(&[a, b]), &tmp.path().join("r")).unwrap_err();
    assert!(
        err.to_string().contains("distinct --label variant"),
        "{err}"
    );
}
