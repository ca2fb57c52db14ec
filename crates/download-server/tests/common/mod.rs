//! Test helpers: a generated fixture tree, the server in-process on an
//! ephemeral port or as a real child process, and HTTP clients (hyper, and
//! raw TCP for requests a well-behaved client would refuse to send).
#![allow(dead_code)]

pub mod scenario;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use download_server::{Config, Server};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A temporary tree: `root/` is served, `outside/` must never be.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join("empty-dir")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
        std::fs::write(root.join("big.bin"), pattern(1_000_003)).unwrap();
        std::fs::write(root.join("empty.txt"), b"").unwrap();
        std::fs::write(root.join("sub/naïve résumé.txt"), "unicode name\n").unwrap();
        std::fs::write(root.join("sub/deeper/data.json"), b"{\"a\":1}").unwrap();
        std::fs::write(dir.path().join("outside/secret.txt"), SECRET).unwrap();
        std::fs::write(dir.path().join("root-sibling.txt"), SECRET).unwrap();
        let link =
            |target: &str, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        link("../outside/secret.txt", "escape-relative");
        link(
            dir.path().join("outside/secret.txt").to_str().unwrap(),
            "escape-absolute",
        );
        link("../outside", "escape-dir");
        link("/etc", "etc-link");
        link("hello.txt", "inside-link");
        link("loop-b", "loop-a");
        link("loop-a", "loop-b");
        Self { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(self.root());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config
    }
}

pub const SECRET: &[u8] = b"TOP-SECRET-CONTENT";

/// Deterministic, non-repeating-per-chunk content so that an off-by-one
/// anywhere shows up as a mismatch.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The server running in this process; shuts down when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(config: Config) -> Self {
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One request through hyper's client.
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    request(Method::GET, url, headers).await
}

/// GETs `url` until it answers 200 (a released slot) or 5 s pass; returns
/// the last status.
pub async fn get_until_ok(url: &str) -> StatusCode {
    let mut status = get(url, &[]).await.status;
    for _ in 0..100 {
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = get(url, &[]).await.status;
    }
    status
}

/// Sends raw bytes and returns the whole raw response (the server closes:
/// requests carry `Connection: close`). Blocking; call via spawn_blocking or
/// from sync tests.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Status code of a raw response.
pub fn raw_status(response: &[u8]) -> u16 {
    let line = response.split(|&b| b == b'\r').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// The real `download-server` binary as a child process.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// From `debug listening on ADDR`, when --debug-listen was given.
    pub debug_addr: Option<SocketAddr>,
    /// From `console listening on ADDR`, when the console is on.
    pub console_addr: Option<SocketAddr>,
}

impl ServerProcess {
    pub fn spawn(root: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_download-server"))
            .arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut debug_addr, mut console_addr) = (None, None);
        let addr = loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "server exited before it was ready"
            );
            let line = line.trim();
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.parse().unwrap();
            } else if let Some(a) = line.strip_prefix("debug listening on ") {
                debug_addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("console listening on ") {
                console_addr = Some(a.parse().unwrap());
            } else {
                panic!("unexpected line {line:?}");
            }
        };
        Self {
            child,
            addr,
            debug_addr,
            console_addr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open fds of the child, from /proc.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or_else(|| panic!("no {field} in status"))
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
