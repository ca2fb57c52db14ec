//! A live fleet on loopback: download-server replicas, each a process of
//! its own (test-targets' `instrumented-server`, without the console
//! layer, whose retention of finished tasks would grow every replica's
//! memory with the load) with leakscope-agent beside it,
//! and a real Prometheus scraping them every second.
//!
//! A replica has two scrape targets, as a service with a separate agent
//! port has in production: the server's `/metrics` (the request counter,
//! by route) and the agent's `/metrics` (the standard process metrics and
//! jemalloc's figures). Both carry the same `replica` label, and
//! `leakscope fleet --by replica` joins them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_targets::server;

use super::{free_port, http, spawn, wait_ready, Server};

/// One replica process, killed and reaped when dropped.
pub struct Replica {
    child: Child,
    pub name: String,
    pub server: String,
    pub agent: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a replica serving `root` in `variant`, once it has printed both
/// addresses (bounded: a loaded machine may take a while to start a debug
/// binary, but not a minute).
pub fn replica(name: &str, root: &Path, variant: &str) -> Replica {
    let mut child = Command::new(test_targets::path(test_targets::Bin::InstrumentedServer))
        .env(server::ROOT_ENV, root)
        .env(server::VARIANT_ENV, variant)
        .env(server::NO_CONSOLE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting a replica");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut r = Replica {
        child,
        name: name.into(),
        server: String::new(),
        agent: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.server.is_empty() || r.agent.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("replica {name} did not print its addresses: {e}"));
        if let Some(a) = line.strip_prefix(server::AGENT_LINE) {
            r.agent = a.into();
        } else if let Some(a) = line.strip_prefix(server::SERVER_LINE) {
            r.server = a.into();
        }
    }
    r
}

/// Prometheus scraping every replica's two targets every second, with no
/// history but its own (data in a temp dir), once it is ready.
pub fn prometheus(replicas: &[Replica]) -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut config =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (job, addr) in [
        (
            "server",
            (|r: &Replica| r.server.clone()) as fn(&Replica) -> String,
        ),
        ("agent", |r: &Replica| r.agent.clone()),
    ] {
        config.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
        for r in replicas {
            config.push_str(&format!(
                "      - targets: ['{}']\n        labels: {{replica: '{}'}}\n",
                addr(r),
                r.name
            ));
        }
    }
    let file = data.path().join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let port = free_port();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let mut server = spawn(&mut cmd, port, data);
    wait_ready(&mut server, "/-/ready", Duration::from_secs(60));
    server
}

/// An instant query's first value, if the server answered one.
pub fn scalar(server: &Server, promql: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let (status, body) = http(server.port, "GET", &path, b"").ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` every 200 ms until `ok` holds for its value, or panics
/// after `limit` saying what it waited for.
pub fn wait_for(server: &Server, promql: &str, ok: impl Fn(f64) -> bool, limit: Duration) -> f64 {
    let began = Instant::now();
    let mut last = None;
    while began.elapsed() < limit {
        last = scalar(server, promql);
        if let Some(v) = last.filter(|v| ok(*v)) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("Prometheus: `{promql}` was {last:?} after {limit:?}");
}

/// Percent-encodes a query parameter (everything but unreserved bytes).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
