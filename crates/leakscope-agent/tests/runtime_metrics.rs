//! /debug/tasks reports the host runtime, and only the host's tasks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, start_agent};

fn alive(addr: std::net::SocketAddr) -> u64 {
    let r = get(addr, "/debug/tasks");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["alive_tasks"].as_u64().expect("alive_tasks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sees_a_thousand_spawned_tasks_come_and_go() {
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();

    let stats = get(addr, "/debug/tasks").json();
    assert_eq!(stats["workers"], 2);
    assert_eq!(stats["flavor"], "multi_thread");
    // The agent's own listener and connection tasks live on its own runtime,
    // and the client here is blocking, so the host runtime starts empty.
    let baseline = alive(addr);
    assert_eq!(
        baseline, 0,
        "the agent must not add tasks to the host runtime"
    );
    let spawned_before = stats["spawned_tasks_total"].as_u64();

    let release = Arc::new(tokio::sync::Notify::new());
    let mut handles = Vec::new();
    for _ in 0..1000 {
        let release = release.clone();
        handles.push(tokio::spawn(async move { release.notified().await }));
    }
    // `notified()` registers when first polled; wait until all have run once.
    tokio::task::yield_now().await;
    let during = get(addr, "/debug/tasks").json();
    assert_eq!(during["alive_tasks"].as_u64(), Some(1000));
    if let (Some(a), Some(b)) = (spawned_before, during["spawned_tasks_total"].as_u64()) {
        assert!(b - a >= 1000, "spawned_tasks_total rose by {}", b - a);
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while handles.iter().any(|h| !h.is_finished()) {
        release.notify_waiters();
        assert!(Instant::now() < deadline, "tasks did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for h in handles {
        h.await.unwrap();
    }
    // A finished task leaves the runtime's alive count when its last
    // reference is released, which a worker thread may do a moment after
    // the join handle saw it complete: poll rather than read once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = alive(addr);
    while left != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = alive(addr);
    }
    assert_eq!(left, 0, "finished tasks are no longer alive");
    agent.shutdown().await;
}
