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
    // A port that was free a moment ago: nothing listens there (port 9 may
    // have a listener, or a firewall that drops instead of refusing).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let source = ConsoleSource::spawn(&format!("http://{addr}"), Duration::from_millis(50));
    // Until the first attempt has failed (how soon depends on how soon the
    // machine runs the source's task), for at most 10 s: an attempt that
    // hangs instead of failing fails the test.
    let began = std::time::Instant::now();
    let err = loop {
        let err = source.snapshot().unwrap_err();
        if err != "not connected yet" || began.elapsed() > Duration::from_secs(10) {
            break err;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(err.contains(&addr.to_string()), "{err}");
}
