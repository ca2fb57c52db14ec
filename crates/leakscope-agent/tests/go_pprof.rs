//! The heap profile as a Go user reads it: the real `go tool pprof`.
//!
//! Needs Go's toolchain: `cargo test` lists it as ignored, and `cargo xtask
//! test` runs it where `go` is installed (CI installs golang-go, and there a
//! missing `go` fails the run rather than skipping it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{get, start_agent};

/// The leak `-top` must name. `vec![..]` goes through `alloc::vec::from_elem`
/// and the allocator, all of which the profile must cut from the leaf.
#[inline(never)]
fn leak_for_go_pprof(total: usize) -> Vec<Vec<u8>> {
    (0..total / 4096).map(|i| vec![i as u8; 4096]).collect()
}

/// The test runs only when asked (`--ignored`), so a missing Go fails it.
fn require_go() {
    let ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs Go's toolchain (apt-get install golang-go)"
    );
}

/// `go tool pprof -top ARGS`'s rows: (flat bytes as printed, flat %, name).
fn top(args: &[&Path], extra: &[&str]) -> (String, Vec<(String, f64, String)>) {
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-nodecount=15"])
        .args(extra)
        .args(args)
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("go tool pprof runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "go tool pprof failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = text
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let flat = f.next()?.to_string();
            let pct: f64 = f.next()?.trim_end_matches('%').parse().ok()?;
            let name = f.skip(3).collect::<Vec<_>>().join(" ");
            Some((flat, pct, name))
        })
        .collect();
    (text, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs go: cargo xtask test runs it where Go is installed"]
async fn go_tool_pprof_top_names_the_leaking_function_first_with_its_bytes_flat() {
    require_go();
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = (
        dir.path().join("first.pb.gz"),
        dir.path().join("last.pb.gz"),
    );

    let r = get(addr, "/debug/pprof/heap");
    assert_eq!(r.status, 200, "{}", r.text());
    std::fs::write(&first, &r.body).unwrap();
    let held = leak_for_go_pprof(48 << 20);
    let r = get(addr, "/debug/pprof/heap");
    assert_eq!(r.status, 200, "{}", r.text());
    std::fs::write(&last, &r.body).unwrap();

    let want = "go_pprof::leak_for_go_pprof";
    let (text, rows) = top(&[&last], &[]);
    eprintln!("{text}");
    // The closure inside it (`…::{closure#0}`) is where each Vec is asked
    // for; it is part of the leaking function.
    let (flat, pct, name) = rows.first().expect("a row").clone();
    assert!(name.starts_with(want), "{name}:\n{text}");
    assert!(pct >= 50.0, "{want} holds {flat} ({pct}%) flat:\n{text}");
    for banned in [
        "prof_backtrace",
        "__rust_alloc",
        "alloc::",
        "_rjem_",
        "malloc",
    ] {
        // Only flat bytes count: a std frame on the way from a thread's
        // start to its closure has cumulative bytes and rightly stays.
        let flat_rows: Vec<_> = rows
            .iter()
            .filter(|r| r.0 != "0" && r.2.contains(banned))
            .collect();
        assert!(
            flat_rows.is_empty(),
            "{banned} has flat bytes: {flat_rows:?}\n{text}"
        );
    }

    // What grew between the two dumps: the same function, first.
    let base = format!("-base={}", first.display());
    let (text, rows) = top(&[&last], &[&base]);
    let name = rows.first().map(|r| r.2.as_str()).unwrap_or("");
    assert!(name.starts_with(want), "{name}:\n{text}");

    // Every stack through it reads with qualified names.
    let traces = Command::new("go")
        .args(["tool", "pprof", "-traces"])
        .arg(&last)
        .output()
        .unwrap();
    let traces = String::from_utf8_lossy(&traces.stdout);
    assert!(traces.contains(want), "{traces}");
    drop(held);
    agent.shutdown().await;
}
