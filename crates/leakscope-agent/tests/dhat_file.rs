//! dhat mode: the agent's heap stats come from dhat, and shutting the agent
//! down writes a dhat file that names the site still holding memory.
//!
//! Runs only in a dhat build:
//! `cargo test -p leakscope-agent --no-default-features --features dhat-heap --test dhat_file`
//! (`cargo xtask test` does it).

mod common;

use std::sync::Mutex;

use common::get;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Allocates 3 MiB that are still live when the profiler stops.
#[inline(never)]
fn keep_alive_at_exit_site() {
    KEPT.lock().unwrap().push(vec![3u8; 3 << 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhat_file_holds_the_site_live_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(leakscope_wire::DHAT_FILE);
    let agent = leakscope_agent::Agent::builder()
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .dhat_file(&path)
        .start()
        .expect("agent starts");
    let addr = agent.local_addr().unwrap();

    let stats = |addr| get(addr, "/debug/heap/stats").json();
    let before = stats(addr);
    assert_eq!(before["allocator"], "dhat");
    let block = std::hint::black_box(vec![1u8; 64 << 20]);
    let during = stats(addr);
    drop(block);
    let rise = during["allocated"].as_u64().unwrap() - before["allocated"].as_u64().unwrap();
    assert!(rise >= 64 << 20, "dhat's allocated rose by {rise}");

    let r = get(addr, "/debug/pprof/heap");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("dhat"), "{}", r.text());

    keep_alive_at_exit_site();
    agent.shutdown().await;

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("dhat file written on shutdown"))
            .expect("dhat file is JSON");
    let ftbl: Vec<&str> = json["ftbl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // The Vec's buffer, not the outer Vec's growth: the site's largest point.
    let live_at_exit = json["pps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pp| {
            pp["fs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| ftbl[i.as_u64().unwrap() as usize].contains("keep_alive_at_exit_site"))
        })
        .map(|pp| pp["eb"].as_u64().unwrap())
        .max()
        .expect("a program point under keep_alive_at_exit_site");
    assert!(
        live_at_exit >= 3 << 20,
        "bytes live at exit: {live_at_exit}"
    );
}
