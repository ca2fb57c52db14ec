//! The per-request actions, one per [`Mode`].
//!
//! The leaks are written the way they happen in real services: something is
//! pushed into a global collection "for later" and never taken out. The
//! bounded modes are the usual reasons memory or fds grow without leaking:
//! a capped cache, a cache with expiry, per-request work, a pool.
//!
//! Everything the zoo holds on purpose is counted in [`held_bytes`] so
//! `/debug/zoo` can report the ground truth without guessing from RSS.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use crate::{
    Mode, CACHE_COUNT_CAP, CACHE_PURGE_EVERY, CACHE_TTL, IN_FLIGHT_BYTES, IN_FLIGHT_TASK_SLEEP,
    POOL_ENTRY_BYTES, POOL_HOLD, POOL_MAX,
};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

// The leaks' global collections: filled, never drained.
static LEAKED_FILES: Mutex<Vec<File>> = Mutex::new(Vec::new());
static LEAKED_FDS: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());
static LEAKED_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static LEAKED_SENDERS: Mutex<Vec<mpsc::Sender<()>>> = Mutex::new(Vec::new());
static LEAKED_ONESHOTS: Mutex<Vec<oneshot::Sender<()>>> = Mutex::new(Vec::new());
static JOIN_SET: LazyLock<Mutex<JoinSet<()>>> = LazyLock::new(|| Mutex::new(JoinSet::new()));

/// Bytes the zoo deliberately holds right now, across all modes.
static HELD_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the zoo deliberately holds right now (`held_bytes` in /debug/zoo).
pub fn held_bytes() -> u64 {
    HELD_BYTES.load(Ordering::Relaxed)
}

/// A lock that survives a poisoned mutex: the data is plain collections
/// that a panic cannot leave half-updated in a way that matters here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A buffer of `len` non-zero bytes, so every page is really touched and
/// shows in RSS (a zeroed allocation may be lazily mapped).
fn filled(len: u64, byte: u8) -> Vec<u8> {
    vec![byte; usize::try_from(len).unwrap_or(usize::MAX)]
}

/// Counts `bytes` in [`held_bytes`] until dropped.
struct Held(u64);

impl Held {
    fn new(bytes: u64) -> Self {
        HELD_BYTES.fetch_add(bytes, Ordering::Relaxed);
        Held(bytes)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// The file that `fd-file` and `in-flight` open. Removed when dropped, so
/// an orderly exit leaves nothing in the temp dir.
pub struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    /// Creates `leak-zoo-PID.tmp` in the temp dir (the pid keeps parallel
    /// zoos apart).
    pub fn create() -> io::Result<Self> {
        let path = std::env::temp_dir().join(format!("leak-zoo-{}.tmp", std::process::id()));
        std::fs::write(&path, b"leak-zoo scratch file\n")?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The state behind the bounded modes, and what every action needs.
pub struct Zoo {
    mode: Mode,
    leak_bytes: u64,
    /// The file to open, for the modes that open one.
    scratch: Option<PathBuf>,
    count_cache: Mutex<CountCache>,
    ttl_cache: Arc<Mutex<HashMap<u64, TtlEntry>>>,
    pool: Pool,
}

/// A `cache-ttl` entry: its data and when it expires.
struct TtlEntry {
    expires: Instant,
    _data: Vec<u8>,
    _held: Held,
}

#[derive(Default)]
struct CountCache {
    entries: HashMap<u64, (Vec<u8>, Held)>,
    /// Keys, oldest first, for eviction.
    order: VecDeque<u64>,
}

struct Pool {
    /// One permit per entry that may exist, so at most POOL_MAX are ever
    /// checked out (and therefore created).
    permits: Semaphore,
    idle: Mutex<Vec<PoolEntry>>,
}

struct PoolEntry {
    _socket: OwnedFd,
    buffer: Vec<u8>,
    _held: Held,
}

impl Zoo {
    /// Sets up `mode`; for `cache-ttl` this spawns the purge task, so it
    /// must run inside the runtime.
    pub fn new(mode: Mode, leak_bytes: u64, scratch: Option<PathBuf>) -> Arc<Self> {
        let zoo = Arc::new(Self {
            mode,
            leak_bytes,
            scratch,
            count_cache: Mutex::new(CountCache::default()),
            ttl_cache: Arc::new(Mutex::new(HashMap::new())),
            pool: Pool {
                permits: Semaphore::new(POOL_MAX as usize),
                idle: Mutex::new(Vec::new()),
            },
        });
        if mode == Mode::CacheTtl {
            let cache = Arc::clone(&zoo.ttl_cache);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(CACHE_PURGE_EVERY);
                loop {
                    every.tick().await;
                    let now = Instant::now();
                    lock(&cache).retain(|_, entry| entry.expires > now);
                }
            });
        }
        zoo
    }

    /// Whether `mode` opens the scratch file.
    pub fn needs_scratch(mode: Mode) -> bool {
        matches!(mode, Mode::FdFile | Mode::InFlight)
    }

    fn open_scratch(&self) -> io::Result<File> {
        let path = self.scratch.as_deref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "this mode has no scratch file")
        })?;
        File::open(path)
    }

    /// Runs the mode's action once; `seq` is the request's number.
    pub async fn act(&self, seq: u64) -> io::Result<()> {
        match self.mode {
            Mode::FdFile => {
                let file = self.open_scratch()?;
                lock(&LEAKED_FILES).push(file);
            }
            Mode::FdPipe => {
                let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                lock(&LEAKED_FDS).extend([reader, writer]);
            }
            Mode::FdUdp => {
                let socket = unbound_socket(SocketType::DGRAM)?;
                lock(&LEAKED_FDS).push(socket);
            }
            Mode::FdTcp => {
                let socket = unbound_socket(SocketType::STREAM)?;
                lock(&LEAKED_FDS).push(socket);
            }
            Mode::FdEventfd => {
                let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
                lock(&LEAKED_FDS).push(fd);
            }
            Mode::FdTimerfd => {
                let fd = rustix::time::timerfd_create(
                    rustix::time::TimerfdClockId::Monotonic,
                    rustix::time::TimerfdFlags::CLOEXEC,
                )?;
                lock(&LEAKED_FDS).push(fd);
            }
            Mode::TaskTimer => {
                tokio::spawn(async {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                    }
                });
            }
            Mode::TaskChannel => {
                let (tx, mut rx) = mpsc::channel::<()>(1);
                lock(&LEAKED_SENDERS).push(tx);
                tokio::spawn(async move {
                    // Never returns: the Sender lives forever and never sends.
                    let _ = rx.recv().await;
                });
            }
            Mode::TaskJoinset => {
                let (tx, rx) = oneshot::channel::<()>();
                lock(&LEAKED_ONESHOTS).push(tx);
                lock(&JOIN_SET).spawn(async move {
                    let _ = rx.await;
                });
            }
            Mode::Heap => {
                let buffer = filled(self.leak_bytes, 0xa5);
                HELD_BYTES.fetch_add(self.leak_bytes, Ordering::Relaxed);
                lock(&LEAKED_BUFFERS).push(buffer);
            }
            Mode::CacheCount => {
                let entry = (filled(self.leak_bytes, 0xc0), Held::new(self.leak_bytes));
                let mut cache = lock(&self.count_cache);
                if cache.entries.insert(seq, entry).is_none() {
                    cache.order.push_back(seq);
                }
                while cache.order.len() as u64 > CACHE_COUNT_CAP {
                    if let Some(oldest) = cache.order.pop_front() {
                        cache.entries.remove(&oldest);
                    }
                }
            }
            Mode::CacheTtl => {
                let entry = TtlEntry {
                    expires: Instant::now() + CACHE_TTL,
                    _data: filled(self.leak_bytes, 0x77),
                    _held: Held::new(self.leak_bytes),
                };
                lock(&self.ttl_cache).insert(seq, entry);
            }
            Mode::InFlight => {
                let held = Held::new(IN_FLIGHT_BYTES);
                let buffer = filled(IN_FLIGHT_BYTES, 0x3c);
                let file = self.open_scratch()?;
                tokio::spawn(tokio::time::sleep(IN_FLIGHT_TASK_SLEEP))
                    .await
                    .map_err(io::Error::other)?;
                drop((file, buffer, held));
            }
            Mode::Pool => self.use_pool().await?,
            Mode::Healthy => {}
        }
        Ok(())
    }

    async fn use_pool(&self) -> io::Result<()> {
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(io::Error::other)?;
        // With a permit in hand, fewer than POOL_MAX entries are checked
        // out, so creating one when none is idle keeps the total bounded.
        let idle = lock(&self.pool.idle).pop();
        let mut entry = match idle {
            Some(entry) => entry,
            None => PoolEntry {
                _socket: unbound_socket(SocketType::STREAM)?,
                buffer: filled(POOL_ENTRY_BYTES, 0x5a),
                _held: Held::new(POOL_ENTRY_BYTES),
            },
        };
        tokio::time::sleep(POOL_HOLD).await;
        // Use the buffer, as a real pooled entry would.
        if let Some(b) = entry.buffer.first_mut() {
            *b = b.wrapping_add(1);
        }
        lock(&self.pool.idle).push(entry);
        Ok(())
    }
}

/// A socket that is never bound or connected, so it holds an fd but no port.
fn unbound_socket(kind: SocketType) -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::INET,
        kind,
        SocketFlags::CLOEXEC,
        None,
    )?)
}
