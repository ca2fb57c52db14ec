//! leakscope-agent: Go's `net/http/pprof` for tokio services.
//!
//! A few lines in `main` give any tokio service debug endpoints: jemalloc
//! heap statistics and sampled heap profiles, CPU profiles, tokio runtime
//! metrics and a tokio-console endpoint (the cloud-drive article shows the Go
//! original). The leakscope sidecar reads them; so can `go tool pprof`,
//! `curl` and tokio-console.
//!
//! ```no_run
//! # async fn run() -> Result<(), leakscope_agent::AgentError> {
//! let agent = leakscope_agent::Agent::builder().start()?; // 127.0.0.1:6060
//! // ... the service runs ...
//! agent.shutdown().await; // writes dhat-heap.json in dhat mode
//! # Ok(()) }
//! ```
//!
//! Features: `jemalloc` (default: allocator, heap stats and profiles), `cpu`
//! (pprof-rs CPU profiles), `console` (tokio-console), `dhat-heap` (dhat's
//! allocator instead of jemalloc). An endpoint whose feature is off answers
//! 404 with the feature's name.
//!
//! Invariants the sidecar relies on:
//! - The agent never spawns on the host's runtime: its listener runs on a
//!   thread of its own with a current-thread runtime, muted for tracing, so
//!   its tasks never appear in the host's task counts or in tokio-console,
//!   and it still answers when the host's workers are starved.
//! - It binds loopback only unless told otherwise ([`AgentBuilder::allow_remote`]):
//!   heap profiles reveal a process's code paths and sizes.

mod allocator;
/// Where dhat mode writes its file by default: the name a leakscope run
/// directory gives it, so a file written there is where the analysis looks.
pub const DHAT_FILE: &str = leakscope_wire::DHAT_FILE;
/// The README's "agent in your service" lines, compiled as a doctest so the
/// first thing a user copies cannot drift from this API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeAgentLines;
pub mod console;
#[cfg(feature = "cpu")]
mod cpu;
#[cfg(feature = "dhat-heap")]
mod dhat_session;
pub mod heap;
mod http;
pub mod metrics;
mod muted;
pub(crate) mod runtime;
pub mod tasks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use allocator::BAKED_MALLOC_CONF;

/// The counting wrapper, for the benchmark that prices it; not an API.
#[cfg(feature = "jemalloc")]
#[doc(hidden)]
pub use allocator::counting::Counting;
pub use http::AgentService;

/// The agent's default address, the same port Go's pprof examples use.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6060);

/// Environment variables [`AgentBuilder::from_env`] reads.
pub const ENV_LISTEN: &str = "LEAKSCOPE_AGENT";
pub const ENV_DHAT_FILE: &str = "LEAKSCOPE_DHAT_FILE";
/// `on` allows `/debug/tasks/dump` (see [`AgentBuilder::task_dumps`]).
pub const ENV_TASK_DUMPS: &str = "LEAKSCOPE_TASK_DUMPS";

/// What can go wrong starting or using the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "leakscope-agent must start inside a tokio runtime (its /debug/tasks reads that runtime)"
    )]
    NoRuntime,
    #[error("binding the {what} endpoint to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve the {what} endpoint on non-loopback {addr}: it exposes heap \
         profiles and task details; opt in with allow_remote"
    )]
    NotLoopback {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error(
        "{endpoint} needs leakscope-agent's `{feature}` feature, which this build does not have"
    )]
    FeatureOff {
        endpoint: &'static str,
        feature: &'static str,
    },
    #[error(
        "heap profiling is off in this process (opt.prof is false; was MALLOC_CONF set to \
         prof:false, or is jemalloc not the allocator?)"
    )]
    HeapProfilingOff,
    #[error("tokio-console needs the build flag --cfg tokio_unstable (set it in .cargo/config.toml; a RUSTFLAGS variable replaces it)")]
    ConsoleNeedsTokioUnstable,
    #[error("a dhat profiler is already running in this process")]
    DhatAlreadyRunning,
    #[error("${var}: {reason}")]
    Env { var: &'static str, reason: String },
    #[error("allocator: {0}")]
    Allocator(String),
    #[error("profile: {0}")]
    Profile(String),
    #[error("task dump: {0}")]
    Dump(String),
    #[error("starting a thread: {0}")]
    Thread(String),
}

pub(crate) fn check_loopback(
    what: &'static str,
    addr: SocketAddr,
    allow_remote: bool,
) -> Result<(), AgentError> {
    if allow_remote || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(AgentError::NotLoopback { what, addr })
    }
}

/// Configures the agent; [`AgentBuilder::start`] runs it.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    listen: Option<SocketAddr>,
    allow_remote: bool,
    dhat_file: PathBuf,
    heap_sample_lg: Option<u32>,
    runtime: Option<tokio::runtime::Handle>,
    task_dumps: Option<bool>,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        Self {
            listen: Some(DEFAULT_ADDR),
            allow_remote: false,
            // The name the run directory gives dhat's file: written into
            // a run directory, it is where the analysis reads it.
            dhat_file: PathBuf::from(DHAT_FILE),
            heap_sample_lg: None,
            runtime: None,
            task_dumps: None,
        }
    }
}

impl AgentBuilder {
    /// Defaults overridden by `LEAKSCOPE_AGENT` (`IP:PORT`, or `off` for no
    /// listener) and `LEAKSCOPE_DHAT_FILE`.
    pub fn from_env() -> Result<Self, AgentError> {
        let mut b = Self::default();
        if let Ok(v) = std::env::var(ENV_LISTEN) {
            b.listen = match v.trim() {
                "off" | "0" | "false" => None,
                "" | "on" | "1" | "true" => Some(DEFAULT_ADDR),
                addr => Some(addr.parse().map_err(|_| AgentError::Env {
                    var: ENV_LISTEN,
                    reason: format!("{addr:?} is not IP:PORT (or on/off)"),
                })?),
            };
        }
        if let Some(p) = std::env::var_os(ENV_DHAT_FILE) {
            b.dhat_file = PathBuf::from(p);
        }
        Ok(b)
    }

    /// Where to serve; port 0 picks a free one ([`Agent::local_addr`]).
    /// `None` serves nothing: mount [`Agent::service`] in the host instead.
    pub fn listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.listen = addr;
        self
    }

    /// Permit a non-loopback listen address.
    pub fn allow_remote(mut self, yes: bool) -> Self {
        self.allow_remote = yes;
        self
    }

    /// Where dhat mode writes its file on shutdown (default `dhat-heap.json`).
    pub fn dhat_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.dhat_file = path.into();
        self
    }

    /// jemalloc heap-profile sampling: one sample per 2^lg bytes on average.
    /// Applied at start, overriding the baked-in 19 and any `MALLOC_CONF`;
    /// resets the profile's counts.
    pub fn heap_sample_interval_lg(mut self, lg: u32) -> Self {
        self.heap_sample_lg = Some(lg);
        self
    }

    /// Allow `/debug/tasks/dump` (default: `LEAKSCOPE_TASK_DUMPS=on`, else
    /// off). Off by default because tokio 1.54's multi-thread dump can wedge
    /// the runtime for good: its workers meet at a barrier with a 250 ms
    /// timeout, and a timed-out wait does not undo its count, so one worker
    /// late by 250 ms (a busy or descheduled thread) leaves the next dump
    /// tracing alone and waiting forever. Measured here: a download server
    /// with 13,000 tasks waking every 100 ms stopped answering. A
    /// current-thread runtime is dumped from inside, with no barrier. Turn
    /// it on where a stuck service can be restarted (tests, staging).
    pub fn task_dumps(mut self, allow: bool) -> Self {
        self.task_dumps = Some(allow);
        self
    }

    /// The runtime whose metrics `/debug/tasks` shows (default: the one
    /// `start` is called in).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Starts the profilers the build has and the listener, if any.
    pub fn start(self) -> Result<Agent, AgentError> {
        let runtime = match self.runtime {
            Some(h) => h,
            None => tokio::runtime::Handle::try_current().map_err(|_| AgentError::NoRuntime)?,
        };
        #[cfg(feature = "jemalloc")]
        {
            if !allocator::baked_conf_linked() {
                return Err(AgentError::Allocator("malloc_conf symbol missing".into()));
            }
            if let Some(lg) = self.heap_sample_lg {
                if lg > 40 {
                    return Err(AgentError::Allocator(format!(
                        "heap sample interval 2^{lg} is out of range (0..=40)"
                    )));
                }
                heap::set_sample_interval_lg(lg)?;
            }
        }
        #[cfg(feature = "dhat-heap")]
        let dhat = Some(dhat_session::DhatSession::start(self.dhat_file.clone())?);
        let task_dumps = match self.task_dumps {
            Some(allow) => allow,
            None => {
                std::env::var(ENV_TASK_DUMPS).is_ok_and(|v| matches!(v.trim(), "on" | "1" | "true"))
            }
        };
        let state = Arc::new(http::State::new(
            runtime,
            task_dumps,
            #[cfg(feature = "dhat-heap")]
            Some(self.dhat_file.clone()),
            #[cfg(not(feature = "dhat-heap"))]
            None,
        ));
        let server = match self.listen {
            None => None,
            Some(addr) => {
                check_loopback("debug", addr, self.allow_remote)?;
                Some(http::spawn_listener(addr, state.clone())?)
            }
        };
        Ok(Agent {
            state,
            server,
            #[cfg(feature = "dhat-heap")]
            dhat,
        })
    }
}

/// A running agent. Dropping it stops the listener; [`Agent::shutdown`]
/// does the same and waits, and in dhat mode writes the file.
pub struct Agent {
    state: Arc<http::State>,
    server: Option<http::Listener>,
    #[cfg(feature = "dhat-heap")]
    dhat: Option<dhat_session::DhatSession>,
}

impl Agent {
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// The bound address, when the agent has a listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr)
    }

    /// The endpoints as a hyper service the host can mount on its own
    /// listener (under `/debug/`). It runs on the host's runtime then.
    pub fn service(&self) -> AgentService {
        AgentService::new(self.state.clone())
    }

    /// Stops the listener and, in dhat mode, writes the dhat file.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        #[cfg(feature = "dhat-heap")]
        if let Some(mut d) = self.dhat.take() {
            let path = d.path().to_path_buf();
            d.finish();
            tracing::info!(path = %path.display(), "dhat heap profile written");
        }
    }
}
