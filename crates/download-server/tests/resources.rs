//! Resource behaviour of the real binary, watched through /proc: fds return
//! to baseline after aborted and stalled downloads, memory stays bounded on
//! 1 GiB transfers, and SIGTERM drains in-flight downloads.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{wait_until, Fixture, ServerProcess};

fn sparse(path: &std::path::Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn send_get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    send(addr, "GET", path)
}

fn send(addr: std::net::SocketAddr, method: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads a whole response and returns the number of body bytes and the tail.
fn drain(mut s: TcpStream) -> (u64, Vec<u8>) {
    let mut buf = vec![0; 256 * 1024];
    let mut head = Vec::new();
    let mut body_len = 0u64;
    let mut tail = Vec::new();
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body_start = head.len() - chunk.len();
            chunk = &buf[(end + 4 - body_start.min(end + 4))..n];
            in_body = true;
        }
        body_len += chunk.len() as u64;
        tail.extend_from_slice(chunk);
        if tail.len() > 64 * 1024 {
            tail.drain(..tail.len() - 64 * 1024);
        }
    }
    (body_len, tail)
}

/// The server's fd count once idle, after one whole request has been served
/// (the runtime threads, blocking pool and anything else opened on first use
/// exist). The response is read to its end, so the request was handled, and
/// the count is taken when two readings 100 ms apart agree, so the warm-up's
/// own connection and file are closed: a fixed sleep after dropping the
/// socket unread could measure before the request was even accepted, or
/// while its fds were still open. A HEAD of each of `files` puts it in the
/// open-file cache, whose one fd per file is then part of the baseline.
fn warm_baseline(server: &ServerProcess, files: &[&str]) -> usize {
    let (len, _) = drain(send_get(server.addr, "/files/hello.txt"));
    assert_eq!(len, 13, "warm-up response");
    for path in files {
        drain(send(server.addr, "HEAD", path));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = server.fd_count();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = server.fd_count();
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "fd count never settled");
        last = now;
    }
}

#[test]
fn aborted_downloads_release_their_fds() {
    let fixture = Fixture::new();
    sparse(&fixture.root().join("large.bin"), 512 << 20);
    let server = ServerProcess::spawn(&fixture.root(), &[]);
    let baseline = warm_baseline(&server, &["/files/large.bin"]);
    for _ in 0..20 {
        let mut s = send_get(server.addr, "/files/large.bin");
        let mut buf = vec![0; 100 * 1024];
        s.read_exact(&mut buf).unwrap();
        // Dropping the socket mid-body is the client going away.
    }
    let settled = wait_until(Duration::from_secs(10), || server.fd_count() <= baseline);
    assert!(settled, "fds {} > baseline {baseline}", server.fd_count());
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let fixture = Fixture::new();
    sparse(&fixture.root().join("large.bin"), 512 << 20);
    let server = ServerProcess::spawn(&fixture.root(), &["--stall-timeout", "1s"]);
    let baseline = warm_baseline(&server, &["/files/large.bin"]);
    // Request, read nothing, keep the socket open: its fd is the download's
    // (the file's is the cache's, in the baseline).
    let stalled = send_get(server.addr, "/files/large.bin");
    assert!(
        wait_until(Duration::from_secs(5), || server.fd_count() > baseline),
        "the download never started"
    );
    let released = wait_until(Duration::from_secs(15), || server.fd_count() <= baseline);
    assert!(released, "fds {} > baseline {baseline}", server.fd_count());
    drop(stalled);
}

#[test]
fn gigabyte_file_and_zip_stream_in_bounded_memory() {
    let fixture = Fixture::new();
    let dir = fixture.root().join("huge");
    std::fs::create_dir(&dir).unwrap();
    const GIB: u64 = 1 << 30;
    sparse(&dir.join("one-gib.bin"), GIB);
    let server = ServerProcess::spawn(&fixture.root(), &[]);
    drain(send_get(server.addr, "/files/hello.txt"));
    let baseline_kib = server.status_kib("VmRSS");

    let (len, _) = drain(send_get(server.addr, "/files/huge/one-gib.bin"));
    assert_eq!(len, GIB);
    let (zip_len, tail) = drain(send_get(server.addr, "/zip/huge"));
    // Chunked framing wraps the archive; its end-of-central-directory record
    // must be there and the archive must hold the whole file.
    assert!(zip_len > GIB, "zip body {zip_len}");
    assert!(
        tail.windows(4).any(|w| w == b"PK\x05\x06"),
        "no end of central directory"
    );

    let peak_kib = server.status_kib("VmHWM");
    let grown_mib = peak_kib.saturating_sub(baseline_kib) / 1024;
    eprintln!("baseline {baseline_kib} KiB, peak {peak_kib} KiB after 2 GiB streamed");
    assert!(
        grown_mib < 16,
        "peak RSS grew {grown_mib} MiB while streaming 1 GiB"
    );
}

#[test]
fn sigterm_drains_in_flight_downloads() {
    let fixture = Fixture::new();
    sparse(&fixture.root().join("large.bin"), 64 << 20);
    let mut server = ServerProcess::spawn(&fixture.root(), &["--shutdown-timeout", "20s"]);
    let mut s = send_get(server.addr, "/files/large.bin");
    let mut first = vec![0; 64 * 1024];
    s.read_exact(&mut first).unwrap();
    server.signal(rustix::process::Signal::TERM);
    // New connections are refused once shutdown starts (when the server gets
    // to handling the signal: polled, as a loaded machine may take a while;
    // a connection that still gets through is dropped at once)...
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(server.addr)
            .is_err()),
        "still accepting 10 s after SIGTERM"
    );
    // ...while the download in flight completes.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let total = (first.len() + rest.len()) as u64;
    assert!(
        total > 64 << 20,
        "download cut short: {total} bytes incl. head"
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A supervisor may send SIGTERM the moment the server says it is ready:
/// the handler must already be there, or the default action kills the
/// process (and any download in flight). Repeated because the window this
/// guards is short.
#[test]
fn sigterm_on_the_ready_line_is_a_graceful_exit() {
    let fixture = Fixture::new();
    for round in 0..20 {
        let mut server = ServerProcess::spawn(&fixture.root(), &[]);
        server.signal(rustix::process::Signal::TERM);
        let status = server.child.wait().unwrap();
        assert!(status.success(), "round {round}: {status:?}");
    }
}
