//! `fd-leak`: aborted downloads leak one descriptor each (leaky) or none
//! (fixed), counted from /proc/self/fd.

mod common;

use std::time::Duration;

use common::scenario::{aborted_download, open_fds, settles, start};
use common::{pattern, Fixture};
use download_server::scenarios::Variant;

const N: usize = 40;

async fn fds_after_aborts(variant: Variant) -> (usize, usize, bool) {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("8m.bin"), pattern(8 << 20)).unwrap();
    let server = start(&fx, variant).await;
    let addr = server.addr;
    let before = open_fds();
    tokio::task::spawn_blocking(move || {
        for _ in 0..N {
            aborted_download(addr, "/s/fd-leak/8m.bin", 64 * 1024);
        }
    })
    .await
    .unwrap();
    // Leaky: wait for the leak to show; fixed: wait for the return to baseline.
    let settled = settles(Duration::from_secs(10), || match variant {
        Variant::Leaky => open_fds() >= before + N * 9 / 10,
        Variant::Fixed => open_fds() <= before,
    })
    .await;
    (before, open_fds(), settled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_leaks_an_fd_per_aborted_download_and_fixed_does_not() {
    let (before, after, _) = fds_after_aborts(Variant::Leaky).await;
    eprintln!("fd-leak leaky: fds {before} -> {after} after {N} aborted downloads");
    assert!(
        after >= before + N * 9 / 10,
        "leaky: fds {before} -> {after} after {N} aborted downloads"
    );
    let (before, after, _) = fds_after_aborts(Variant::Fixed).await;
    eprintln!("fd-leak fixed: fds {before} -> {after} after {N} aborted downloads");
    assert!(
        after <= before + 2,
        "fixed: fds {before} -> {after} after {N} aborted downloads"
    );
}
