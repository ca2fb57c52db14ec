//! A blocking HTTP/1.1 client for the agent's endpoints.
//!
//! Blocking on purpose: a hyper client would spawn connection tasks on the
//! test's runtime, and the runtime-metrics tests count that runtime's tasks
//! exactly.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect to agent");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("reply has a head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target)
}

/// Starts an agent on an ephemeral loopback port.
pub fn start_agent() -> leakscope_agent::Agent {
    leakscope_agent::Agent::builder()
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .expect("agent starts")
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gzip body");
    out
}

/// What a pprof profile attributes to one function: the summed first value
/// of every sample whose stack contains it, out of all samples, and the
/// files the function was symbolized with.
pub struct Attributed {
    pub value: i64,
    pub total: i64,
    pub files: Vec<String>,
}

pub fn attributed_to(gzipped: &[u8], function: &str) -> Attributed {
    use pprof::protos::Message;
    let profile =
        pprof::protos::Profile::decode(gunzip(gzipped).as_slice()).expect("pprof protobuf");
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let ours: Vec<&pprof::protos::Function> = profile
        .function
        .iter()
        .filter(|f| s(f.name).contains(function))
        .collect();
    let ids: Vec<u64> = ours.iter().map(|f| f.id).collect();
    let locations: Vec<u64> = profile
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| ids.contains(&line.function_id)))
        .map(|l| l.id)
        .collect();
    let (mut value, mut total) = (0, 0);
    for smp in &profile.sample {
        total += smp.value[0];
        if smp.location_id.iter().any(|id| locations.contains(id)) {
            value += smp.value[0];
        }
    }
    Attributed {
        value,
        total,
        files: ours.iter().map(|f| s(f.filename).to_string()).collect(),
    }
}

/// Bytes whose stack's leaf (the innermost function of its first location)
/// is `function`: what `go tool pprof -top` shows as its flat bytes.
pub fn flat_of(gzipped: &[u8], function: &str) -> i64 {
    use pprof::protos::Message;
    let profile =
        pprof::protos::Profile::decode(gunzip(gzipped).as_slice()).expect("pprof protobuf");
    let s = |i: i64| profile.string_table[i as usize].as_str();
    let leaf_name = |location_id: u64| {
        let l = profile.location.iter().find(|l| l.id == location_id)?;
        let id = l.line.first()?.function_id;
        let f = profile.function.iter().find(|f| f.id == id)?;
        Some(s(f.name))
    };
    profile
        .sample
        .iter()
        .filter(|smp| {
            smp.location_id
                .first()
                .and_then(|id| leaf_name(*id))
                .is_some_and(|n| n.contains(function))
        })
        .map(|smp| smp.value[0])
        .sum()
}

/// The first value type's name (`inuse_space`, `cpu`, …).
pub fn first_value_type(gzipped: &[u8]) -> String {
    use pprof::protos::Message;
    let profile =
        pprof::protos::Profile::decode(gunzip(gzipped).as_slice()).expect("pprof protobuf");
    let t = profile.sample_type.first().expect("a sample type");
    profile.string_table[t.ty as usize].clone()
}
