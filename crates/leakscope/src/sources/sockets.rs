//! The target's sockets by TCP state and endpoint, from either table: the
//! kernel's sock_diag dump ([`super::sockdiag`]) or, where netlink is
//! refused, `/proc/PID/net/{tcp,tcp6,unix}` (and for the benchmark that
//! compares the two).
//!
//! Both ways give the same rows and the same join, so a sample reads the
//! same whichever way it was taken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use procfs::net::TcpState;
use procfs::process::Process;

use super::fdpattern::top;
use netlink_packet_sock_diag::inet::StateFlags;

use super::sockdiag::{Families, Key, SockDiag, TcpEntry};

/// The kernel's `TCP_LISTEN`.
const LISTEN: u8 = 10;

/// A sample's socket figures: counts by state (`UNIX` and `OTHER` for what
/// is not TCP) and the most common endpoints.
pub type SocketFigures = (BTreeMap<String, u64>, Vec<(String, u64)>);

/// What a join needs from a table: the TCP entries that are the target's
/// or listening (listeners name accepted connections), and which inodes
/// are unix sockets.
#[derive(Default)]
struct Table {
    tcp: Vec<TcpEntry>,
    unix: HashSet<u64>,
}

/// One of the target's sockets: its fd number and inode.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub fd: u32,
    pub inode: u64,
}

/// The netlink way, and what it remembers between samples so that a
/// sample costs lookups of the target's own sockets, not a walk of every
/// socket the host holds: each TCP socket's key once a dump has found it,
/// the sockets that are not TCP (their protocol never changes), and the TCP
/// sockets no table held at the last dump.
pub struct NetlinkTable {
    diag: SockDiag,
    keys: HashMap<u64, Key>,
    not_tcp: HashMap<u64, &'static str>,
    /// TCP sockets in no table (created and never connected, or reset and
    /// left open: a leak of them is one of the zoo's modes). They count as
    /// OTHER, as `/proc/PID/net` has them, and are looked for again by every
    /// dump, and by one at least every [`RECHECK_UNHASHED`] samples.
    unhashed: HashSet<u64>,
    since_dump: u32,
    /// The target's pidfd, to copy its new sockets' fds; `Some(None)` once
    /// opening it or a copy was refused (no ptrace access): new sockets are
    /// then found by a dump.
    pidfd: Option<Option<OwnedFd>>,
    /// Walks of the connection tables so far: what the exact lookups save.
    dumps: u64,
}

/// How many samples a socket can read OTHER after it left the unhashed
/// state (bound or connected late), at most.
const RECHECK_UNHASHED: u32 = 8;

impl NetlinkTable {
    pub fn new(diag: SockDiag) -> Self {
        NetlinkTable {
            diag,
            keys: HashMap::new(),
            not_tcp: HashMap::new(),
            unhashed: HashSet::new(),
            since_dump: 0,
            pidfd: None,
            dumps: 0,
        }
    }

    /// Walks of the kernel's connection tables so far (LISTEN-only dumps,
    /// which skip them, not counted).
    pub fn dumps(&self) -> u64 {
        self.dumps
    }

    /// Forgets the sockets the target no longer holds.
    fn retain(&mut self, ours: &HashSet<u64>) {
        self.keys.retain(|i, _| ours.contains(i));
        self.not_tcp.retain(|i, _| ours.contains(i));
        self.unhashed.retain(|i| ours.contains(i));
    }
}

/// Through netlink, in the target's namespace:
/// - the listeners, by a LISTEN-only dump (the kernel then skips its
///   connection table, TIME_WAIT and all);
/// - the target's TCP sockets already known, by exact lookups;
/// - sockets not seen before, by their protocol (`system.sockprotoname`
///   on the fd: one syscall); those that are connected TCP by an exact
///   lookup of their two ends, read from a copy of the fd
///   ([`ends_of`]), and the rest (not yet connected, or no access) by one
///   dump of the states a process can own (not TIME_WAIT);
/// - any whose protocol could not be read and no dump found, by a unix
///   dump.
pub fn via_netlink(
    t: &mut NetlinkTable,
    pid: i32,
    held: &[Held],
    keep: usize,
) -> std::io::Result<SocketFigures> {
    let inodes: Vec<u64> = held.iter().map(|h| h.inode).collect();
    let ours: HashSet<u64> = inodes.iter().copied().collect();
    t.retain(&ours);
    if t.pidfd.is_none() {
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        t.pidfd = Some(pidfd);
    }
    let mut table = Table::default();
    t.diag
        .tcp_dump(Families::BOTH, StateFlags::LISTEN, |e, _| table.tcp.push(e))?;
    let listeners: HashSet<u64> = table.tcp.iter().map(|e| e.inode).collect();
    let (known, mut unknown, mut families) = sort_out(t, pid, held, &listeners);
    let found = lookup(t, &known, &mut table)?;
    // Closed since, or its 4-tuple now another socket's: found afresh.
    for (inode, key) in &known {
        if !found.contains(inode) {
            t.keys.remove(inode);
            unknown.insert(*inode);
            families.v4 |= !key.v6();
            families.v6 |= key.v6();
        }
    }
    t.since_dump += 1;
    if !t.unhashed.is_empty() && t.since_dump >= RECHECK_UNHASHED {
        families = Families::BOTH;
    }
    if families.any() {
        unknown.extend(t.unhashed.drain());
        dump_owned(t, families, &mut unknown, &mut table)?;
    }
    if !unknown.is_empty() {
        t.diag.unix_inodes(|i| {
            if unknown.remove(&i) {
                t.not_tcp.insert(i, "UNIX");
            }
        })?;
    }
    t.unhashed.extend(unknown);
    table.unix = t
        .not_tcp
        .iter()
        .filter(|(_, k)| **k == "UNIX")
        .map(|(i, _)| *i)
        .collect();
    Ok(join(&table, &inodes, keep))
}

/// The target's sockets that are neither listeners nor known not to be TCP
/// nor known unhashed: those with a key to look up, and those to find with
/// the families to dump for them (a service's new connections are usually
/// all of one, so one walk of the kernel's table, not two).
fn sort_out(
    t: &mut NetlinkTable,
    pid: i32,
    held: &[Held],
    listeners: &HashSet<u64>,
) -> (Vec<(u64, Key)>, HashSet<u64>, Families) {
    let mut known = Vec::new();
    let mut unknown = HashSet::new();
    let mut families = Families::default();
    for h in held {
        let i = h.inode;
        if listeners.contains(&i) || t.not_tcp.contains_key(&i) || t.unhashed.contains(&i) {
            continue;
        }
        if let Some(key) = t.keys.get(&i) {
            known.push((i, key.clone()));
            continue;
        }
        match protocol(pid, h.fd).as_deref() {
            Some(p @ ("TCP" | "TCPv6")) => {
                let v6 = p == "TCPv6";
                let ends = match t.pidfd.as_ref().and_then(Option::as_ref) {
                    Some(f) => ends_of(f, h.fd),
                    None => Err(Refused),
                };
                if ends.is_err() {
                    // No ptrace access: asked once, not for every socket.
                    t.pidfd = Some(None);
                }
                match ends.ok().flatten() {
                    Some((local, remote)) => known.push((i, Key::of(local, remote, v6))),
                    None => {
                        unknown.insert(i);
                        families.v4 |= !v6;
                        families.v6 |= v6;
                    }
                }
            }
            None => {
                unknown.insert(i);
                families = Families::BOTH;
            }
            Some(p) if p.starts_with("UNIX") => {
                t.not_tcp.insert(i, "UNIX");
            }
            Some(_) => {
                t.not_tcp.insert(i, "OTHER");
            }
        }
    }
    (known, unknown, families)
}

/// The known sockets as they are now, into `table`; the inodes found.
fn lookup(
    t: &mut NetlinkTable,
    known: &[(u64, Key)],
    table: &mut Table,
) -> std::io::Result<HashSet<u64>> {
    let before = table.tcp.len();
    let keys: Vec<Key> = known.iter().map(|(_, k)| k.clone()).collect();
    // The answer's key carries the socket's cookie: kept, so a later
    // lookup cannot find another socket that took over the 4-tuple.
    t.diag.tcp_lookup(&keys, |e, key| {
        t.keys.insert(e.inode, key);
        table.tcp.push(e);
    })?;
    Ok(table.tcp[before..].iter().map(|e| e.inode).collect())
}

/// One dump of the states a process can own; what it finds of `unknown`
/// goes into `table` with its key kept, and out of `unknown`.
fn dump_owned(
    t: &mut NetlinkTable,
    families: Families,
    unknown: &mut HashSet<u64>,
    table: &mut Table,
) -> std::io::Result<()> {
    if families.v4 && families.v6 {
        t.since_dump = 0;
    }
    t.dumps += 1;
    let owned = StateFlags::all() - StateFlags::TIME_WAIT - StateFlags::LISTEN;
    t.diag.tcp_dump(families, owned, |e, key| {
        if unknown.remove(&e.inode) {
            t.keys.insert(e.inode, key);
            table.tcp.push(e);
        }
    })
}

/// The target refused a copy of its fds (no ptrace access).
struct Refused;

/// A connected socket's two ends, read from a copy of the target's fd
/// (`pidfd_getfd`, which needs the access ptrace would): three syscalls
/// and a close, against a dump's walk of every socket the host holds. The
/// copy is held for those microseconds, so a close by the target sends its
/// FIN when the copy closes. `Ok(None)` for a socket not connected or
/// already gone.
fn ends_of(pidfd: &OwnedFd, fd: u32) -> Result<Option<(SocketAddr, SocketAddr)>, Refused> {
    use rustix::io::Errno;
    let flags = rustix::process::PidfdGetfdFlags::empty();
    let copy = match rustix::process::pidfd_getfd(pidfd, fd as i32, flags) {
        Ok(c) => c,
        Err(Errno::PERM | Errno::ACCESS | Errno::NOSYS) => return Err(Refused),
        Err(_) => return Ok(None),
    };
    let ends = || {
        let local = SocketAddr::try_from(rustix::net::getsockname(&copy).ok()?).ok()?;
        let remote = SocketAddr::try_from(rustix::net::getpeername(&copy).ok()??).ok()?;
        Some((local, remote))
    };
    Ok(ends())
}

/// A socket's protocol as the kernel names it ("TCP", "TCPv6", "UNIX",
/// "UNIX-STREAM", "UDP", "NETLINK", …): the sockfs attribute on the fd.
fn protocol(pid: i32, fd: u32) -> Option<String> {
    let mut buf = [0u8; 32];
    let n = rustix::fs::getxattr(
        format!("/proc/{pid}/fd/{fd}"),
        "system.sockprotoname",
        &mut buf,
    )
    .ok()?;
    let name = buf.get(..n)?;
    let name = name.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Through `/proc/PID/net`: every entry of the namespace read and parsed as
/// text, TIME_WAIT included. Unreadable tables count as empty.
pub fn via_proc_net(process: &Process, held: &[Held], keep: usize) -> SocketFigures {
    let inodes: Vec<u64> = held.iter().map(|h| h.inode).collect();
    let tcp = [process.tcp(), process.tcp6()]
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| TcpEntry {
            state: state_number(&e.state),
            local: e.local_address,
            remote: e.remote_address,
            inode: e.inode,
        })
        .collect();
    let unix = process
        .unix()
        .into_iter()
        .flatten()
        .map(|e| e.inode)
        .collect();
    join(&Table { tcp, unix }, &inodes, keep)
}

/// Each of `inodes` by state, and the `keep` most common endpoints.
fn join(table: &Table, inodes: &[u64], keep: usize) -> SocketFigures {
    // Which side of a connection is the stable one: an accepted
    // connection is named by our listening address and the peer's IP,
    // an outgoing one by our IP and the peer's address.
    let listening: HashSet<u16> = table
        .tcp
        .iter()
        .filter(|e| e.state == LISTEN)
        .map(|e| e.local.port())
        .collect();
    let by_inode: HashMap<u64, &TcpEntry> = table.tcp.iter().map(|e| (e.inode, e)).collect();
    let mut states = BTreeMap::new();
    let mut endpoints: HashMap<String, u64> = HashMap::new();
    for inode in inodes {
        let key = match by_inode.get(inode) {
            Some(e) => {
                *endpoints.entry(endpoint(e, &listening)).or_default() += 1;
                state_name(e.state)
            }
            None if table.unix.contains(inode) => "UNIX",
            None => "OTHER",
        };
        *states.entry(key.to_string()).or_default() += 1;
    }
    (states, top(endpoints, keep))
}

/// "LISTEN addr", "STATE local <- peer-ip" for an accepted connection,
/// "STATE local-ip -> peer" for an outgoing one: ephemeral ports are left
/// out, so one leak is one row.
fn endpoint(e: &TcpEntry, listening: &HashSet<u16>) -> String {
    let state = state_name(e.state);
    let (local, remote): (SocketAddr, SocketAddr) = (e.local, e.remote);
    if e.state == LISTEN {
        format!("{state} {local}")
    } else if listening.contains(&local.port()) {
        format!("{state} {local} <- {}", remote.ip())
    } else {
        format!("{state} {} -> {remote}", local.ip())
    }
}

/// The kernel's names (`ss`, `netstat`), which users search for, by its
/// `TCP_*` numbers.
fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

fn state_number(state: &TcpState) -> u8 {
    match state {
        TcpState::Established => 1,
        TcpState::SynSent => 2,
        TcpState::SynRecv => 3,
        TcpState::FinWait1 => 4,
        TcpState::FinWait2 => 5,
        TcpState::TimeWait => 6,
        TcpState::Close => 7,
        TcpState::CloseWait => 8,
        TcpState::LastAck => 9,
        TcpState::Listen => 10,
        TcpState::Closing => 11,
        TcpState::NewSynRecv => 12,
    }
}
