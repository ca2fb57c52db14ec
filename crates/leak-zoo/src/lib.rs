//! leak-zoo: a small tokio + hyper service that leaks on purpose, one way
//! per [`Mode`], plus look-alikes that grow under load but stay bounded.
//!
//! leakscope's verdicts have to hold on services it has never seen, so this
//! program is written independently of the project's own demo server and
//! publishes its ground truth: [`Mode::truth`] says what each mode does to
//! the process, and the running server reports what it deliberately holds at
//! `GET /debug/zoo`. Tests and harnesses iterate over [`Mode::ALL`] and
//! compare leakscope's verdict with the truth.

use std::fmt;
use std::time::Duration;

/// The per-request actions; a library module so tests can run a mode's
/// action under a leak guard without a server around it.
pub mod modes;

/// What each mode's per-request action does. The names on the command line
/// are the kebab-case variant names (`fd-file`, `task-timer`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// Leak: opens the zoo's scratch file read-only and keeps the File.
    FdFile,
    /// Leak: creates a pipe and keeps both ends (2 fds).
    FdPipe,
    /// Leak: creates an unbound UDP socket (no port used) and keeps it.
    FdUdp,
    /// Leak: creates an unbound TCP socket (no port used) and keeps it.
    FdTcp,
    /// Leak: creates an eventfd and keeps it.
    FdEventfd,
    /// Leak: creates a timerfd and keeps it.
    FdTimerfd,
    /// Leak: spawns a task that ticks a 1 s interval forever.
    TaskTimer,
    /// Leak: spawns a task awaiting an mpsc channel whose Sender is kept.
    TaskChannel,
    /// Leak: spawns into a global JoinSet a task awaiting a oneshot whose Sender is kept.
    TaskJoinset,
    /// Leak: keeps a filled buffer of --leak-bytes (default 256).
    Heap,
    /// Bounded: caches --leak-bytes (default 4096) per request, at most 2,000 entries, oldest evicted.
    CacheCount,
    /// Bounded: caches --leak-bytes (default 4096) per request for 1 s; purged every 100 ms.
    CacheTtl,
    /// Bounded: holds 1 MiB, a file and a 20 ms task during the request only.
    InFlight,
    /// Bounded: checks out one of at most 64 pooled entries (TCP socket + 64 KiB) for 2 ms.
    Pool,
    /// Bounded: does nothing.
    Healthy,
}

/// Entries [`Mode::CacheCount`] keeps at most.
pub const CACHE_COUNT_CAP: u64 = 2_000;
/// How long a [`Mode::CacheTtl`] entry lives.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// How often [`Mode::CacheTtl`]'s background task purges expired entries.
pub const CACHE_PURGE_EVERY: Duration = Duration::from_millis(100);
/// Bytes one [`Mode::InFlight`] action holds while its request runs.
pub const IN_FLIGHT_BYTES: u64 = 1024 * 1024;
/// How long the task spawned by a [`Mode::InFlight`] action sleeps.
pub const IN_FLIGHT_TASK_SLEEP: Duration = Duration::from_millis(20);
/// Entries [`Mode::Pool`] creates at most.
pub const POOL_MAX: u64 = 64;
/// The buffer each [`Mode::Pool`] entry owns, besides its one socket fd.
pub const POOL_ENTRY_BYTES: u64 = 64 * 1024;
/// How long a [`Mode::Pool`] action keeps its entry checked out.
pub const POOL_HOLD: Duration = Duration::from_millis(2);

/// A resource a mode can leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Open file descriptors, as counted in `/proc/PID/fd`.
    Fds,
    /// Alive tokio tasks (`RuntimeMetrics::num_alive_tasks`).
    Tasks,
    /// Heap bytes the zoo deliberately holds (`held_bytes` in /debug/zoo).
    Heap,
}

/// A quantity, either fixed or a multiple of the run's `--leak-bytes`
/// (whose default depends on the mode, so it is only known at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// Exactly this many units.
    Fixed(u64),
    /// This many times the run's `--leak-bytes`.
    LeakBytes(u64),
}

impl Amount {
    /// The quantity for a run with this `--leak-bytes` value (see
    /// [`Mode::leak_bytes`]).
    pub fn resolve(self, leak_bytes: u64) -> u64 {
        match self {
            Amount::Fixed(n) => n,
            Amount::LeakBytes(times) => times.saturating_mul(leak_bytes),
        }
    }
}

/// The most a bounded mode holds, above what the zoo held before its first
/// request, once load has stopped and the mode has settled, however many
/// requests were served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bound {
    pub fds: u64,
    pub tasks: u64,
    pub held_bytes: Amount,
}

/// What a mode does to the process: the answer leakscope should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    /// Every action adds `per_action` of `resource` (fds, tasks, or heap
    /// bytes) and nothing ever releases it; the other resources stay flat.
    Leak {
        resource: Resource,
        per_action: Amount,
    },
    /// Not a leak: it may grow under load, but `settle` after the last
    /// response it holds no more than `bound`.
    Bounded { bound: Bound, settle: Duration },
}

impl Truth {
    /// The leaked resource, or `None` for a bounded mode.
    pub fn leaked(self) -> Option<Resource> {
        match self {
            Truth::Leak { resource, .. } => Some(resource),
            Truth::Bounded { .. } => None,
        }
    }
}

impl Mode {
    /// Every mode, leaks first, in command-line order.
    pub const ALL: [Mode; 15] = [
        Mode::FdFile,
        Mode::FdPipe,
        Mode::FdUdp,
        Mode::FdTcp,
        Mode::FdEventfd,
        Mode::FdTimerfd,
        Mode::TaskTimer,
        Mode::TaskChannel,
        Mode::TaskJoinset,
        Mode::Heap,
        Mode::CacheCount,
        Mode::CacheTtl,
        Mode::InFlight,
        Mode::Pool,
        Mode::Healthy,
    ];

    /// The mode's name on the command line and in /debug/zoo.
    pub fn name(self) -> &'static str {
        match self {
            Mode::FdFile => "fd-file",
            Mode::FdPipe => "fd-pipe",
            Mode::FdUdp => "fd-udp",
            Mode::FdTcp => "fd-tcp",
            Mode::FdEventfd => "fd-eventfd",
            Mode::FdTimerfd => "fd-timerfd",
            Mode::TaskTimer => "task-timer",
            Mode::TaskChannel => "task-channel",
            Mode::TaskJoinset => "task-joinset",
            Mode::Heap => "heap",
            Mode::CacheCount => "cache-count",
            Mode::CacheTtl => "cache-ttl",
            Mode::InFlight => "in-flight",
            Mode::Pool => "pool",
            Mode::Healthy => "healthy",
        }
    }

    /// The mode named `name`, as on the command line.
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// `--leak-bytes` when it is not given, or `None` if the mode ignores it.
    pub fn default_leak_bytes(self) -> Option<u64> {
        match self {
            Mode::Heap => Some(256),
            Mode::CacheCount | Mode::CacheTtl => Some(4096),
            _ => None,
        }
    }

    /// The `--leak-bytes` value a run uses: the given one if the mode uses
    /// it, else its default, else 0.
    pub fn leak_bytes(self, given: Option<u64>) -> u64 {
        match self.default_leak_bytes() {
            Some(default) => given.unwrap_or(default),
            None => 0,
        }
    }

    /// The mode's ground truth.
    pub fn truth(self) -> Truth {
        let leak = |resource, n| Truth::Leak {
            resource,
            per_action: Amount::Fixed(n),
        };
        let bounded = |fds, tasks, held_bytes, settle| Truth::Bounded {
            bound: Bound {
                fds,
                tasks,
                held_bytes,
            },
            settle,
        };
        match self {
            Mode::FdFile | Mode::FdUdp | Mode::FdTcp | Mode::FdEventfd | Mode::FdTimerfd => {
                leak(Resource::Fds, 1)
            }
            Mode::FdPipe => leak(Resource::Fds, 2),
            Mode::TaskTimer | Mode::TaskChannel | Mode::TaskJoinset => leak(Resource::Tasks, 1),
            Mode::Heap => Truth::Leak {
                resource: Resource::Heap,
                per_action: Amount::LeakBytes(1),
            },
            Mode::CacheCount => bounded(0, 0, Amount::LeakBytes(CACHE_COUNT_CAP), Duration::ZERO),
            // An entry inserted by the last request expires after the TTL and
            // is gone by the next purge after that.
            Mode::CacheTtl => bounded(0, 0, Amount::Fixed(0), CACHE_TTL + CACHE_PURGE_EVERY),
            Mode::InFlight => bounded(0, 0, Amount::Fixed(0), Duration::ZERO),
            Mode::Pool => bounded(
                POOL_MAX,
                0,
                Amount::Fixed(POOL_MAX * POOL_ENTRY_BYTES),
                Duration::ZERO,
            ),
            Mode::Healthy => bounded(0, 0, Amount::Fixed(0), Duration::ZERO),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// ALL, the clap names and `name` must agree, or a harness iterating
    /// ALL would start the zoo with a mode it rejects.
    #[test]
    fn all_names_match_clap() {
        assert_eq!(Mode::ALL.len(), Mode::value_variants().len());
        for (m, v) in Mode::ALL.iter().zip(Mode::value_variants()) {
            assert_eq!(m, v);
            let pv = m.to_possible_value().expect("no mode is hidden");
            assert_eq!(pv.get_name(), m.name());
            assert_eq!(Mode::from_name(m.name()), Some(*m));
        }
    }

    #[test]
    fn leak_bytes_defaults() {
        assert_eq!(Mode::Heap.leak_bytes(None), 256);
        assert_eq!(Mode::Heap.leak_bytes(Some(4096)), 4096);
        assert_eq!(Mode::CacheTtl.leak_bytes(None), 4096);
        assert_eq!(Mode::FdFile.leak_bytes(Some(4096)), 0);
    }
}
