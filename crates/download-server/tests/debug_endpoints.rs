//! The real binary with leakscope-agent switched on: debug endpoints on their
//! own port, tokio-console streaming, and clear start-up errors.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{get, Fixture, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_and_console_endpoints_serve_the_running_server() {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("a.bin"), vec![7u8; 200_000]).unwrap();
    let server = ServerProcess::spawn(
        &fx.root(),
        &["--debug-listen", "127.0.0.1:0", "--console", "127.0.0.1:0"],
    );
    let debug = server.debug_addr.expect("debug listening line");
    let console = server.console_addr.expect("console listening line");

    for _ in 0..20 {
        let r = get(&format!("http://{}/files/a.bin", server.addr), &[]).await;
        assert_eq!(r.status, 200);
    }
    let stats = get(&format!("http://{debug}/debug/heap/stats"), &[]).await;
    assert_eq!(stats.status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["allocator"], "jemalloc");
    // 20 downloads of 200 KB in 32 KiB chunks: well over 20 allocations.
    assert!(stats["allocated_bytes_total"].as_u64().unwrap() > 1024);

    let tasks = get(&format!("http://{debug}/debug/tasks"), &[]).await;
    let tasks: serde_json::Value = serde_json::from_slice(&tasks.body).unwrap();
    assert!(tasks["workers"].as_u64().unwrap() >= 1);

    let heap = get(&format!("http://{debug}/debug/pprof/heap"), &[]).await;
    assert_eq!(heap.status, 200);
    assert_eq!(&heap.body[..2], &[0x1f, 0x8b], "gzipped pprof");

    // The console stream carries the server's tasks (its accept loop at least).
    use console_api::instrument::instrument_client::InstrumentClient;
    let mut client = InstrumentClient::connect(format!("http://{console}"))
        .await
        .expect("console endpoint accepts gRPC");
    let mut stream = client
        .watch_updates(console_api::instrument::InstrumentRequest {})
        .await
        .unwrap()
        .into_inner();
    let tasks_seen = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let update = stream.message().await.unwrap().expect("stream open");
            if let Some(t) = update.task_update {
                if !t.new_tasks.is_empty() {
                    return t.new_tasks.len();
                }
            }
        }
    })
    .await
    .expect("a task update within 15 s");
    assert!(tasks_seen >= 1);

    // SIGTERM still shuts down cleanly with the agent running.
    let mut server = server;
    server.signal(rustix::process::Signal::TERM);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn non_loopback_debug_address_is_refused_with_a_hint() {
    let fx = Fixture::new();
    let out = Command::new(env!("CARGO_BIN_EXE_download-server"))
        .arg("--root")
        .arg(fx.root())
        .args(["--listen", "127.0.0.1:0", "--debug-listen", "0.0.0.0:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--debug-allow-remote"), "{err}");
}
