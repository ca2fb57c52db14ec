//! `task-leak-on-disconnect`: aborted downloads leave a task each (leaky) or
//! none (fixed), counted by the tokio runtime.

mod common;

use std::time::Duration;

use common::scenario::{aborted_download, alive_tasks, settles, start};
use common::{pattern, Fixture};
use download_server::scenarios::Variant;

const N: usize = 40;

async fn tasks_after_aborts(variant: Variant) -> (usize, usize) {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("8m.bin"), pattern(8 << 20)).unwrap();
    let server = start(&fx, variant).await;
    let addr = server.addr;
    // Let the accept loop settle, then count.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = alive_tasks();
    tokio::task::spawn_blocking(move || {
        for _ in 0..N {
            aborted_download(addr, "/s/task-leak-on-disconnect/8m.bin", 64 * 1024);
        }
    })
    .await
    .unwrap();
    let settled = settles(Duration::from_secs(10), || match variant {
        Variant::Leaky => alive_tasks() >= before + N * 9 / 10,
        Variant::Fixed => alive_tasks() <= before,
    })
    .await;
    if !settled {
        eprintln!("{variant:?}: alive tasks did not reach the expected count within 10 s");
    }
    let after = alive_tasks();
    drop(server);
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_leaves_a_task_per_aborted_download_and_fixed_does_not() {
    let (before, after) = tasks_after_aborts(Variant::Leaky).await;
    eprintln!("task-leak leaky: alive tasks {before} -> {after} after {N} aborted downloads");
    assert!(
        after >= before + N * 9 / 10,
        "leaky: alive tasks {before} -> {after} after {N} aborted downloads"
    );
    let (before, after) = tasks_after_aborts(Variant::Fixed).await;
    eprintln!("task-leak fixed: alive tasks {before} -> {after} after {N} aborted downloads");
    assert!(
        after <= before + 2,
        "fixed: alive tasks {before} -> {after} after {N} aborted downloads"
    );
}
