//! Server configuration, shared by the CLI and by tests that run the server
//! in-process.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub listen: SocketAddr,
    /// Requests answered or streaming at once; beyond it, 503.
    pub max_inflight: usize,
    /// Files kept open between requests ([`crate::open_files`]); `None`
    /// for a quarter of RLIMIT_NOFILE (at most 1024), 0 for none.
    pub open_file_cache: Option<usize>,
    /// ZIP archives streaming at once (each holds a blocking thread); beyond it, 503.
    pub max_zip_streams: usize,
    /// Per-client-IP requests per second (burst of the same size); beyond it, 429.
    pub rate_per_ip: Option<NonZeroU32>,
    /// Time a client has to send a complete request head, also the idle
    /// keep-alive limit (slowloris defence).
    pub header_read_timeout: Duration,
    /// Time a response may make no write progress before the connection is
    /// dropped (a client that stopped reading).
    pub stall_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight responses.
    pub shutdown_timeout: Duration,
    /// HMAC secret; when set every download needs a valid signed URL.
    pub secret: Option<Vec<u8>>,
    /// Which handler the `/s/{scenario}/` routes run; `None` disables them.
    pub variant: Option<crate::scenarios::Variant>,
}

/// The longest timeout the server takes: longer is a mistake, and adding
/// it to the clock panics past its range.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

impl Config {
    /// Why the server cannot run with this configuration, if it cannot: a
    /// limit of 0 answers every download 503 while /healthz says ok, and a
    /// timeout past [`MAX_TIMEOUT`] panics a worker on every connection.
    pub fn check(&self) -> Result<(), String> {
        if self.max_inflight == 0 || self.max_zip_streams == 0 {
            return Err("max_inflight and max_zip_streams must be at least 1".into());
        }
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("stall_timeout", self.stall_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ];
        match timeouts.iter().find(|(_, d)| *d > MAX_TIMEOUT) {
            Some((name, d)) => Err(format!("{name} {d:?} is longer than a year")),
            None => Ok(()),
        }
    }

    /// Defaults a production server could start with.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_inflight: 1024,
            open_file_cache: None,
            max_zip_streams: 16,
            rate_per_ip: None,
            header_read_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            secret: None,
            variant: None,
        }
    }
}
