//! The procfs source: any Linux process, no instrumentation.
//!
//! Memory, threads and CPU time from `/proc/PID/{status,stat}`; every open
//! descriptor from `/proc/PID/fd`, classified by what it points at; sockets
//! joined by inode to `/proc/PID/net/tcp{,6}` (the target's own network
//! namespace) for their TCP state. Files are counted by path, so a leak of
//! one served file shows up as that path's count climbing.

use std::collections::{BTreeMap, HashMap};

use leakscope_rundir::ProcSample;
use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};

/// How many of the most-open file paths (and socket endpoints) a sample
/// keeps.
pub const TOP_FILES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ProcSourceError {
    /// The process is gone: recording should end, not retry.
    #[error("process {pid} is gone")]
    Gone { pid: i32 },
    #[error("reading /proc/{pid}: permission denied (run as the target's user or root)")]
    PermissionDenied { pid: i32 },
    #[error("reading /proc/{pid}: {message}")]
    Other { pid: i32, message: String },
}

/// Cheap to clone (the process handle is shared), so a tick can read it on
/// a blocking thread beside the other sources' reads.
#[derive(Clone)]
pub struct ProcSource {
    pid: i32,
    process: std::sync::Arc<Process>,
    ticks_per_second: f64,
}

impl ProcSource {
    pub fn new(pid: i32) -> Result<Self, ProcSourceError> {
        let process = Process::new(pid).map_err(|e| classify(pid, e))?;
        Ok(Self {
            pid,
            process: std::sync::Arc::new(process),
            ticks_per_second: procfs::ticks_per_second() as f64,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn sample(&self) -> Result<ProcSample, ProcSourceError> {
        let pid = self.pid;
        let status = self.process.status().map_err(|e| classify(pid, e))?;
        let stat = self.process.stat().map_err(|e| classify(pid, e))?;
        // A zombie has released its fds and memory: its figures would read
        // as a sudden "fix". It is gone for recording purposes.
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            return Err(ProcSourceError::Gone { pid });
        }
        let mut sample = ProcSample {
            rss_bytes: status.vmrss.unwrap_or(0) * 1024,
            peak_rss_bytes: status.vmhwm.unwrap_or(0) * 1024,
            threads: status.threads,
            cpu_user_seconds: stat.utime as f64 / self.ticks_per_second,
            cpu_system_seconds: stat.stime as f64 / self.ticks_per_second,
            // Unreadable without ptrace access (as fds are); the work axis
            // then falls back to CPU time.
            io_syscalls: self.process.io().ok().map(|io| io.syscr + io.syscw),
            ..ProcSample::default()
        };
        let mut files: HashMap<String, u64> = HashMap::new();
        let mut socket_inodes: Vec<u64> = Vec::new();
        for target in self.fd_targets()? {
            sample.fds += 1;
            let kind = match target {
                FDTarget::Path(path) => {
                    *files
                        .entry(path.to_string_lossy().into_owned())
                        .or_default() += 1;
                    "file"
                }
                FDTarget::Socket(inode) => {
                    socket_inodes.push(inode);
                    "socket"
                }
                FDTarget::Pipe(_) => "pipe",
                FDTarget::AnonInode(_) => "anon_inode",
                FDTarget::MemFD(_) => "memfd",
                FDTarget::Net(_) | FDTarget::Other(..) | FDTarget::Unknown(..) => "other",
            };
            *sample.fds_by_kind.entry(kind.to_string()).or_default() += 1;
        }
        let mut top: Vec<(String, u64)> = files.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP_FILES);
        sample.top_files = top;
        let (states, endpoints) = self.sockets(&socket_inodes);
        sample.tcp_states = states;
        sample.top_sockets = endpoints;
        Ok(sample)
    }

    /// What each open descriptor points at. One `readlinkat` per fd: the
    /// procfs crate's `fd()` also opens and stats each one (4 syscalls),
    /// which made a sample of a process with 13,000 leaked fds take 77 ms.
    fn fd_targets(&self) -> Result<Vec<FDTarget>, ProcSourceError> {
        let pid = self.pid;
        let dir_path = format!("/proc/{pid}/fd");
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => ProcSourceError::Gone { pid },
            std::io::ErrorKind::PermissionDenied => ProcSourceError::PermissionDenied { pid },
            _ => ProcSourceError::Other {
                pid,
                message: format!("{dir_path}: {e}"),
            },
        };
        let dir = std::fs::File::open(&dir_path).map_err(io)?;
        let mut targets = Vec::new();
        let mut link = Vec::with_capacity(256);
        for entry in std::fs::read_dir(&dir_path).map_err(io)? {
            let Ok(entry) = entry else { continue };
            // A descriptor closed between listing and reading is not an error.
            link = match rustix::fs::readlinkat(&dir, entry.file_name(), std::mem::take(&mut link))
            {
                Ok(l) => l.into_bytes(),
                Err(_) => continue,
            };
            let text = String::from_utf8_lossy(&link);
            if let Ok(t) = text.parse::<FDTarget>() {
                targets.push(t);
            }
        }
        Ok(targets)
    }

    /// TCP state and endpoints of each of the target's sockets, by inode.
    /// Sockets that are not TCP (unix, UDP, netlink) are counted under their
    /// family instead.
    fn sockets(&self, inodes: &[u64]) -> (BTreeMap<String, u64>, Vec<(String, u64)>) {
        let entries: Vec<procfs::net::TcpNetEntry> = [self.process.tcp(), self.process.tcp6()]
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        // Which side of a connection is the stable one: an accepted
        // connection is named by our listening address and the peer's IP,
        // an outgoing one by our IP and the peer's address.
        let listening: std::collections::HashSet<u16> = entries
            .iter()
            .filter(|e| e.state == TcpState::Listen)
            .map(|e| e.local_address.port())
            .collect();
        let mut by_inode: HashMap<u64, (&'static str, String)> = HashMap::new();
        for e in &entries {
            let state = tcp_state_name(&e.state);
            let endpoint = if e.state == TcpState::Listen {
                format!("{state} {}", e.local_address)
            } else if listening.contains(&e.local_address.port()) {
                format!("{state} {} <- {}", e.local_address, e.remote_address.ip())
            } else {
                format!("{state} {} -> {}", e.local_address.ip(), e.remote_address)
            };
            by_inode.insert(e.inode, (state, endpoint));
        }
        let unix: std::collections::HashSet<u64> = self
            .process
            .unix()
            .into_iter()
            .flatten()
            .map(|e| e.inode)
            .collect();
        let mut states = BTreeMap::new();
        let mut endpoints: HashMap<&str, u64> = HashMap::new();
        for inode in inodes {
            let key = match by_inode.get(inode) {
                Some((state, endpoint)) => {
                    *endpoints.entry(endpoint).or_default() += 1;
                    state.to_string()
                }
                None if unix.contains(inode) => "UNIX".to_string(),
                None => "OTHER".to_string(),
            };
            *states.entry(key).or_default() += 1;
        }
        let mut top: Vec<(String, u64)> = endpoints
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP_FILES);
        (states, top)
    }
}

/// The kernel's names (`ss`, `netstat`), which users search for.
fn tcp_state_name(state: &TcpState) -> &'static str {
    match state {
        TcpState::Established => "ESTABLISHED",
        TcpState::SynSent => "SYN_SENT",
        TcpState::SynRecv => "SYN_RECV",
        TcpState::FinWait1 => "FIN_WAIT1",
        TcpState::FinWait2 => "FIN_WAIT2",
        TcpState::TimeWait => "TIME_WAIT",
        TcpState::Close => "CLOSE",
        TcpState::CloseWait => "CLOSE_WAIT",
        TcpState::LastAck => "LAST_ACK",
        TcpState::Listen => "LISTEN",
        TcpState::Closing => "CLOSING",
        TcpState::NewSynRecv => "NEW_SYN_RECV",
    }
}

fn classify(pid: i32, e: procfs::ProcError) -> ProcSourceError {
    match e {
        procfs::ProcError::NotFound(_) => ProcSourceError::Gone { pid },
        procfs::ProcError::PermissionDenied(_) => ProcSourceError::PermissionDenied { pid },
        other => ProcSourceError::Other {
            pid,
            message: other.to_string(),
        },
    }
}
