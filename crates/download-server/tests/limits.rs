//! Admission limits and timeouts actually trigger.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get, get_until_ok, Fixture, Running};
use http::StatusCode;

/// A file far larger than loopback socket buffers, so a download whose body
/// nobody reads stays in flight. Sparse: costs no disk.
fn add_large_file(fixture: &Fixture) {
    let f = std::fs::File::create(fixture.root().join("large.bin")).unwrap();
    f.set_len(256 << 20).unwrap();
}

#[tokio::test]
async fn max_inflight_gives_503_and_recovers() {
    let fixture = Fixture::new();
    add_large_file(&fixture);
    let mut config = fixture.config();
    config.max_inflight = 2;
    let server = Running::start(config).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut held = Vec::new();
    for _ in 0..2 {
        let r = client
            .get(server.url("/files/large.bin").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
    }
    let r = get(&server.url("/files/hello.txt"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Probes are never refused.
    assert_eq!(
        get(&server.url("/healthz"), &[]).await.status,
        StatusCode::OK
    );
    drop(held);
    let status = get_until_ok(&server.url("/files/hello.txt")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "slots are released when clients go away"
    );
}

#[tokio::test]
async fn concurrent_load_over_the_cap_sees_503_never_errors() {
    let fixture = Fixture::new();
    // 8 MiB each: long enough that 48 concurrent downloads must overlap.
    std::fs::write(fixture.root().join("8m.bin"), common::pattern(8 << 20)).unwrap();
    let mut config = fixture.config();
    config.max_inflight = 3;
    let server = Running::start(config).await;
    let url = server.url("/files/8m.bin");
    let tasks: Vec<_> = (0..48)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => {
                assert_eq!(r.body.len(), 8 << 20);
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => busy += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 3 && busy >= 1, "ok={ok} busy={busy}");
}

/// The bucket refills on the real clock, so how many requests pass depends
/// on how long they took: the bound is computed from the measured time (a
/// loaded machine that is slow to send them lets more through, legitimately).
/// The exact sequence is unit-tested on a fake clock in src/limits.rs.
#[tokio::test]
async fn rate_per_ip_gives_429() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    let per_second = 5;
    config.rate_per_ip = Some(per_second.try_into().unwrap());
    let server = Running::start(config).await;
    let (mut ok, mut limited) = (0u32, 0u32);
    let began = Instant::now();
    // 20 requests, and more until one is refused (at most 200: a limiter
    // that never refuses fails below).
    for sent in 1..=200 {
        let r = get(&server.url("/files/hello.txt"), &[]).await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=2).contains(&after));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
        if sent >= 20 && limited > 0 {
            break;
        }
    }
    let elapsed = began.elapsed();
    // The burst passes whole; past it, only what refilled while the
    // requests ran (+1 for the edges of the window).
    let refilled = (elapsed.as_secs_f64() * f64::from(per_second)) as u32;
    assert!(
        (per_second..=per_second + refilled + 1).contains(&ok),
        "ok={ok} limited={limited} in {elapsed:?}"
    );
    assert!(limited >= 1, "ok={ok} limited={limited} in {elapsed:?}");
    assert_eq!(
        get(&server.url("/healthz"), &[]).await.status,
        StatusCode::OK
    );
}

/// A client that sends half a request head is disconnected (slowloris).
#[tokio::test]
async fn header_read_timeout_closes_half_sent_heads() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.header_read_timeout = Duration::from_millis(500);
    let server = Running::start(config).await;
    let addr = server.addr;
    let elapsed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /files/hello.txt HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).to_string();
        assert!(!text.contains("hello, world"), "{text}");
        start.elapsed()
    })
    .await
    .unwrap();
    assert!(elapsed < Duration::from_secs(10), "held for {elapsed:?}");
}

/// Oversized request heads are refused, not buffered without bound.
#[tokio::test]
async fn oversized_heads_are_refused() {
    let fixture = Fixture::new();
    let server = Running::start(fixture.config()).await;
    let addr = server.addr;
    let response = tokio::task::spawn_blocking(move || {
        let big = "a".repeat(100_000);
        let req = format!(
            "GET /files/hello.txt HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        );
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(req.as_bytes());
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    // The server is still healthy.
    assert_eq!(
        get(&server.url("/healthz"), &[]).await.status,
        StatusCode::OK
    );
}
