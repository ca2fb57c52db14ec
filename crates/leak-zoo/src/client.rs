//! `leak-zoo client`: a plain blocking HTTP/1.1 load client.
//!
//! It shares nothing with leakscope's own load driver on purpose: a bug in
//! one should not hide in both. Threads, blocking sockets and a hand-written
//! response reader are enough for loopback load. It only talks to loopback
//! addresses, so a typo cannot turn it on someone else's server.

use std::io::{self, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::wire::{exchange, Connection, Outcome};

/// Options of `leak-zoo client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The URL to GET, e.g. http://127.0.0.1:8080/ (loopback only).
    #[arg(long)]
    url: String,
    /// Connections, each driven by its own thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Stop after this long (e.g. 3s, 500ms).
    #[arg(long)]
    duration: humantime::Duration,
    /// Stop after this many requests in total, if that comes first.
    #[arg(long)]
    requests: Option<u64>,
    /// Send `Connection: close` and use a new connection per request.
    #[arg(long)]
    close: bool,
    /// Start at most this many requests per second, all connections
    /// together, so a sustained load can span many samples without
    /// exhausting the target.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a finite rate above 0")),
    }
}

/// Why the client refuses to start (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

/// Runs the load; returns whether most requests succeeded.
pub fn run(args: ClientArgs) -> Result<bool, UsageError> {
    let target = Target::parse(&args.url)?;
    let started = Instant::now();
    let shared = Shared {
        target,
        started,
        deadline: started + Duration::from(args.duration),
        max_requests: args.requests,
        rate: args.rate,
        claimed: AtomicU64::new(0),
        close: args.close,
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| s.spawn(|| worker(&shared)))
            .collect();
        for w in workers {
            // A worker has no code path that panics; if one did, its
            // requests are simply not counted.
            if let Ok((o, f)) = w.join() {
                ok += o;
                failed += f;
            }
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let rps = if seconds > 0.0 {
        ok as f64 / seconds
    } else {
        0.0
    };
    let summary =
        format!(r#"{{"ok":{ok},"failed":{failed},"seconds":{seconds:.3},"rps":{rps:.1}}}"#);
    // A closed stdout is no reason to panic; the exit status still tells.
    let _ = writeln!(io::stdout(), "{summary}");
    Ok(ok > failed || (ok == 0 && failed == 0))
}

/// Where to send requests.
#[derive(Debug)]
struct Target {
    addrs: Vec<SocketAddr>,
    host_header: String,
    path: String,
}

impl Target {
    /// Parses `http://HOST[:PORT][/PATH]`, where HOST must be `localhost`,
    /// an address in 127.0.0.0/8 or `[::1]`.
    fn parse(url: &str) -> Result<Self, UsageError> {
        let bad = |why: &str| UsageError(format!("{url:?}: {why}"));
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = path.split('#').next().unwrap_or("");
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if authority.contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            (host, after)
        } else {
            match authority.rfind(':') {
                Some(i) => (&authority[..i], &authority[i..]),
                None => (authority, ""),
            }
        };
        let port: u16 = match port {
            "" => 80,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| bad("the port is not a number from 0 to 65535"))?,
        };
        let addrs: Vec<SocketAddr> = if host.eq_ignore_ascii_case("localhost") {
            ("localhost", port)
                .to_socket_addrs()
                .map_err(|e| bad(&format!("resolving localhost: {e}")))?
                .filter(|a| a.ip().is_loopback())
                .collect()
        } else {
            let ip: IpAddr = host.parse().map_err(|_| {
                bad("refusing a non-loopback host: use localhost, 127.0.0.0/8 or [::1]")
            })?;
            if !ip.to_canonical().is_loopback() {
                return Err(bad(&format!(
                    "refusing non-loopback address {ip}: use localhost, 127.0.0.0/8 or [::1]"
                )));
            }
            vec![SocketAddr::new(ip, port)]
        };
        if addrs.is_empty() {
            return Err(bad("localhost resolves to no loopback address"));
        }
        Ok(Self {
            addrs,
            host_header: authority.to_string(),
            path,
        })
    }
}

struct Shared {
    target: Target,
    started: Instant,
    deadline: Instant,
    rate: Option<f64>,
    max_requests: Option<u64>,
    /// Requests started so far, across threads, for --requests.
    claimed: AtomicU64,
    close: bool,
}

impl Shared {
    /// Claims the next request, or says the run is over. With --rate,
    /// request n starts no earlier than n / rate seconds into the run.
    fn claim(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        let n = self.claimed.fetch_add(1, Ordering::Relaxed);
        if self.max_requests.is_some_and(|max| n >= max) {
            return false;
        }
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(n as f64 / rate);
            if due >= self.deadline {
                return false;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        true
    }

    fn connect(&self) -> io::Result<Connection> {
        // Timeouts reach just past the deadline, so a stuck server delays
        // the end by at most a second.
        let limit =
            self.deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in &self.target.addrs {
            match TcpStream::connect_timeout(addr, limit.min(Duration::from_secs(5))) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(limit))?;
                    stream.set_write_timeout(Some(limit))?;
                    return Ok(Connection {
                        reader: BufReader::new(stream),
                        used: false,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// One connection's loop; returns (ok, failed).
fn worker(shared: &Shared) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut conn: Option<Connection> = None;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: leak-zoo-client\r\n{}\r\n",
        shared.target.path,
        shared.target.host_header,
        if shared.close {
            "Connection: close\r\n"
        } else {
            ""
        },
    );
    while shared.claim() {
        // One retry, only when a reused connection turns out to be closed.
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let c = match conn.take() {
                Some(c) => c,
                None => match shared.connect() {
                    Ok(c) => c,
                    Err(e) => break Err(e),
                },
            };
            let mut c = c;
            match exchange(&mut c, request.as_bytes()) {
                Ok(Outcome::Closed) | Err(_) if c.used && attempts == 1 => continue,
                Ok(Outcome::Closed) => {
                    break Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before responding",
                    ))
                }
                Ok(Outcome::Response { status, keep }) => {
                    if keep && !shared.close {
                        c.used = true;
                        conn = Some(c);
                    }
                    break Ok(status);
                }
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(status) if (200..300).contains(&status) => ok += 1,
            Ok(_) => failed += 1,
            Err(_) => {
                failed += 1;
                // Don't spin against a server that is gone or full.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    (ok, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_parse() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.path, "/");
        assert_eq!(t.addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(t.host_header, "127.0.0.1:8080");
        let t = Target::parse("HTTP://127.1.2.3/x?y=1").unwrap();
        assert_eq!(t.path, "/x?y=1");
        assert_eq!(t.addrs[0].port(), 80);
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!(t.addrs, vec!["[::1]:9".parse().unwrap()]);
        assert!(Target::parse("http://localhost:1/").is_ok());
    }

    #[test]
    fn other_urls_are_refused() {
        for url in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://[2001:db8::1]:80/",
            "http://0.0.0.0:80/",
            "https://127.0.0.1/",
            "http://user@127.0.0.1/",
            "http://127.0.0.1:99999/",
            "http://[::1/",
            "127.0.0.1:80",
            "",
            "http://",
        ] {
            assert!(Target::parse(url).is_err(), "{url} accepted");
        }
    }
}
