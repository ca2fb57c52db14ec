//! Each scenario's handlers under leakscope-test's leak assertion, with the
//! default parallel harness: a handler that leaks per request (the
//! `PerRequest` scenarios' leaky variants) fails its guarded test, naming
//! the resource and the site; every fixed handler, and every handler whose
//! memory is held only while a request is in flight, passes.
//!
//! One server per guarded check, started in the warm-up run and kept for
//! the measured runs, so what a server owns for its life (its session map,
//! its open-files cache, its accept loop) is in the baseline and only what
//! the requests leave behind is judged.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::scenario::{aborted_download, start};
use common::{pattern, Fixture, Running};
use download_server::scenarios::{Input, Pattern, Resource, Scenario, Symptom, Variant, ALL};
use leakscope_test::{check, Config, Flavor, Report, Spec, TestId};

/// How a scenario is driven under the guard: requests per run, warm-up
/// runs before the baseline, measured runs after it. Both variants get
/// the same plan.
struct Plan {
    requests: usize,
    warmup: u32,
    runs: u32,
}

fn plan(s: &Scenario) -> Plan {
    if s.name == "unbounded-session-map" {
        // The fix is a moka cache of SESSION_CAPACITY sessions: it grows
        // until full, and frees in batches (evictions once 64 writes are
        // pending, removed entries once crossbeam-epoch's garbage is
        // collected), so its live bytes swing by some KiB between runs.
        // The warm-up fills it twice over, runs of 64 requests each cross
        // a batch, and 8 runs, all of which must grow, tell a swing from
        // a leak.
        let requests = 64;
        let fill = 2 * download_server::scenarios::SESSION_CAPACITY as usize;
        Plan {
            requests,
            warmup: fill.div_ceil(requests) as u32,
            runs: 8,
        }
    } else {
        Plan {
            requests: 8,
            warmup: 1,
            runs: 3,
        }
    }
}

fn spec(name: &'static str) -> Spec {
    Spec {
        flavor: Flavor::MultiThread,
        worker_threads: Some(2),
        start_paused: false,
        test: TestId {
            package: env!("CARGO_PKG_NAME"),
            crate_name: env!("CARGO_CRATE_NAME"),
            bin_name: None,
            module_path: module_path!(),
            name,
        },
    }
}

/// A complete GET on its own connection, read to the end.
fn get_close(addr: SocketAddr, path: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
}

/// The scenario's handler `variant` under the guard: `requests` requests
/// per run, the way the scenario's leak shows (complete downloads, or
/// downloads the client abandons).
fn guarded(scenario: &'static Scenario, variant: Variant) -> Report {
    let fx = Arc::new(Fixture::new());
    let size = scenario.file_size.clamp(64 * 1024, 8 << 20) as usize;
    std::fs::write(fx.root().join("f.bin"), pattern(size)).unwrap();
    let path = match scenario.input {
        Input::File => format!("/s/{}/f.bin", scenario.name),
        Input::Directory => format!("/s/{}/sub", scenario.name),
    };
    let server: Arc<tokio::sync::OnceCell<Running>> = Arc::default();
    // The requests the scenario's load makes: aborted after some bytes, or
    // read to the end.
    let abort_after = match scenario.load.pattern {
        Pattern::Abort { after_bytes } => Some(after_bytes as usize),
        _ => None,
    };
    let plan = plan(scenario);
    let n = plan.requests;
    let body = move || {
        let (fx, server, path) = (Arc::clone(&fx), Arc::clone(&server), path.clone());
        async move {
            let addr = server.get_or_init(|| start(&fx, variant)).await.addr;
            tokio::task::spawn_blocking(move || {
                for _ in 0..n {
                    if let Some(after) = abort_after {
                        aborted_download(addr, &path, after);
                    } else {
                        get_close(addr, &path);
                    }
                }
            })
            .await
            .unwrap();
        }
    };
    let mut config = Config::new().warmup(plan.warmup).iterations(plan.runs);
    // fds left by a plain `File` are judged process-wide, so that check
    // runs alone; the rest run beside each other.
    if scenario.resource == Resource::Fds {
        config = config.exclusive();
    }
    check(&spec(scenario.name), &config, body)
}

/// One task or fd per measured request.
fn leaked_at_least(s: &Scenario) -> usize {
    let p = plan(s);
    p.requests * p.runs as usize
}

fn leaks_per_request(s: &Scenario) -> bool {
    s.symptom == Symptom::PerRequest
}

/// The leaky variant's report names its resource and a site in the
/// scenario's own module.
fn assert_names_the_leak(s: &Scenario, r: &Report) {
    assert!(r.fails(), "{}: the leaky handler passed:\n{r}", s.name);
    // The scenario's module; its file name is not derived from the name
    // (`task_leak.rs` is task-leak-on-disconnect's).
    let module = "crates/download-server/src/scenarios/";
    let text = r.to_string();
    match s.resource {
        Resource::Tasks => assert!(
            r.tasks.iter().any(|t| t.count >= leaked_at_least(s)),
            "{}: {text}",
            s.name
        ),
        Resource::Fds => assert!(r.fds.len() >= leaked_at_least(s), "{}: {text}", s.name),
        _ => assert!(!r.heap.is_empty(), "{}: {text}", s.name),
    }
    if s.resource != Resource::Fds {
        assert!(
            text.contains(module),
            "{}: no site in {module}:\n{text}",
            s.name
        );
    }
    eprintln!("{}: leaky fails as it should:\n{text}", s.name);
}

fn judge(name: &str) {
    let s = ALL.iter().find(|s| s.name == name).unwrap();
    let fixed = guarded(s, Variant::Fixed);
    assert!(
        !fixed.fails(),
        "{}: the fixed handler failed:\n{fixed}",
        s.name
    );
    let leaky = guarded(s, Variant::Leaky);
    if leaks_per_request(s) {
        assert_names_the_leak(s, &leaky);
    } else {
        assert!(
            !leaky.fails(),
            "{}: held only in flight, yet failed:\n{leaky}",
            s.name
        );
    }
}

#[test]
fn every_scenario_is_judged_here() {
    let judged = [
        "fd-leak",
        "task-leak-on-disconnect",
        "unbounded-session-map",
        "buffer-whole-file",
        "unbounded-channel",
        "zip-in-memory",
        "buffer-churn",
    ];
    for s in ALL {
        assert!(judged.contains(&s.name), "{} has no guarded test", s.name);
    }
}

#[test]
fn fd_leak() {
    judge("fd-leak");
}

#[test]
fn task_leak_on_disconnect() {
    judge("task-leak-on-disconnect");
}

#[test]
fn unbounded_session_map() {
    judge("unbounded-session-map");
}

#[test]
fn buffer_whole_file() {
    judge("buffer-whole-file");
}

#[test]
fn unbounded_channel() {
    judge("unbounded-channel");
}

#[test]
fn zip_in_memory() {
    judge("zip-in-memory");
}

#[test]
fn buffer_churn() {
    judge("buffer-churn");
}
