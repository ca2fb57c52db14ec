//! The sampled jemalloc heap profile, read over HTTP.

mod common;

use common::{get, gunzip, start_agent};
use pprof::protos::Message;

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
    let profile =
        pprof::protos::Profile::decode(gunzip(&r.body).as_slice()).expect("pprof protobuf");
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let value_types: Vec<_> = profile.sample_type.iter().map(|t| s(t.ty)).collect();
    assert_eq!(value_types, ["inuse_space"]);

    // Function ids of our site, with its file.
    let ours: Vec<u64> = profile
        .function
        .iter()
        .filter(|f| s(f.name).contains("hold_memory_for_profile_test"))
        .inspect(|f| {
            assert!(
                s(f.filename).ends_with("tests/heap.rs"),
                "site symbolized with file {:?}",
                s(f.filename)
            )
        })
        .map(|f| f.id)
        .collect();
    assert!(
        !ours.is_empty(),
        "no function named hold_memory_for_profile_test in the profile"
    );
    let locations: Vec<u64> = profile
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| ours.contains(&line.function_id)))
        .map(|l| l.id)
        .collect();
    let attributed: i64 = profile
        .sample
        .iter()
        .filter(|smp| smp.location_id.iter().any(|id| locations.contains(id)))
        .map(|smp| smp.value[0])
        .sum();
    // Sampling at 512 KiB gives an unbiased estimate; 32 MiB held should read
    // as well over half of that.
    assert!(
        attributed as u64 >= 16 * MIB,
        "only {attributed} bytes attributed to the site holding 32 MiB"
    );
    drop(held);

    let svg = get(addr, "/debug/pprof/heap?format=svg");
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.text().contains("<svg"), "flamegraph is SVG");
    agent.shutdown().await;
}
