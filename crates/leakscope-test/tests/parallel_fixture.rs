//! Sixteen guarded tests for libtest's default parallel harness. One of
//! them, `leaks_a_task_an_fd_and_heap`, leaks all three on purpose; the
//! others are clean, one of them allocating 100 MiB while its siblings
//! run. `cargo xtask test` runs this binary 20 times and requires exactly
//! that test to fail, every time, with all three leaks named.
//!
//! Not run by `cargo test` (`test = false` in Cargo.toml): it fails by
//! design.

use std::sync::Mutex;
use std::time::Duration;

use leakscope_test::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOC: leakscope_test::TrackingAllocator = leakscope_test::TrackingAllocator::system();

/// Heap is judged only after a warm-up run.
fn judged() -> Config {
    Config::new().warmup(1)
}

static LEAKED_LISTENERS: Mutex<Vec<TcpListener>> = Mutex::new(Vec::new());
static LEAKED_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[leakscope_test::test(flavor = "multi_thread", worker_threads = 2, config = judged())]
async fn leaks_a_task_an_fd_and_heap() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.await;
    });
    std::mem::forget(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    LEAKED_LISTENERS.lock().unwrap().push(listener);
    LEAKED_BUFFERS.lock().unwrap().push(vec![7u8; 256 * 1024]);
}

#[leakscope_test::test(flavor = "multi_thread", worker_threads = 2, config = judged())]
async fn allocates_100_mib_while_siblings_run() {
    let big = vec![1u8; 100 << 20];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(big[big.len() - 1], 1);
}

#[leakscope_test::test(config = judged())]
async fn spawns_and_joins() {
    let handles: Vec<_> = (0..50)
        .map(|i| tokio::spawn(async move { i * 2 }))
        .collect();
    let mut sum = 0;
    for h in handles {
        sum += h.await.unwrap();
    }
    assert_eq!(sum, 2450);
}

#[leakscope_test::test(flavor = "multi_thread", worker_threads = 2, config = judged())]
async fn echoes_over_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    server.await.unwrap();
}

#[leakscope_test::test(config = judged())]
async fn reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    tokio::fs::write(&path, b"data").await.unwrap();
    assert_eq!(tokio::fs::read(&path).await.unwrap(), b"data");
}

#[leakscope_test::test(config = judged())]
async fn channel_closes() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
    let t = tokio::spawn(async move {
        let mut n = 0;
        while let Some(v) = rx.recv().await {
            n += v;
        }
        n
    });
    for i in 0..100 {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    assert_eq!(t.await.unwrap(), 4950);
}

#[leakscope_test::test(start_paused = true, config = judged())]
async fn paused_clock_timers() {
    let t = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        1
    });
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(t.await.unwrap(), 1);
}

#[leakscope_test::test(config = judged())]
async fn blocking_work() {
    let n = tokio::task::spawn_blocking(|| (0..1000u64).sum::<u64>())
        .await
        .unwrap();
    assert_eq!(n, 499_500);
}

#[leakscope_test::test(flavor = "multi_thread", worker_threads = 2, config = judged())]
async fn straggler_ends_after_the_body() {
    // Finishes 50 ms after the body returns: the check waits for it.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
}

#[leakscope_test::test(config = judged())]
async fn select_with_timeout() {
    let r = tokio::time::timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
    assert!(r.is_err());
}

#[leakscope_test::test(config = judged())]
async fn builds_and_drops_collections() {
    let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let m: std::collections::HashMap<_, _> = v.iter().map(|s| (s.clone(), s.len())).collect();
    assert_eq!(m.len(), 10_000);
}

#[leakscope_test::test(flavor = "multi_thread", worker_threads = 2, config = judged())]
async fn joinset_drains() {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i)).await;
        });
    }
    while set.join_next().await.is_some() {}
}

#[leakscope_test::test(config = judged())]
async fn unix_pair() {
    let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
    a.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf[0], b'x');
}

#[leakscope_test::test(config = judged())]
async fn returns_a_result() -> Result<(), std::io::Error> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let _ = l.local_addr()?;
    Ok(())
}

#[leakscope_test::test(flavor = "multi_thread", worker_threads = 2, config = judged())]
async fn many_short_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..20 {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        }
    });
    for _ in 0..20 {
        let _ = TcpStream::connect(addr).await.unwrap();
    }
    server.await.unwrap();
}

#[leakscope_test::test(config = judged())]
async fn notify_and_wait() {
    let n = std::sync::Arc::new(tokio::sync::Notify::new());
    let n2 = n.clone();
    let t = tokio::spawn(async move { n2.notified().await });
    tokio::task::yield_now().await;
    n.notify_one();
    t.await.unwrap();
}
