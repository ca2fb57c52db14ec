//! Real servers holding a fixture fleet's history: Prometheus from blocks
//! that `promtool` backfilled, and VictoriaMetrics through its import API.
//! Each binds 127.0.0.1 on a free port, keeps its data in a temp dir, and
//! is killed when its guard drops (also on a panic).
#![allow(dead_code)]

pub mod fixtures;
pub mod live;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails the test unless `bin` runs. The tests that need a server binary
/// are ignored by `cargo test` and run by `cargo xtask test` where the
/// binary is installed, so reaching here without it is an error.
pub fn require(bin: &str, version_flag: &str) {
    let ok = Command::new(bin)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs `{bin}` (apt-get install prometheus victoria-metrics)"
    );
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A server process, killed and reaped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on loopback: (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

/// Waits until `GET path` answers 200, or panics after `limit`.
fn wait_ready(server: &mut Server, path: &str, limit: Duration) {
    let began = Instant::now();
    while began.elapsed() < limit {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the server at {} exited early: {status}", server.url);
        }
        if matches!(http(server.port, "GET", path, b""), Ok((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{}{path} not ready after {limit:?}", server.url);
}

fn spawn(cmd: &mut Command, port: u16, data: tempfile::TempDir) -> Server {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the server");
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        port,
        _data: data,
    }
}

/// Prometheus serving `openmetrics`, backfilled into its data dir.
pub fn prometheus(openmetrics: &str) -> Server {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("fixture.om");
    std::fs::write(&input, openmetrics).unwrap();
    let tsdb = data.path().join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&tsdb)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = data.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let port = free_port();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=30d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let mut server = spawn(&mut cmd, port, data);
    wait_ready(&mut server, "/-/ready", Duration::from_secs(60));
    server
}

/// VictoriaMetrics with `text` imported, once a query sees all of it.
pub fn victoria(text: &str, series: usize, at: i64) -> Server {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new("victoria-metrics");
    cmd.arg(format!(
        "-storageDataPath={}",
        data.path().join("vm").display()
    ))
    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
    .arg("-retentionPeriod=1");
    let mut server = spawn(&mut cmd, port, data);
    wait_ready(&mut server, "/health", Duration::from_secs(60));
    let (status, body) = http(port, "POST", "/api/v1/import/prometheus", text.as_bytes())
        .expect("importing into VictoriaMetrics");
    assert!((200..300).contains(&status), "import: {status} {body}");
    wait_visible(&server, series, at);
    server
}

/// Flushes VictoriaMetrics' buffers and waits until an instant query at
/// `at` (Unix seconds, the fixture's last point) counts every series.
fn wait_visible(server: &Server, series: usize, at: i64) {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(60) {
        let _ = http(server.port, "GET", "/internal/force_flush", b"");
        let path = format!("/api/v1/query?query=count(%7Bjob%3D%22fixture%22%7D)&time={at}");
        if let Ok((200, body)) = http(server.port, "GET", &path, b"") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let n = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|n| n.parse().ok());
            if n.is_some_and(|n: usize| n >= series) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("VictoriaMetrics did not show the {series} imported series within 60 s");
}

/// The real `leakscope fleet` against `url`: (exit code, stdout, stderr).
pub fn fleet(url: &str, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["fleet", "--url", url, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("running leakscope fleet");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
