//! Running the built zoo as a child process and reading its ground truth.
//!
//! Every wait is a bounded poll for a condition, never a fixed sleep, so the
//! tests are as fast as the machine allows and fail with the last observed
//! state instead of hanging.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_leak-zoo");

/// The most any condition is waited for. Generous: the machine is shared.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `probe` until `done` accepts its value; panics with the last value
/// after [`WAIT`].
#[track_caller]
pub fn poll<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("waited {WAIT:?} for {what}; last seen: {value:#?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A running `leak-zoo serve`, killed when dropped.
pub struct Zoo {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The stdout lines up to and including the listening line.
    pub lines: Vec<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Zoo {
    /// `leak-zoo serve ARGS` on 127.0.0.1:0.
    pub fn start(args: &[&str]) -> Zoo {
        Self::spawn(Command::new(BIN), args)
    }

    /// The same under `prlimit --nofile=N:N` (prlimit execs, so the pid is
    /// the zoo's).
    pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> Zoo {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={limit}:{limit}"))
            .arg("--")
            .arg(BIN);
        Self::spawn(cmd, args)
    }

    fn spawn(mut cmd: Command, args: &[&str]) -> Zoo {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr.log");
        let err_file = std::fs::File::create(&stderr).expect("stderr log");
        let mut child = cmd
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .expect("start leak-zoo");
        let pid = child.id();
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line.strip_prefix("leak-zoo listening on ").map(addr_in);
                    lines.push(line);
                    if let Some(addr) = addr {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                    panic!("no listening line; stdout {lines:?}; stderr:\n{log}");
                }
            }
        };
        Zoo {
            child,
            pid,
            addr,
            lines,
            stderr,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// GET `path` over a fresh connection.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        get(self.addr, path)
    }

    /// `/debug/zoo`, parsed.
    pub fn debug(&self) -> Value {
        let (status, body) = self.get("/debug/zoo").expect("GET /debug/zoo");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("/debug/zoo is JSON")
    }

    /// Entries in /proc/PID/fd, seen from outside.
    pub fn proc_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/PID/fd")
            .count() as u64
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` and waits (bounded) for the exit.
    pub fn signal_and_wait(&mut self, signal: rustix::process::Signal) -> ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("pid > 0");
        rustix::process::kill_process(pid, signal).expect("signal the zoo");
        poll(
            "the zoo to exit",
            || self.child.try_wait().ok().flatten(),
            Option::is_some,
        )
        .expect("exited")
    }
}

impl Drop for Zoo {
    /// SIGTERM first, so the zoo removes its scratch file; SIGKILL if it
    /// has not exited within a few seconds.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first whitespace-separated word that is an IP:PORT, the way
/// leakscope's `{addr:PREFIX}` reads a line.
pub fn addr_in(text: &str) -> SocketAddr {
    text.split_whitespace()
        .find_map(|w| w.trim_matches([',', ';']).parse().ok())
        .unwrap_or_else(|| panic!("no IP:PORT in {text:?}"))
}

/// A minimal GET with `Connection: close`, for reading the zoo's state
/// without involving the client under test.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// What `leak-zoo client` reported.
#[derive(Debug)]
pub struct ClientRun {
    pub code: Option<i32>,
    pub summary: Option<Value>,
    pub stderr: String,
}

/// Runs `leak-zoo client ARGS` to completion.
pub fn client(args: &[&str]) -> ClientRun {
    let out = Command::new(BIN)
        .arg("client")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run leak-zoo client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    ClientRun {
        code: out.status.code(),
        summary: stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok()),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads a u64 field of a JSON object.
pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}
