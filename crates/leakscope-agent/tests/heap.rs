//! The sampled jemalloc heap profile, read over HTTP.

mod common;

use common::{attributed_to, first_value_type, flat_of, get, start_agent};

const MIB: u64 = 1 << 20;

/// The site the heap profile must name. Not inlined, so it has a frame.
#[inline(never)]
fn hold_memory_for_profile_test(total: usize) -> Vec<Vec<u8>> {
    (0..total / (64 * 1024))
        .map(|i| vec![i as u8; 64 * 1024])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_profile_is_pprof_and_names_the_allocating_function_and_file() {
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let held = hold_memory_for_profile_test(32 * MIB as usize);

    let r = get(addr, "/debug/pprof/heap");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-leakscope-sample-interval-bytes"),
        Some("524288")
    );
    assert_eq!(first_value_type(&r.body), "inuse_space");
    let site = attributed_to(&r.body, "hold_memory_for_profile_test");
    assert!(
        !site.files.is_empty(),
        "no function named hold_memory_for_profile_test in the profile"
    );
    for file in &site.files {
        assert!(
            file.ends_with("tests/heap.rs"),
            "site symbolized with file {file:?}"
        );
    }
    // Sampling at 512 KiB gives an unbiased estimate; 32 MiB held should read
    // as well over half of that.
    assert!(
        site.value as u64 >= 16 * MIB,
        "only {} bytes attributed to the site holding 32 MiB",
        site.value
    );

    // With jemalloc, the shims and `vec!`'s machinery cut from the leaf,
    // the bytes are the holding function's own (flat), under its
    // qualified name.
    let flat = flat_of(&r.body, "heap::hold_memory_for_profile_test");
    assert!(
        flat as u64 >= 16 * MIB,
        "only {flat} bytes flat in heap::hold_memory_for_profile_test"
    );

    let svg = get(addr, "/debug/pprof/heap?format=svg");
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.text().contains("<svg"), "flamegraph is SVG");
    // The same qualified name as `go tool pprof` reads (in each frame's
    // title, which inferno never truncates).
    assert!(
        svg.text().contains("heap::hold_memory_for_profile_test"),
        "flamegraph names the holding function by its path"
    );
    drop(held);

    // With sampling paused, jemalloc takes no sample at all, and prof.reset
    // forgets what was: the profile is empty for certain, and the
    // flamegraph of an empty profile is an answer, not a 500. (A reset to a
    // coarse interval alone is not enough: each thread still takes one more
    // sample at the old spacing, and that one may stay live.)
    leakscope_agent::heap::set_sampling_active(false).unwrap();
    assert!(!leakscope_agent::heap::sampling_active().unwrap());
    leakscope_agent::heap::set_sample_interval_lg(19).unwrap();
    let empty = get(addr, "/debug/pprof/heap?format=svg");
    assert_eq!(empty.status, 200, "{}", empty.text());
    assert!(
        empty.text().contains("no sampled allocation is live"),
        "{}",
        empty.text()
    );
    let pb = get(addr, "/debug/pprof/heap");
    assert_eq!(pb.status, 200, "{}", pb.text());
    leakscope_agent::heap::set_sampling_active(true).unwrap();
    agent.shutdown().await;
}
