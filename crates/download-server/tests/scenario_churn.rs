//! `buffer-churn`: bytes allocated per download grow with the file (leaky)
//! or stay constant (fixed), from leakscope-agent's cumulative counter.

mod common;

use std::io::{Read, Write};

use common::scenario::{allocated_total, start};
use common::{pattern, Fixture};
use download_server::scenarios::Variant;

const MIB: u64 = 1 << 20;
const N: u64 = 10;

/// Downloads into one reused buffer, so the client itself allocates almost
/// nothing and what the counter sees is the server's.
fn download(addr: std::net::SocketAddr) -> usize {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /s/buffer-churn/4m.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match s.read(&mut buf).unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

async fn allocated_per_download(variant: Variant) -> u64 {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("4m.bin"), pattern(4 << 20)).unwrap();
    let server = start(&fx, variant).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // The first download warms up; it is not counted.
        assert!(download(addr) > 4 << 20);
        let before = allocated_total();
        for _ in 0..N {
            assert!(download(addr) > 4 << 20);
        }
        (allocated_total() - before) / N
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_allocates_the_file_size_per_download_and_fixed_a_constant() {
    let leaky = allocated_per_download(Variant::Leaky).await;
    let fixed = allocated_per_download(Variant::Fixed).await;
    eprintln!("buffer-churn: allocated per 4 MiB download: leaky {leaky}, fixed {fixed}");
    // The test client's own body collection allocates too (it keeps the
    // 4 MiB), so compare what the server adds on top: leaky ≥ 4 MiB more.
    assert!(
        leaky >= fixed + 4 * MIB * 9 / 10,
        "leaky {leaky} vs fixed {fixed}"
    );
}
