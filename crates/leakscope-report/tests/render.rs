//! Reports rendered from run directories written here with the real
//! writer: pairing, one SVG per chart, no external URL, and damaged or tiny
//! runs still rendering with a clear note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use leakscope_analysis::Verdict;
use leakscope_rundir::{
    profile_name, Host, LoadSample, Meta, ParkedGroup, ProcSample, ProfileKind, RunFile, RunWriter,
    Sample, StackFrame, TargetEnd, TaskDump, TaskSample, SCHEMA_VERSION,
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
        console_retention_ms: None,
    }
}

/// A run of `n` ticks: 5 before the load, then 10 requests per tick; each
/// request leaves `fds_per_request` open fds on `path`.
fn write_run(dir: &Path, scenario: &str, variant: &str, n: u64, fds_per_request: f64) -> PathBuf {
    write_run_with(dir, scenario, variant, n, fds_per_request, &|_, _| {})
}

/// [`write_run`], with `extra` adding to each sample before it is written
/// (and writing what the sample names, such as a heap profile).
fn write_run_with(
    dir: &Path,
    scenario: &str,
    variant: &str,
    n: u64,
    fds_per_request: f64,
    extra: &dyn Fn(&RunWriter, &mut Sample),
) -> PathBuf {
    let out = dir.join(format!("{scenario}-{variant}"));
    let mut w = RunWriter::create(&out, meta(scenario, variant)).unwrap();
    for seq in 0..n {
        let requests = seq.saturating_sub(5) * 10;
        let leaked = (requests as f64 * fds_per_request) as u64;
        // In-flight jitter of a few fds, as concurrency gives.
        let fds = 20 + leaked + seq % 4;
        let mut sample = Sample {
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
        };
        extra(&w, &mut sample);
        w.append(&sample).unwrap();
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
        page.contains(&format!("href=\"../fd-leak-leaky/{}\"", RunFile::Samples)),
        "links"
    );
    // The run's facts in words: RFC 3339 and how the target ended, not
    // epoch milliseconds or Debug output.
    assert!(page.contains("<th>started</th><td>1970-01-01T00:00:01Z</td>"));
    assert!(page.contains("<th>duration</th><td>30.0 s</td>"));
    assert!(page.contains("<th>target ended</th><td>exited with status 0</td>"));
    assert!(!page.contains("Some(") && !page.contains("since the epoch"));
}

#[test]
fn damaged_and_tiny_runs_render_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    // A torn last line and a profile that is listed but missing.
    let torn = write_run(tmp.path(), "torn", "leaky", 40, 1.0);
    let mut text = std::fs::read_to_string(RunFile::Samples.path(&torn)).unwrap();
    let mut listed =
        serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).unwrap();
    listed["heap_profile"] = profile_name(ProfileKind::Heap, 0).into();
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
    std::fs::write(RunFile::Samples.path(&torn), text).unwrap();
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

/// A symbol name as Rust writes it: generics, a trait impl, and an `&`.
const SYMBOL: &str = "<alloc::vec::Vec<T> as Clone>::clone & co";
/// A spawn site whose file name is just as awkward.
const SPAWN_SITE: &str = "src/<spawn>&co.rs:3:5";

/// A gzipped pprof heap profile with one stack holding `bytes`: [`SYMBOL`]
/// in the standard library, called from the service's own code.
fn heap_profile(bytes: i64) -> Vec<u8> {
    use leakscope_pprof::proto::{Function, Line, Location, Profile, Sample, ValueType};
    let strings = [
        "",
        "inuse_space",
        "bytes",
        SYMBOL,
        "/rustc/abc/library/alloc/src/vec/mod.rs",
        "svc::handler::<impl svc::Svc<&str>>::call",
        "/src/svc/src/handler.rs",
    ];
    let function = |id, name, filename| Function {
        id,
        name,
        system_name: name,
        filename,
        start_line: 0,
    };
    let location = |id: u64| Location {
        id,
        line: vec![Line {
            function_id: id,
            line: 7,
            column: 0,
        }],
        ..Location::default()
    };
    leakscope_pprof::encode_gzip(&Profile {
        string_table: strings.map(String::from).to_vec(),
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        function: vec![function(1, 3, 4), function(2, 5, 6)],
        location: vec![location(1), location(2)],
        sample: vec![Sample {
            location_id: vec![1, 2],
            value: vec![bytes],
            label: vec![],
        }],
        ..Profile::default()
    })
}

/// A run whose every kind of stack (heap profile, dhat, parked tasks) and
/// spawn site holds `<`, `>` and `&`.
fn write_run_with_awkward_names(dir: &Path) -> PathBuf {
    let n = 60;
    let out = write_run_with(dir, "names", "leaky", n, 1.0, &|w, s| {
        let requests = s.load.as_ref().map_or(0, |l| l.requests_total);
        s.tasks = Some(TaskSample {
            live_tasks: 3 + requests,
            by_location: BTreeMap::from([(SPAWN_SITE.to_string(), 3 + requests)]),
            ..TaskSample::default()
        });
        if s.seq == 0 || s.seq == n - 1 {
            let (path, name) = w.profile_path(ProfileKind::Heap, s.seq);
            std::fs::write(path, heap_profile(1 + s.seq as i64 * 4096)).unwrap();
            s.heap_profile = Some(name);
        }
    });
    let dump = TaskDump {
        tasks: 40,
        groups: vec![ParkedGroup {
            spawned_at: Some(SPAWN_SITE.into()),
            count: 40,
            stack: vec![StackFrame {
                function: "svc::spawn::<impl svc::Pool>::run & co".into(),
                location: Some("/src/svc/src/<gen>&x.rs:12".into()),
            }],
        }],
        ..TaskDump::default()
    };
    std::fs::write(
        RunFile::TaskDump.path(&out),
        serde_json::to_vec(&dump).unwrap(),
    )
    .unwrap();
    let dhat = serde_json::json!({
        "pps": [{"eb": 4096, "ebk": 2, "fs": [1]}],
        "ftbl": ["[root]", format!("0x1: {SYMBOL} (vec.rs:1:1)")],
    });
    std::fs::write(RunFile::DhatHeap.path(&out), dhat.to_string()).unwrap();
    out
}

/// Every `<` opens one of the page's own tags and every `&` starts an
/// entity: no outside text reached the page unescaped.
fn assert_markup_only(html: &str) {
    const TAGS: &[&str] = &[
        "!doctype", "html", "head", "meta", "title", "style", "body", "p", "a", "h1", "h2", "h3",
        "b", "br", "code", "span", "div", "table", "tr", "th", "td", "svg", "rect", "text",
        "polyline", "line", "circle", "polygon",
    ];
    for (i, _) in html.match_indices('<') {
        let name: String = html[i + 1..]
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        let at: String = html[i..].chars().take(40).collect();
        assert!(TAGS.contains(&name.as_str()), "raw '<' at {i}: {at:?}");
    }
    for (i, _) in html.match_indices('&') {
        let entity: String = html[i + 1..].chars().take_while(|c| *c != ';').collect();
        let at: String = html[i..].chars().take(20).collect();
        assert!(
            entity.len() < 8
                && entity
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '#'),
            "raw '&' at {i}: {at:?}"
        );
    }
}

#[test]
fn symbol_names_are_escaped_in_every_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let analyses = analyze(&[write_run_with_awkward_names(tmp.path())]);
    let at = &analyses[0].attribution;
    assert_eq!(at.heap_sites.len(), 1, "{:?}", analyses[0].notes);
    assert_eq!(at.dhat_sites.len(), 1, "{:?}", analyses[0].notes);
    assert_eq!(at.parked.len(), 1, "{:?}", at.task_locations);

    let written = leakscope_report::render(&analyses, &tmp.path().join("report")).unwrap();
    let raw = std::fs::read_to_string(&written.pages[0]).unwrap();
    assert_markup_only(&raw);
    assert_markup_only(&std::fs::read_to_string(&written.index).unwrap());
    // minijinja's HTML escaping writes '/' as an entity; browsers undo it.
    let page = raw.replace("&#x2f;", "/");
    let symbol = "&lt;alloc::vec::Vec&lt;T&gt; as Clone&gt;::clone &amp; co";
    for frame in [
        // The heap profile's stack, its own-code frame highlighted.
        format!("<div>{symbol} vec/mod.rs:7</div>"),
        "<div class=\"own\">svc::handler::&lt;impl svc::Svc&lt;&amp;str&gt;&gt;::call src/handler.rs:7</div>".into(),
        // dhat's, as dhat wrote it.
        format!("<div>0x1: {symbol} (vec.rs:1:1)</div>"),
        // The parked task's, shortened.
        "<div class=\"own\">spawn::run &amp; co (&lt;gen&gt;&amp;x.rs:12)</div>".into(),
    ] {
        assert!(page.contains(&frame), "{frame}");
    }
    assert!(page.contains("<td class=\"num\">src/&lt;spawn&gt;&amp;co.rs:3:5</td>"));
    for raw_text in [SYMBOL, "Vec<T>", "<impl", "<gen>", "<spawn>", " & co"] {
        assert!(!page.contains(raw_text), "{raw_text} unescaped");
    }
    // The structure stands: every section, one stack cell per row with a
    // stack (heap, dhat, parked), and every element closed.
    for section in ["<h2>Attribution</h2>", "<h2>Runs</h2>", "Raw files: "] {
        assert!(page.contains(section), "{section}");
    }
    assert_eq!(page.matches("<td class=\"frames\">").count(), 3);
    for tag in ["table", "tr", "td", "div", "svg"] {
        assert_eq!(
            page.matches(&format!("<{tag}")).count(),
            page.matches(&format!("</{tag}>")).count(),
            "<{tag}>"
        );
    }
}

/// A run directory named with what a URL reads as syntax (`?`, `#`, `%`,
/// a space) still links to its own raw files.
#[test]
fn raw_file_links_are_percent_encoded() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs ?#%");
    std::fs::create_dir(&runs).unwrap();
    let run = write_run(&runs, "fd-leak", "leaky", 30, 1.0);
    let out = tmp.path().join("report");
    let written = leakscope_report::render(&analyze(&[run]), &out).unwrap();
    let page = std::fs::read_to_string(&written.pages[0])
        .unwrap()
        .replace("&#x2f;", "/");
    let href = format!(
        "href=\"../runs%20%3F%23%25/fd-leak-leaky/{}\"",
        RunFile::Samples
    );
    assert!(page.contains(&href), "no {href} in the page");
}

/// One log file per request: no path grows, its pattern does, and the page
/// names the pattern, marked as one, as `check` does.
#[test]
fn fd_paths_opened_once_each_are_shown_by_their_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    let run = write_run_with(tmp.path(), "log-leak", "leaky", 120, 1.0, &|_, s| {
        let requests = s.load.as_ref().map_or(0, |l| l.requests_total);
        let p = s.proc.as_mut().unwrap();
        p.top_files = (requests.saturating_sub(10)..requests)
            .map(|n| (format!("/var/log/app-3/req-{n}.log"), 1))
            .collect();
        p.top_file_patterns = vec![("/var/log/app-*/req-*.log".into(), requests)];
    });
    let analyses = analyze(&[run]);
    let out = tmp.path().join("report");
    let written = leakscope_report::render(&analyses, &out).unwrap();
    let page = std::fs::read_to_string(&written.pages[0])
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(
        page.contains("/var/log/app-*/req-*.log (pattern)"),
        "{page}"
    );
    assert!(!page.contains("req-1.log"));
    assert!(page.contains("each run of digits a *"));
}
