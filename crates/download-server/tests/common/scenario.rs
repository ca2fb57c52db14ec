//! Helpers for the leak-scenario tests: clients that abort or stall, and
//! in-process measurements of the leaking resources.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use download_server::scenarios::Variant;

use super::{Fixture, Running};

/// Starts the in-process server with the scenario routes on `variant`.
pub async fn start(fx: &Fixture, variant: Variant) -> Running {
    let mut config = fx.config();
    config.variant = Some(variant);
    config.max_inflight = 4096;
    Running::start(config).await
}

/// A connection whose receive window is small, so the server cannot push a
/// large body into kernel buffers and must hold it (or not) itself.
pub fn connect_small_window(addr: SocketAddr) -> TcpStream {
    use rustix::net::{socket, sockopt, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 8 * 1024).unwrap();
    rustix::net::connect(&fd, &addr).unwrap();
    let stream = TcpStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Sends a GET and reads until the head and `body_bytes` of body arrived.
pub fn start_download(addr: SocketAddr, path: &str, body_bytes: usize) -> TcpStream {
    let mut s = connect_small_window(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: leak-test\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "server closed before sending {body_bytes} body bytes"
        );
        got.extend_from_slice(&buf[..n]);
        if let Some(head) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&got[..head])
            );
            if got.len() - head - 4 >= body_bytes {
                return s;
            }
        }
    }
}

/// Downloads `after` bytes of body, then drops the connection.
pub fn aborted_download(addr: SocketAddr, path: &str, after: usize) {
    drop(start_download(addr, path, after));
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Bytes the program has allocated and not freed (jemalloc's per-thread
/// counters, summed by leakscope-agent).
pub fn live_heap() -> u64 {
    leakscope_agent::heap::stats().unwrap().live_bytes.unwrap()
}

/// Bytes allocated since start, cumulative.
pub fn allocated_total() -> u64 {
    leakscope_agent::heap::stats()
        .unwrap()
        .allocated_bytes_total
        .unwrap()
}

/// Polls `f` until it holds or `limit` passes; returns whether it held.
/// A caller that goes on to measure either way says when it did not.
#[must_use = "say when the wait ran out: the measurement after it is then of an unsettled state"]
pub async fn settles(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
