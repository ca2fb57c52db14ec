//! Each scenario's handlers under leakscope-test, with the default
//! parallel harness: every leaky handler fails its guarded test, naming
//! what it did and where, and every fixed one passes.
//!
//! What fails a leaky handler depends on its symptom:
//! - a per-request leak (fds, tasks, a map that only grows) is what the
//!   requests leave behind, named by fd, spawn site or allocation site;
//! - memory held only while a request is in flight (a whole file or
//!   archive buffered, an unbounded queue) leaves nothing behind, so it is
//!   judged by the heap's peak: a download of `S` bytes may not hold `S/4`
//!   at once (pytest-memray's `limit_memory`);
//! - allocation churn is judged by bytes allocated: a download of `S`
//!   bytes may not allocate `S/4` (dhat's `total_bytes`).
//!
//! `S/4` comes from what streaming means, not from a run, and is the
//! threshold `cargo xtask profile`'s self-check uses: a streaming handler
//! holds a few chunks whatever the size, a buffering one holds or
//! allocates all `S`, and `S` here is megabytes against chunks of tens of
//! KiB.
//!
//! One server per guarded check, started in the warm-up run and kept for
//! the measured runs, so what a server owns for its life (its session map,
//! its open-files cache, its accept loop) is in the baseline and only what
//! the requests leave behind is judged.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use common::scenario::{aborted_download, connect_small_window, start};
use common::{Fixture, Running};
use download_server::scenarios::{Input, Pattern, Resource, Scenario, Symptom, Variant, ALL};
use leakscope_test::{check, test_id, Config, Flavor, Report, Spec};

/// How a scenario is driven under the guard: requests per run, warm-up
/// runs before the baseline, measured runs after it, and the bytes one
/// request serves. Both variants get the same plan.
struct Plan {
    requests: usize,
    warmup: u32,
    runs: u32,
    served: usize,
}

fn plan(s: &Scenario) -> Plan {
    // Megabytes, so buffering shows against chunks; no more, so the
    // small-window client reads it in well under a second.
    let served = s.file_size.clamp(64 << 10, 4 << 20) as usize;
    match s.symptom {
        Symptom::PerRequest if s.name == "unbounded-session-map" => {
            // The fix is a moka cache of SESSION_CAPACITY sessions: it
            // grows until full, and frees in batches (evictions once 64
            // writes are pending, removed entries once crossbeam-epoch's
            // garbage is collected), so its live bytes swing by some KiB
            // between runs. The warm-up fills it twice over, runs of 64
            // requests each cross a batch, and 8 runs, all of which must
            // grow, tell a swing from a leak.
            let requests = 64;
            let fill = 2 * download_server::scenarios::SESSION_CAPACITY as usize;
            Plan {
                requests,
                warmup: fill.div_ceil(requests) as u32,
                runs: 8,
                served,
            }
        }
        Symptom::PerRequest => Plan {
            requests: 8,
            warmup: 1,
            runs: 3,
            served,
        },
        // One request at a time shows a peak or a request's allocations.
        Symptom::PerInFlight | Symptom::AllocatedPerRequest => Plan {
            requests: 2,
            warmup: 1,
            runs: 3,
            served,
        },
    }
}

/// Bytes that do not compress, so an archive is as large as its files.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes what the scenario serves (`served` bytes: one file, or a
/// directory of `files` files) and returns its URL path.
fn write_input(s: &Scenario, root: &Path, served: usize) -> String {
    match s.input {
        Input::File => {
            std::fs::write(root.join("f.bin"), noise(served, 1)).unwrap();
            format!("/s/{}/f.bin", s.name)
        }
        Input::Directory => {
            let dir = root.join("z");
            std::fs::create_dir_all(&dir).unwrap();
            let files = s.files.max(1) as usize;
            for i in 0..files {
                let f = dir.join(format!("{i}.bin"));
                std::fs::write(f, noise(served / files, i as u64 + 2)).unwrap();
            }
            format!("/s/{}/z", s.name)
        }
    }
}

/// A GET read to the end, on its own connection; a slow reader's
/// connection has a small receive window, so the server's writes block
/// and whatever it queues, it holds. The body is read through a small
/// buffer and dropped: the client runs on the test's threads, so what it
/// kept would count as the test's heap.
fn get(addr: SocketAddr, path: &str, slow: bool) {
    let mut s = if slow {
        connect_small_window(addr)
    } else {
        TcpStream::connect(addr).unwrap()
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 16 << 10];
    let first = s.read(&mut buf).unwrap();
    assert!(
        buf[..first].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..first.min(200)])
    );
    while s.read(&mut buf).unwrap() > 0 {}
}

/// The scenario's handler `variant` under the guard, driven as the
/// scenario's load drives it: downloads abandoned after some bytes, read
/// slowly, or read to the end.
fn guarded(scenario: &'static Scenario, variant: Variant) -> Report {
    let plan = plan(scenario);
    let fx = Arc::new(Fixture::new());
    let path = write_input(scenario, &fx.root(), plan.served);
    let server: Arc<tokio::sync::OnceCell<Running>> = Arc::default();
    let pattern = scenario.load.pattern;
    let n = plan.requests;
    let body = move || {
        let (fx, server, path) = (Arc::clone(&fx), Arc::clone(&server), path.clone());
        async move {
            let addr = server.get_or_init(|| start(&fx, variant)).await.addr;
            tokio::task::spawn_blocking(move || {
                for _ in 0..n {
                    match pattern {
                        Pattern::Abort { after_bytes } => {
                            aborted_download(addr, &path, after_bytes as usize)
                        }
                        Pattern::Slow { .. } => get(addr, &path, true),
                        _ => get(addr, &path, false),
                    }
                }
            })
            .await
            .unwrap();
        }
    };
    let quarter = plan.served as u64 / 4;
    let mut config = Config::new().warmup(plan.warmup).iterations(plan.runs);
    config = match scenario.symptom {
        Symptom::PerRequest => config,
        Symptom::PerInFlight => config.limit_peak(quarter),
        Symptom::AllocatedPerRequest => config.limit_allocated(n as u64 * quarter),
    };
    // fds left by a plain `File` are judged process-wide, so that check
    // runs alone; the rest run beside each other.
    if scenario.resource == Resource::Fds {
        config = config.exclusive();
    }
    check(
        &Spec::new(Flavor::MultiThread, test_id!(scenario.name)).workers(2),
        &config,
        body,
    )
}

/// One task or fd per measured request.
fn leaked_at_least(s: &Scenario) -> usize {
    let p = plan(s);
    p.requests * p.runs as usize
}

/// The leaky variant's report names what it did: the resource it leaked
/// and a site in the scenarios' code, or the limit it went over.
fn assert_names_the_leak(s: &Scenario, r: &Report) {
    let text = r.to_string();
    assert!(r.fails(), "{}: the leaky handler passed:\n{text}", s.name);
    // The scenario's module; its file name is not derived from the name
    // (`task_leak.rs` is task-leak-on-disconnect's).
    let module = "crates/download-server/src/scenarios/";
    let named = match (s.symptom, s.resource) {
        (Symptom::PerInFlight, _) => r.peak.is_some_and(|b| b.exceeded()),
        (Symptom::AllocatedPerRequest, _) => r.allocated.is_some_and(|b| b.exceeded()),
        (Symptom::PerRequest, Resource::Tasks) => {
            r.tasks.iter().any(|t| t.count >= leaked_at_least(s)) && text.contains(module)
        }
        (Symptom::PerRequest, Resource::Fds) => r.fds.len() >= leaked_at_least(s),
        (Symptom::PerRequest, _) => !r.heap.is_empty() && text.contains(module),
    };
    assert!(named, "{}: the message misses the leak:\n{text}", s.name);
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
    // The margin the limits leave, for the log.
    for (what, b) in [("peak", fixed.peak), ("allocated", fixed.allocated)] {
        if let Some(b) = b {
            eprintln!(
                "{}: fixed {what} {} B of {} B allowed",
                s.name, b.used, b.limit
            );
        }
    }
    assert_names_the_leak(s, &guarded(s, Variant::Leaky));
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
