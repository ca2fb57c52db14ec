//! The process's fds, what each one is, and which guarded tests ran at the
//! same time.
//!
//! fds are process-wide: a difference of `/proc/self/fd` taken around one
//! test also sees whatever a sibling opened meanwhile. So the rule is:
//! - fds registered with the test's own runtime (sockets, pipes a tokio
//!   type owns) are counted by that runtime's I/O driver: exact, and they
//!   fail the test;
//! - the process-wide difference fails the test only when no other guarded
//!   test overlapped it (or the test is `exclusive`); otherwise it is a
//!   warning that names the tests that overlapped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

/// fd number → what it points at, with sockets described by endpoints.
pub(crate) type FdSet = BTreeMap<i32, String>;

/// One fd that appeared, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenFd {
    pub(crate) fd: i32,
    pub(crate) kind: &'static str,
    pub(crate) target: String,
    /// What `/proc/self/fd` links to: what ignore patterns match.
    pub(crate) link: String,
}

/// The process's fds now. An fd closed between listing and reading its
/// link is skipped.
pub(crate) fn snapshot() -> FdSet {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return FdSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// fds in `now` that were not in `base` (a number reused for another
/// target counts as new), described, minus `ignored` targets.
pub(crate) fn appeared(base: &FdSet, now: &FdSet, ignored: impl Fn(&str) -> bool) -> Vec<OpenFd> {
    let sockets = socket_endpoints();
    now.iter()
        .filter(|(fd, t)| base.get(fd) != Some(t))
        .filter(|(_, t)| !ignored(t) && !is_listing(t))
        .map(|(fd, t)| describe(*fd, t, &sockets))
        .collect()
}

/// A listing of `/proc/self/fd` open at the moment of another listing (a
/// sibling test's snapshot): never anything a test left behind.
fn is_listing(target: &str) -> bool {
    let own = format!("/proc/{}/fd", std::process::id());
    target == own || target.starts_with("/proc/self/fd")
}

fn describe(fd: i32, target: &str, sockets: &HashMap<u64, (&'static str, String)>) -> OpenFd {
    let inode = target
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<u64>().ok());
    if let Some((kind, ends)) = inode.and_then(|i| sockets.get(&i)) {
        return OpenFd {
            fd,
            kind,
            target: ends.clone(),
            link: target.to_string(),
        };
    }
    let kind = if target.starts_with("socket:") {
        "socket"
    } else if target.starts_with("pipe:") {
        "pipe"
    } else if target.starts_with("anon_inode:") {
        "anon_inode"
    } else if target.starts_with('/') {
        "file"
    } else {
        "other"
    };
    OpenFd {
        fd,
        kind,
        target: target.to_string(),
        link: target.to_string(),
    }
}

/// Socket inode → (kind, endpoints) from this process's network namespace.
fn socket_endpoints() -> HashMap<u64, (&'static str, String)> {
    let mut out = HashMap::new();
    let tcp = [procfs::net::tcp(), procfs::net::tcp6()];
    for entry in tcp.into_iter().flatten().flatten() {
        let ends = format!(
            "{} -> {} ({:?})",
            entry.local_address, entry.remote_address, entry.state
        );
        out.insert(entry.inode, ("tcp", ends));
    }
    let udp = [procfs::net::udp(), procfs::net::udp6()];
    for entry in udp.into_iter().flatten().flatten() {
        out.insert(entry.inode, ("udp", format!("{}", entry.local_address)));
    }
    for entry in procfs::net::unix().into_iter().flatten() {
        let path = entry
            .path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "unnamed".into());
        out.insert(entry.inode, ("unix", path));
    }
    out
}

/// A guarded test's time span, for the overlap rule.
struct Span {
    id: u64,
    name: String,
    start: Instant,
    end: Option<Instant>,
}

static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());
static NEXT: Mutex<u64> = Mutex::new(0);
/// Guarded tests hold it shared; an `exclusive` one holds it alone.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// A running guarded test, registered for the overlap rule.
pub(crate) struct Running {
    id: u64,
    start: Instant,
    _lock: Either,
}

#[allow(dead_code)] // held for its Drop only
enum Either {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

impl Running {
    pub(crate) fn begin(name: &str, exclusive: bool) -> Self {
        let lock = if exclusive {
            Either::Alone(EXCLUSIVE.write().unwrap_or_else(|p| p.into_inner()))
        } else {
            Either::Shared(EXCLUSIVE.read().unwrap_or_else(|p| p.into_inner()))
        };
        let id = {
            let mut n = NEXT.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let start = Instant::now();
        SPANS.lock().unwrap_or_else(|p| p.into_inner()).push(Span {
            id,
            name: name.to_string(),
            start,
            end: None,
        });
        Running {
            id,
            start,
            _lock: lock,
        }
    }

    /// Other guarded tests that ran at any moment since this one began.
    pub(crate) fn overlapped(&self) -> Vec<String> {
        let spans = SPANS.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = spans
            .iter()
            .filter(|s| s.id != self.id && s.end.is_none_or(|e| e > self.start))
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut spans = SPANS.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(s) = spans.iter_mut().find(|s| s.id == self.id) {
            s.end = Some(now);
        }
        // Spans that ended before every running test began can no longer
        // overlap anything.
        let oldest = spans
            .iter()
            .filter(|s| s.end.is_none())
            .map(|s| s.start)
            .min();
        spans.retain(|s| match (s.end, oldest) {
            (Some(e), Some(o)) => e > o,
            (Some(_), None) => false,
            (None, _) => true,
        });
    }
}
