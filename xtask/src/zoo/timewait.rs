//! A busy host's TCP table on loopback: TIME_WAIT entries that no process
//! owns, as load leaves them on any server, for the `busy-burst` way.
//!
//! Each connection is closed by its client side first, so the client's
//! end, already closed, holds TIME_WAIT (60 s on Linux); the server side
//! closes after the FIN and leaves nothing. Destinations are 127.0.0.2 and
//! up, a listener each, at most [`PER_ADDRESS`] connections to each: under
//! the 28,232 ports of the default ephemeral range, so each one is a new
//! 4-tuple and not a reuse of an older entry (`tcp_tw_reuse` is on for
//! loopback by default).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const PER_ADDRESS: u32 = 10_000;

/// Entries live 60 s: ones made this recently outlive any case (a case
/// takes under 15 s), so the namespace holds them throughout.
const FRESH: Duration = Duration::from_secs(30);

/// When [`ensure`] last filled.
static LAST_FILL: Mutex<Option<Instant>> = Mutex::new(None);

/// At least `n` TIME_WAIT entries now and for the next 30 s: filled afresh
/// when the namespace holds fewer or the last fill is older than that.
/// Bounded: one fill of `n` connections every 30 s at most, so the
/// namespace stays far under `net.ipv4.tcp_max_tw_buckets`.
pub fn ensure(n: u32) -> Result<u64> {
    let mut last = LAST_FILL.lock().unwrap_or_else(|p| p.into_inner());
    let stale = last.is_none_or(|at| at.elapsed() > FRESH);
    let now = count()?;
    if !stale && now >= u64::from(n) {
        return Ok(now);
    }
    let filled = fill(n)?;
    *last = Some(Instant::now());
    Ok(filled)
}

/// Adds `n` TIME_WAIT entries (bounded: `n` connections on loopback, well
/// under a second per 10,000) and checks the namespace holds at least
/// `n` after.
fn fill(n: u32) -> Result<u64> {
    let mut made = 0;
    for a in 0..n.div_ceil(PER_ADDRESS) {
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (a % 250) as u8);
        let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("a listener on {ip}"))?;
        let to = listener.local_addr()?;
        for _ in 0..PER_ADDRESS.min(n - a * PER_ADDRESS) {
            let client = TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
            let (server, _) = listener.accept()?;
            drop(client);
            drop(server);
            made += 1;
        }
    }
    let now = count()?;
    if now < u64::from(n) {
        bail!(
            "{made} connections closed but only {now} TIME_WAIT entries \
             (net.ipv4.tcp_max_tw_buckets too low?)"
        );
    }
    Ok(now)
}

/// TIME_WAIT entries in our network namespace: the `tw` field of
/// /proc/net/sockstat.
pub fn count() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").context("reading /proc/net/sockstat")?;
    let tcp = s.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let mut words = tcp.split_whitespace();
    while let Some(w) = words.next() {
        if w == "tw" {
            return words
                .next()
                .and_then(|v| v.parse().ok())
                .context("a tw count in /proc/net/sockstat");
        }
    }
    bail!("no tw count in /proc/net/sockstat")
}
