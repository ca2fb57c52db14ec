//! The target's sockets by TCP state and endpoint, from either table: the
//! kernel's sock_diag dump ([`super::sockdiag`]) or, where netlink is
//! refused, `/proc/PID/net/{tcp,tcp6,unix}` (and for the benchmark that
//! compares the two).
//!
//! Both ways give the same rows and the same join, so a sample reads the
//! same whichever way it was taken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use procfs::net::TcpState;
use procfs::process::Process;

use super::fdpattern::top;
use super::sockdiag::{SockDiag, TcpEntry};

/// The kernel's `TCP_LISTEN`.
const LISTEN: u8 = 10;

/// A sample's socket figures: counts by state (`UNIX` and `OTHER` for what
/// is not TCP) and the most common endpoints.
pub type SocketFigures = (BTreeMap<String, u64>, Vec<(String, u64)>);

/// What a join needs from a table: the TCP entries that are the target's
/// or listening (listeners name accepted connections), and, when asked,
/// which inodes are unix sockets.
#[derive(Default)]
struct Table {
    tcp: Vec<TcpEntry>,
    unix: HashSet<u64>,
}

/// Through netlink: only the states a process can own leave the kernel, and
/// the unix dump is skipped when every socket of the target is TCP.
pub fn via_netlink(
    diag: &mut SockDiag,
    inodes: &[u64],
    keep: usize,
) -> std::io::Result<SocketFigures> {
    let ours: HashSet<u64> = inodes.iter().copied().collect();
    let mut table = Table::default();
    diag.tcp(|e| {
        if e.state == LISTEN || ours.contains(&e.inode) {
            table.tcp.push(e);
        }
    })?;
    let tcp: HashSet<u64> = table.tcp.iter().map(|e| e.inode).collect();
    if ours.iter().any(|i| !tcp.contains(i)) {
        diag.unix_inodes(|i| {
            if ours.contains(&i) {
                table.unix.insert(i);
            }
        })?;
    }
    Ok(join(&table, inodes, keep))
}

/// Through `/proc/PID/net`: every entry of the namespace read and parsed as
/// text, TIME_WAIT included. Unreadable tables count as empty.
pub fn via_proc_net(process: &Process, inodes: &[u64], keep: usize) -> SocketFigures {
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
    join(&Table { tcp, unix }, inodes, keep)
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
