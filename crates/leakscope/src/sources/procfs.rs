//! The procfs source: any Linux process, no instrumentation.
//!
//! Memory, threads and CPU time from `/proc/PID/{status,stat}`; every open
//! descriptor from `/proc/PID/fd`, classified by what it points at; sockets
//! joined by inode to the TCP and unix tables of the target's own network
//! namespace, read through sock_diag netlink ([`super::sockdiag`]) or, where
//! that is refused, `/proc/PID/net` ([`super::sockets`]). Files are counted
//! by path, so a leak of one served file shows up as that path's count
//! climbing, and by pattern ([`super::fdpattern`]), so one fd per request to
//! a new file each time does too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use leakscope_rundir::ProcSample;
use procfs::process::{FDTarget, Process};

use super::fdpattern::{top, top_patterns};
use super::sockdiag::SockDiag;
use super::sockets::{via_netlink, via_proc_net, Held, NetlinkTable, SocketFigures};

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

/// Where a sample's socket states come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketWay {
    /// sock_diag netlink in the target's namespace: the default.
    Netlink,
    /// `/proc/PID/net/{tcp,tcp6,unix}`: where netlink is refused, and for
    /// the benchmark that compares the two.
    ProcNet,
}

/// The socket table a source reads: a netlink socket is kept for the life
/// of the source (it is bound to the namespace it was opened in).
enum Table {
    Netlink(Box<NetlinkTable>),
    ProcNet,
}

/// Cheap to clone (the process handle and socket table are shared), so a
/// tick can read it on a blocking thread beside the other sources' reads.
#[derive(Clone)]
pub struct ProcSource {
    pid: i32,
    process: Arc<Process>,
    table: Arc<Mutex<Table>>,
    ticks_per_second: f64,
}

impl ProcSource {
    /// Sockets through netlink where it can be opened in the target's
    /// namespace, else (with a warning) through `/proc/PID/net`.
    pub fn new(pid: i32) -> Result<Self, ProcSourceError> {
        let table = match SockDiag::open_for(pid) {
            Ok(diag) => Table::Netlink(Box::new(NetlinkTable::new(diag))),
            Err(e) => {
                warn_proc_net(pid, &e);
                Table::ProcNet
            }
        };
        Self::with_table(pid, table)
    }

    /// Sockets read one given way; netlink failing to open is an error here.
    pub fn with_socket_way(pid: i32, way: SocketWay) -> Result<Self, ProcSourceError> {
        let table = match way {
            SocketWay::ProcNet => Table::ProcNet,
            SocketWay::Netlink => {
                let diag = SockDiag::open_for(pid).map_err(|e| ProcSourceError::Other {
                    pid,
                    message: format!("sock_diag netlink in its namespace: {e}"),
                })?;
                Table::Netlink(Box::new(NetlinkTable::new(diag)))
            }
        };
        Self::with_table(pid, table)
    }

    fn with_table(pid: i32, table: Table) -> Result<Self, ProcSourceError> {
        let process = Process::new(pid).map_err(|e| classify(pid, e))?;
        Ok(Self {
            pid,
            process: Arc::new(process),
            table: Arc::new(Mutex::new(table)),
            ticks_per_second: procfs::ticks_per_second() as f64,
        })
    }

    /// How sockets are read now (netlink can fall back after a failure).
    pub fn socket_way(&self) -> SocketWay {
        match *self.table.lock().unwrap_or_else(|p| p.into_inner()) {
            Table::Netlink(_) => SocketWay::Netlink,
            Table::ProcNet => SocketWay::ProcNet,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How many times the netlink way walked the kernel's connection
    /// tables (a new socket it could not look up exactly); `None` the
    /// `/proc/PID/net` way, which reads them whole every sample.
    pub fn connection_dumps(&self) -> Option<u64> {
        match &*self.table.lock().unwrap_or_else(|p| p.into_inner()) {
            Table::Netlink(t) => Some(t.dumps()),
            Table::ProcNet => None,
        }
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
        let mut sockets: Vec<Held> = Vec::new();
        for (fd, target) in self.fd_targets()? {
            sample.fds += 1;
            let kind = match target {
                FDTarget::Path(path) => {
                    *files
                        .entry(path.to_string_lossy().into_owned())
                        .or_default() += 1;
                    "file"
                }
                FDTarget::Socket(inode) => {
                    sockets.push(Held { fd, inode });
                    "socket"
                }
                FDTarget::Pipe(_) => "pipe",
                FDTarget::AnonInode(_) => "anon_inode",
                FDTarget::MemFD(_) => "memfd",
                FDTarget::Net(_) | FDTarget::Other(..) | FDTarget::Unknown(..) => "other",
            };
            *sample.fds_by_kind.entry(kind.to_string()).or_default() += 1;
        }
        sample.top_file_patterns =
            top_patterns(files.iter().map(|(p, n)| (p.as_str(), *n)), TOP_FILES);
        sample.top_files = top(files, TOP_FILES);
        let (states, endpoints) = self.sockets(&sockets);
        sample.tcp_states = states;
        sample.top_sockets = endpoints;
        Ok(sample)
    }

    /// Each open descriptor's number and what it points at. One
    /// `readlinkat` per fd: the procfs crate's `fd()` also opens and stats
    /// each one (4 syscalls), which made a sample of a process with 13,000
    /// leaked fds take 77 ms.
    fn fd_targets(&self) -> Result<Vec<(u32, FDTarget)>, ProcSourceError> {
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
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // A descriptor closed between listing and reading is not an error.
            link = match rustix::fs::readlinkat(&dir, entry.file_name(), std::mem::take(&mut link))
            {
                Ok(l) => l.into_bytes(),
                Err(_) => continue,
            };
            let text = String::from_utf8_lossy(&link);
            if let Ok(t) = text.parse::<FDTarget>() {
                targets.push((fd, t));
            }
        }
        Ok(targets)
    }

    /// TCP state and endpoints of each of the target's sockets, by inode.
    /// Sockets that are not TCP (unix, UDP, netlink) are counted under their
    /// family instead. A netlink dump that fails switches this source to
    /// `/proc/PID/net` for good, with one warning.
    fn sockets(&self, held: &[Held]) -> SocketFigures {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Table::Netlink(netlink) = &mut *table {
            match via_netlink(netlink, self.pid, held, TOP_FILES) {
                Ok(figures) => return figures,
                Err(e) => {
                    warn_proc_net(self.pid, &e);
                    *table = Table::ProcNet;
                }
            }
        }
        via_proc_net(&self.process, held, TOP_FILES)
    }
}

/// Said once per source: the samples go on, each at the old cost.
fn warn_proc_net(pid: i32, e: &std::io::Error) {
    tracing::warn!(
        pid,
        "sock_diag netlink refused ({e}); reading sockets from /proc/{pid}/net, \
         which costs milliseconds per sample on a host with many connections"
    );
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
