//! The console source against a real console-subscriber stream in this
//! process: named tasks appear with their spawn location and name, and
//! disappear when they finish.

use std::time::Duration;

use leakscope::sources::console::ConsoleSource;
use tracing_subscriber::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tasks_follow_spawns_and_exits() {
    let config = leakscope_agent::console::ConsoleConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let (layer, addr) = leakscope_agent::console::spawn(&config).unwrap();
    tracing_subscriber::registry().with(layer).init();

    let source = ConsoleSource::spawn(&format!("http://{addr}"), Duration::from_millis(100));
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    for _ in 0..25 {
        let release = release.clone();
        handles.push(
            tokio::task::Builder::new()
                .name("held-by-test")
                .spawn(async move { release.notified().await })
                .unwrap(),
        );
    }
    let count = |source: &ConsoleSource| {
        source
            .snapshot()
            .ok()
            .and_then(|s| s.by_name.get("held-by-test").copied())
            .unwrap_or(0)
    };
    let mut seen = 0;
    for _ in 0..100 {
        seen = count(&source);
        if seen == 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 25, "named tasks seen live");
    let snap = source.snapshot().unwrap();
    assert!(
        snap.by_location
            .keys()
            .any(|l| l.contains("console_source.rs")),
        "spawn location: {:?}",
        snap.by_location
    );

    // Release them; they must leave the live set.
    while handles.iter().any(|h| !h.is_finished()) {
        release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..100 {
        seen = count(&source);
        if seen == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 0, "finished tasks are no longer live");
}

#[tokio::test]
async fn an_unreachable_console_is_an_error_not_a_hang() {
    let source = ConsoleSource::spawn("http://127.0.0.1:9", Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = source.snapshot().unwrap_err();
    assert!(err.contains("127.0.0.1:9"), "{err}");
}
