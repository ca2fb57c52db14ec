//! jemalloc heap statistics over HTTP.
//!
//! A single test in its own process: the figures are process-wide, and even
//! another test's thread exiting (its thread cache flushed back to the arenas)
//! moves `allocated` by most of a MiB.

mod common;

use common::{get, start_agent};

const MIB: u64 = 1 << 20;

fn stat(addr: std::net::SocketAddr, key: &str) -> u64 {
    let r = get(addr, "/debug/heap/stats");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_follow_allocations() {
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();

    let stats = get(addr, "/debug/heap/stats").json();
    for key in [
        "allocated",
        "active",
        "resident",
        "mapped",
        "retained",
        "metadata",
        "allocated_bytes_total",
        "live_bytes",
    ] {
        assert!(stats[key].as_u64().is_some(), "{key} missing: {stats}");
    }
    // jemalloc counts bytes, not calls: the call counts are there, as null.
    for key in ["allocations_total", "deallocations_total"] {
        assert!(stats[key].is_null(), "{key}: {stats}");
    }
    assert_eq!(stats["allocator"], "jemalloc");
    assert_eq!(
        stats["sample_interval_bytes"].as_u64(),
        Some(512 * 1024),
        "the baked-in malloc_conf (lg_prof_sample:19) is in effect without MALLOC_CONF"
    );

    // 64 MiB up, then down.
    let (before, live_before) = (stat(addr, "allocated"), stat(addr, "live_bytes"));
    let block = std::hint::black_box(vec![0x5au8; (64 * MIB) as usize]);
    let (during, live_during) = (stat(addr, "allocated"), stat(addr, "live_bytes"));
    drop(block);
    let (after, live_after) = (stat(addr, "allocated"), stat(addr, "live_bytes"));
    // jemalloc counts objects parked in thread caches as allocated until a
    // cache is flushed, so `allocated` moves by the allocation ± a few KiB of
    // cache slack (2,480 bytes low in one run). `live_bytes` sums the
    // threads' own counters, which see every call at once; what moves it
    // besides the block is the HTTP exchange's own allocations, a few KiB.
    assert!(
        during + 64 * 1024 >= before + 64 * MIB,
        "allocated rose by {} bytes, expected 64 MiB (± 64 KiB)",
        during as i64 - before as i64
    );
    let rose = live_during as i64 - live_before as i64;
    assert!(
        (rose - (64 * MIB) as i64).abs() < 64 * 1024,
        "live_bytes rose by {rose}, expected 64 MiB (± 64 KiB)"
    );
    assert!(
        after + 60 * MIB <= during,
        "allocated fell by only {} bytes after freeing 64 MiB",
        during as i64 - after as i64
    );
    let fell = live_during as i64 - live_after as i64;
    assert!(
        (fell - (64 * MIB) as i64).abs() < 64 * 1024,
        "live_bytes fell by {fell}, expected 64 MiB (± 64 KiB)"
    );

    // The byte counter sees every allocation: 200,000 allocate-free pairs
    // on one thread, which jemalloc's arena counters barely see.
    let bytes_before = stat(addr, "allocated_bytes_total");
    const N: u64 = 200_000;
    for i in 0..N {
        std::hint::black_box(Box::new([i; 4]));
    }
    let bytes = stat(addr, "allocated_bytes_total") - bytes_before;
    // 32 bytes is a size class; the HTTP exchanges add a few KiB.
    assert!(
        (N * 32..N * 32 + 5_000_000).contains(&bytes),
        "allocated_bytes_total rose by {bytes} for {N} × 32 bytes"
    );
    agent.shutdown().await;
}
