//! tokio-console behind a run-time switch.
//!
//! console-subscriber's defaults suit a developer's laptop, not a leak hunt:
//! it keeps every finished task for an hour (about 51 KB each, measured), so
//! the instrumentation itself looks like a leak, and it publishes once a
//! second while only ~127 new tasks reach a client per publish, so a busy
//! server's tasks arrive late or not at all. The agent sets both on purpose
//! (see [`ConsoleConfig`]) and binds the port itself, so a taken port is an
//! error the host sees at start-up instead of a panic in a background thread.

use std::net::SocketAddr;
use std::time::Duration;

use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::Layer;

use crate::AgentError;

/// The address tokio-console connects to by default.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6669);

/// How the console endpoint runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub addr: SocketAddr,
    /// How long finished tasks stay visible. Short, because each one holds
    /// about 51 KB until it expires (measured: 10,000 requests to the
    /// download server, two tasks each, held 1.0 GB); 10 s still lets a live
    /// viewer see tasks finish.
    pub retention: Duration,
    /// How often updates go out. 100 ms lets ~1,270 new tasks per second
    /// through (~127 per publish) instead of ~127 at the 1 s default.
    pub publish_interval: Duration,
    /// Events buffered between the tracing layer and the aggregator before
    /// new ones are dropped (clients see the drop counts). It also sets the
    /// lag: the aggregator drains only 128 events per publish unless the
    /// buffer is half full, so with the crate's 100 K default a service
    /// whose tasks poll often (timers, heartbeats) showed its clients a
    /// picture up to 50 K events old: measured, 400 leaked tasks ticking
    /// every 100 ms were seen as 63 after 213 had leaked. At 16 K the lag
    /// is at most 8 K events.
    pub event_buffer_capacity: usize,
    /// Accept a non-loopback address.
    pub allow_remote: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR,
            retention: Duration::from_secs(10),
            publish_interval: Duration::from_millis(100),
            event_buffer_capacity: 16 * 1024,
            allow_remote: false,
        }
    }
}

/// The retention of the console endpoint this process started, if any.
static RETENTION: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// How long the console endpoint started by [`spawn`] keeps finished tasks;
/// `None` when none was started. Served in `/debug/tasks` so a sidecar can
/// tell the console's retained memory from a leak.
pub fn retention() -> Option<Duration> {
    RETENTION.get().copied()
}

/// The switch's environment variables.
pub const ENV_ADDR: &str = "LEAKSCOPE_CONSOLE";
pub const ENV_RETENTION: &str = "LEAKSCOPE_CONSOLE_RETENTION";
pub const ENV_PUBLISH_INTERVAL: &str = "LEAKSCOPE_CONSOLE_PUBLISH_INTERVAL";

impl ConsoleConfig {
    /// Reads `LEAKSCOPE_CONSOLE`: unset, empty, `0` or `off` → `None`;
    /// `1` or `on` → the default address; otherwise `IP:PORT`. Retention and
    /// publish interval may be overridden with `LEAKSCOPE_CONSOLE_RETENTION`
    /// and `LEAKSCOPE_CONSOLE_PUBLISH_INTERVAL` (e.g. `30s`, `250ms`).
    pub fn from_env() -> Result<Option<Self>, AgentError> {
        let Some(value) = std::env::var_os(ENV_ADDR) else {
            return Ok(None);
        };
        let value = value.to_str().ok_or(AgentError::Env {
            var: ENV_ADDR,
            reason: "not UTF-8".into(),
        })?;
        let mut config = ConsoleConfig::default();
        match value.trim() {
            "" | "0" | "off" | "false" => return Ok(None),
            "1" | "on" | "true" => {}
            addr => {
                config.addr = addr.parse().map_err(|_| AgentError::Env {
                    var: ENV_ADDR,
                    reason: format!("{addr:?} is not IP:PORT (or on/off)"),
                })?;
            }
        }
        if let Some(d) = duration_env(ENV_RETENTION)? {
            config.retention = d;
        }
        if let Some(d) = duration_env(ENV_PUBLISH_INTERVAL)? {
            config.publish_interval = d;
        }
        Ok(Some(config))
    }
}

fn duration_env(var: &'static str) -> Result<Option<Duration>, AgentError> {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(AgentError::Env {
            var,
            reason: e.to_string(),
        }),
        Ok(v) => humantime::parse_duration(v.trim())
            .map(Some)
            .map_err(|e| AgentError::Env {
                var,
                reason: format!("{v:?}: {e}"),
            }),
    }
}

/// A tracing layer that feeds tokio-console when the switch is on, and
/// costs nothing when it is off ([`optional`]). Add it to the host's
/// subscriber before the runtime starts spawning.
pub fn layer_from_env<S>() -> Result<impl Layer<S>, AgentError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = match ConsoleConfig::from_env()? {
        None => None,
        Some(config) => Some(spawn::<S>(&config)?.0),
    };
    Ok(optional(layer))
}

/// A layer that may be absent, as a layer that, when absent, wants nothing.
///
/// Why not `Option<L>` itself: tracing-subscriber's `None` answers every
/// callsite with `Interest::always()`, so a subscriber holding it records
/// every span anything emits. With `tokio_unstable` and tokio's `tracing`
/// feature (what the console needs) that is a span per task spawn and per
/// timer, stored in the registry for no one: 4.5% of the download server's
/// CPU samples at 4,000 requests/s with the console off. A per-layer
/// filter that is `OFF` when the layer is absent makes the subscriber
/// disable those callsites instead.
pub fn optional<S, L>(layer: Option<L>) -> Filtered<Option<L>, LevelFilter, S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    let level = if layer.is_some() {
        LevelFilter::TRACE
    } else {
        LevelFilter::OFF
    };
    layer.with_filter(level)
}

/// Binds the console's gRPC endpoint, starts its server thread, and returns
/// the layer to add to the host's subscriber with the bound address (port 0
/// picks a free one).
#[cfg(feature = "console")]
pub fn spawn<S>(config: &ConsoleConfig) -> Result<(impl Layer<S>, SocketAddr), AgentError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use console_subscriber::ConsoleLayer;
    use tracing_subscriber::filter::FilterFn;

    if !cfg!(tokio_unstable) {
        return Err(AgentError::ConsoleNeedsTokioUnstable);
    }
    crate::check_loopback("console", config.addr, config.allow_remote)?;
    let listener = std::net::TcpListener::bind(config.addr).map_err(|source| AgentError::Bind {
        what: "console",
        addr: config.addr,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| AgentError::Bind {
            what: "console",
            addr: config.addr,
            source,
        })?;
    // One console per process: the first one's retention is the one held.
    let _ = RETENTION.set(config.retention);
    let (layer, server) = ConsoleLayer::builder()
        .retention(config.retention)
        .publish_interval(config.publish_interval)
        .event_buffer_capacity(config.event_buffer_capacity)
        .server_addr(config.addr)
        .build();
    let addr = listener.local_addr().map_err(|source| AgentError::Bind {
        what: "console",
        addr: config.addr,
        source,
    })?;
    std::thread::Builder::new()
        .name("leakscope-console".into())
        .spawn(move || {
            // The console's own tasks must not show up in the console.
            let _quiet = crate::muted::mute_this_thread();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("leakscope-agent: console runtime failed to start: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let parts = server.into_parts();
                let aggregator = tokio::spawn(parts.aggregator.run());
                let incoming = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => tokio_stream::wrappers::TcpListenerStream::new(l),
                    Err(e) => {
                        eprintln!("leakscope-agent: console listener on {addr}: {e}");
                        return;
                    }
                };
                let served = tonic::transport::Server::builder()
                    .add_service(parts.instrument_server)
                    .serve_with_incoming(incoming)
                    .await;
                aggregator.abort();
                if let Err(e) = served {
                    eprintln!("leakscope-agent: console server on {addr} stopped: {e}");
                }
            });
        })
        .map_err(|e| AgentError::Thread(e.to_string()))?;
    // The same filter console-subscriber's own `spawn` installs: only tokio's
    // instrumentation reaches the console layer, so the host's spans and
    // events cost it nothing.
    let filter = FilterFn::new(|meta: &tracing::Metadata<'_>| {
        if meta.is_event() {
            meta.target().starts_with("runtime") || meta.target().starts_with("tokio")
        } else {
            meta.name().starts_with("runtime.") || meta.target().starts_with("tokio")
        }
    });
    Ok((layer.with_filter(filter), addr))
}

/// Without the `console` feature the switch can only be off.
#[cfg(not(feature = "console"))]
pub fn spawn<S>(
    _config: &ConsoleConfig,
) -> Result<(tracing_subscriber::layer::Identity, SocketAddr), AgentError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Err(AgentError::FeatureOff {
        endpoint: "the tokio-console endpoint",
        feature: "console",
    })
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::{Identity, SubscriberExt};
    use tracing_subscriber::Layer;

    /// A TRACE span, as tokio emits one per spawn, under the usual
    /// subscriber: the console layer given, plus logs at INFO. Another
    /// thread holds a subscriber without a level hint meanwhile, which
    /// lifts the process's maximum level to TRACE (as the agent's own
    /// threads did before they ran under `Muted`), so the answer is the
    /// stack's own.
    fn trace_span_recorded<L>(console: L) -> bool
    where
        L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let (held, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _none = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::new());
            held.send(()).unwrap();
            let _ = release.recv();
        });
        wait.recv().unwrap();
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(LevelFilter::INFO);
        let subscriber = tracing_subscriber::registry().with(console).with(logs);
        let recorded = tracing::subscriber::with_default(subscriber, || {
            !tracing::trace_span!(target: "tokio::task", "runtime.spawn").is_disabled()
        });
        drop(hold);
        other.join().unwrap();
        recorded
    }

    #[test]
    fn an_absent_console_records_no_spans() {
        assert!(!trace_span_recorded(super::optional(None::<Identity>)));
        // What `Option` alone does, the cost `optional` exists to avoid.
        assert!(trace_span_recorded(None::<Identity>));
        // A present layer still gets them.
        assert!(trace_span_recorded(super::optional(Some(Identity::new()))));
    }
}
