//! The dhat build of the server writes its heap profile on graceful shutdown.
//!
//! Runs only in that build:
//! `cargo test -p download-server --no-default-features --features dhat-heap --test dhat_build`
//! (`cargo xtask test` does it).

mod common;

use common::{get, Fixture, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_a_dhat_file_naming_the_server_code() {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("a.bin"), vec![7u8; 100_000]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("dhat-heap.json");
    let path_arg = path.to_str().unwrap().to_string();
    let mut server = ServerProcess::spawn(
        &fx.root(),
        &["--debug-listen", "127.0.0.1:0", "--dhat-file", &path_arg],
    );
    for _ in 0..5 {
        assert_eq!(
            get(&format!("http://{}/files/a.bin", server.addr), &[])
                .await
                .status,
            200
        );
    }
    let debug = server.debug_addr.unwrap();
    let stats = get(&format!("http://{debug}/debug/heap/stats"), &[]).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["allocator"], "dhat");

    server.signal(rustix::process::Signal::TERM);
    assert!(server.child.wait().unwrap().success());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("dhat file written")).unwrap();
    let ftbl = json["ftbl"].as_array().unwrap();
    assert!(
        ftbl.iter()
            .any(|f| f.as_str().unwrap().contains("download_server::")),
        "no download_server frame among {} frames",
        ftbl.len()
    );
    // Total bytes include the five 100 KB reads' 32 KiB chunk buffers.
    let total: u64 = json["pps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tb"].as_u64().unwrap())
        .sum();
    assert!(total >= 5 * 32 * 1024, "total bytes {total}");
}
