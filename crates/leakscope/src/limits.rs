//! The ceilings a target runs under, read from outside when recording
//! starts: what a leak runs into, and how soon.
//!
//! Everything here is best effort: a limit that cannot be read is `None`
//! and the analysis says it could not forecast against it, never a guess.

use std::path::{Path, PathBuf};

use leakscope_rundir::Limits;
use procfs::process::{LimitValue, Process};
use procfs::Current;

/// Where the cgroup v2 hierarchy is mounted on every mainstream distribution
/// (systemd mounts it there; containers see their own cgroup there).
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// Reads the target's limits: RLIMIT_NOFILE and RLIMIT_AS from
/// `/proc/PID/limits`, its cgroup v2 `memory.max`, `pids.max` and OOM-kill
/// count, and the host's physical memory.
pub fn read(pid: i32) -> Limits {
    let mut limits = Limits {
        host_memory: procfs::Meminfo::current().ok().map(|m| m.mem_total),
        ..Limits::default()
    };
    let Ok(process) = Process::new(pid) else {
        return limits;
    };
    if let Ok(l) = process.limits() {
        limits.open_files = value(l.max_open_files.soft_limit);
        limits.address_space = value(l.max_address_space.soft_limit);
    }
    if let Some(dir) = cgroup_dir(&process) {
        limits.cgroup_memory_max = read_max(&dir.join("memory.max"));
        limits.cgroup_pids_max = read_max(&dir.join("pids.max"));
        limits.oom_kills_at_start = oom_kills(&dir);
        limits.cgroup_dir = Some(dir.to_string_lossy().into_owned());
    }
    limits
}

fn value(v: LimitValue) -> Option<u64> {
    match v {
        LimitValue::Value(n) => Some(n),
        LimitValue::Unlimited => None,
    }
}

/// The process's cgroup v2 directory, when the unified hierarchy is mounted
/// where it usually is.
fn cgroup_dir(process: &Process) -> Option<PathBuf> {
    let groups = process.cgroups().ok()?;
    let v2 = groups.0.iter().find(|g| g.hierarchy == 0)?;
    let dir = Path::new(CGROUP2_ROOT).join(v2.pathname.trim_start_matches('/'));
    dir.join("cgroup.controllers").is_file().then_some(dir)
}

/// A cgroup `*.max` file: a number, or "max" for none.
fn read_max(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `oom_kill` from a cgroup's `memory.events`: processes the OOM killer
/// ended in this cgroup since it was created.
pub fn oom_kills(cgroup_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(cgroup_dir.join("memory.events")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// OOM kills since `limits` were read, when both counts can be had.
pub fn oom_kills_since(limits: &Limits) -> Option<u64> {
    let dir = limits.cgroup_dir.as_deref()?;
    let now = oom_kills(Path::new(dir))?;
    Some(now.saturating_sub(limits.oom_kills_at_start?))
}

/// Files this process keeps open besides the load's sockets (run
/// directory, sources, the runtime's own), with room to spare.
const OWN_FILES: u64 = 64;

/// How many requests the load can keep open at once on this machine, and
/// what bounds it: each is a socket, so the fds this process may open
/// (RLIMIT_NOFILE, less its own files) and the local ports a connection to
/// one address can take (`ip_local_port_range`). `None` when neither can be
/// read.
pub fn load_capacity() -> Option<(u64, String)> {
    let fds = Process::myself()
        .ok()
        .and_then(|p| p.limits().ok())
        .and_then(|l| value(l.max_open_files.soft_limit))
        .map(|n| {
            (
                n.saturating_sub(OWN_FILES),
                format!("this process may open {n} files (ulimit -n), {OWN_FILES} of them its own"),
            )
        });
    let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            let n = hi.checked_sub(lo)? + 1;
            Some((n, format!("a connection to one address may use {n} local ports (ip_local_port_range {lo}-{hi})")))
        });
    match (fds, ports) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_nofile_limit_as_getrlimit_reports_it() {
        let l = read(std::process::id() as i32);
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        assert_eq!(l.open_files, soft);
        assert!(l.host_memory.is_some_and(|m| m > 0));
    }
}
