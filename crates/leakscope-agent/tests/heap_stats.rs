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
        "allocations_total",
        "allocated_bytes_total",
        "requested_live_bytes",
    ] {
        assert!(stats[key].as_u64().is_some(), "{key} missing: {stats}");
    }
    assert_eq!(stats["allocator"], "jemalloc");
    assert_eq!(
        stats["sample_interval_bytes"].as_u64(),
        Some(512 * 1024),
        "the baked-in malloc_conf (lg_prof_sample:19) is in effect without MALLOC_CONF"
    );

    // 64 MiB up, then down.
    let (before, live_before) = (stat(addr, "allocated"), stat(addr, "requested_live_bytes"));
    let block = std::hint::black_box(vec![0x5au8; (64 * MIB) as usize]);
    let (during, live_during) = (stat(addr, "allocated"), stat(addr, "requested_live_bytes"));
    drop(block);
    let after = stat(addr, "allocated");
    // jemalloc counts objects parked in thread caches as allocated until a
    // cache is flushed, so `allocated` moves by the allocation ± a few KiB of
    // cache slack (2,480 bytes low in one run). `requested_live_bytes` counts
    // every byte, but each thread publishes its counts in batches (at most
    // 256 KiB held back, the allocator's FLUSH_BYTES): a free of this
    // thread's held back before the first reading may be published with the
    // 64 MiB (1,454 bytes in one run).
    assert!(
        during + 64 * 1024 >= before + 64 * MIB,
        "allocated rose by {} bytes, expected 64 MiB (± 64 KiB)",
        during as i64 - before as i64
    );
    assert!(
        live_during + 256 * 1024 >= live_before + 64 * MIB,
        "requested_live_bytes rose by {}",
        live_during as i64 - live_before as i64
    );
    assert!(
        after + 60 * MIB <= during,
        "allocated fell by only {} bytes after freeing 64 MiB",
        during as i64 - after as i64
    );

    // The allocation counters count every allocation: 200,000 allocate-free
    // pairs on one thread, which jemalloc's own counters barely see.
    let allocs_before = stat(addr, "allocations_total");
    let bytes_before = stat(addr, "allocated_bytes_total");
    const N: u64 = 200_000;
    for i in 0..N {
        std::hint::black_box(Box::new([i; 4]));
    }
    let allocs = stat(addr, "allocations_total") - allocs_before;
    let bytes = stat(addr, "allocated_bytes_total") - bytes_before;
    // Each thread holds back at most 63 events and 256 KiB before publishing;
    // the HTTP exchanges add a few hundred allocations of their own.
    assert!(
        (N - 64..N + 5_000).contains(&allocs),
        "allocations_total rose by {allocs} for {N} allocations"
    );
    assert!(
        (N * 32 - 256 * 1024..N * 32 + 5_000_000).contains(&bytes),
        "allocated_bytes_total rose by {bytes} for {N} × 32 bytes"
    );
    agent.shutdown().await;
}
