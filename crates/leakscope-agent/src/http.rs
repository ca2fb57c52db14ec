//! The endpoints: routing, query parsing, and the agent's own listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::AgentError;
use leakscope_wire::Endpoint;

mod profiles;
use profiles::{cpu_profile, heap_profile, task_dump};

type Resp = Response<Full<Bytes>>;

pub(crate) struct State {
    runtime: tokio::runtime::Handle,
    task_dumps: bool,
    dhat_file: Option<PathBuf>,
    started: std::time::SystemTime,
}

impl State {
    pub(crate) fn new(
        runtime: tokio::runtime::Handle,
        task_dumps: bool,
        dhat_file: Option<PathBuf>,
    ) -> Self {
        Self {
            runtime,
            task_dumps,
            dhat_file,
            started: std::time::SystemTime::now(),
        }
    }
}

/// The debug endpoints as a hyper service, for hosts that mount them on a
/// listener of their own. Request bodies are never read.
#[derive(Clone)]
pub struct AgentService {
    state: Arc<State>,
}

impl AgentService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// Answers one request; never fails (errors are HTTP responses).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        route(&self.state, req.method(), req.uri(), req.headers()).await
    }
}

impl<B: Send + 'static> hyper::service::Service<Request<B>> for AgentService {
    type Response = Resp;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(route(&state, req.method(), req.uri(), req.headers()).await) })
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut body: String = body.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: Serialize>(value: &T) -> Resp {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON: {e}"),
        ),
    }
}

#[cfg(any(feature = "jemalloc", feature = "cpu"))]
fn binary(body: Vec<u8>, content_type: &'static str, filename: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .expect("static filename is a valid header"),
    );
    r
}

fn error(e: AgentError) -> Resp {
    let status = match e {
        AgentError::FeatureOff { .. } => StatusCode::NOT_FOUND,
        AgentError::HeapProfilingOff => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, e.to_string())
}

/// A 400's reason; becomes the response at the handler.
struct BadRequest(String);

impl From<BadRequest> for Resp {
    fn from(b: BadRequest) -> Resp {
        text(StatusCode::BAD_REQUEST, b.0)
    }
}

/// Parsed query: only the keys an endpoint names are accepted, so a typo
/// (`?second=5`) is a 400 instead of a silently different profile.
fn query(uri: &http::Uri, allowed: &[&str]) -> Result<Vec<(String, String)>, BadRequest> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (k, _) in &pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(BadRequest(format!(
                "unknown query parameter {k:?}; this endpoint takes: {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

enum Fmt {
    Pprof,
    Svg,
}

fn format_param(pairs: &[(String, String)]) -> Result<Fmt, BadRequest> {
    match param(pairs, "format") {
        None | Some("pprof" | "proto") => Ok(Fmt::Pprof),
        Some("svg" | "flamegraph") => Ok(Fmt::Svg),
        Some(other) => Err(BadRequest(format!(
            "format={other:?} is not one of pprof, svg"
        ))),
    }
}

/// Longest CPU profile accepted; a forgotten `seconds=86400` would otherwise
/// hold the one profiling slot for a day.
const MAX_CPU_SECONDS: u64 = 600;

/// Go's `net/http/pprof` paths the agent does not serve, and why: the
/// default scrape configurations of Parca and Grafana Alloy ask for them.
fn not_served(path: &str) -> Option<&'static str> {
    match path {
        "/debug/pprof/allocs" => Some(
            "allocs is Go's profile of allocations since start; this agent's heap profile is \
             in-use memory and is served at /debug/pprof/heap only (docs/continuous-profiling.md)",
        ),
        "/debug/pprof/goroutine"
        | "/debug/pprof/mutex"
        | "/debug/pprof/block"
        | "/debug/pprof/threadcreate"
        | "/debug/fgprof"
        | "/debug/pprof/delta_heap"
        | "/debug/pprof/delta_mutex"
        | "/debug/pprof/delta_block" => Some(
            "a Go runtime profile with no counterpart here; turn it off in the scraper \
             (docs/continuous-profiling.md)",
        ),
        _ => None,
    }
}

async fn route(state: &State, method: &Method, uri: &http::Uri, headers: &http::HeaderMap) -> Resp {
    let path = uri.path().trim_end_matches('/');
    if let Some(why) = not_served(path) {
        return text(
            StatusCode::NOT_FOUND,
            format!("{} is not served: {why}", uri.path()),
        );
    }
    let Some(endpoint) = Endpoint::from_path(path) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no endpoint {}; GET /debug lists them", uri.path()),
        );
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match endpoint {
        Endpoint::Metrics => metrics(uri, headers),
        Endpoint::Index => match query(uri, &[]) {
            Err(r) => r.into(),
            Ok(_) => json(&index(state)),
        },
        Endpoint::HeapStats => match query(uri, &[]) {
            Err(r) => r.into(),
            Ok(_) => match crate::heap::stats() {
                Ok(s) => json(&s),
                Err(e) => error(e),
            },
        },
        Endpoint::Tasks => match query(uri, &[]) {
            Err(r) => r.into(),
            Ok(_) => json(&crate::runtime::stats(&state.runtime)),
        },
        Endpoint::TaskDump => task_dump(state, uri).await,
        Endpoint::HeapProfile => heap_profile(state, uri).await,
        Endpoint::CpuProfile => cpu_profile(uri).await,
    }
}

fn metrics(uri: &http::Uri, headers: &http::HeaderMap) -> Resp {
    if let Err(r) = query(uri, &[]) {
        return r.into();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match crate::metrics::render(accept) {
        Ok((content_type, body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        ),
    }
}

#[derive(Serialize)]
struct Index {
    agent: &'static str,
    version: &'static str,
    pid: u32,
    started_unix: u64,
    allocator: &'static str,
    baked_malloc_conf: Option<&'static str>,
    features: Features,
    endpoints: Vec<IndexEntry>,
    dhat_file: Option<String>,
}

#[derive(Serialize)]
struct Features {
    jemalloc: bool,
    cpu: bool,
    console: bool,
    dhat_heap: bool,
    tokio_unstable: bool,
    taskdump: bool,
    task_dumps_allowed: bool,
    task_hooks: bool,
}

#[derive(Serialize)]
struct IndexEntry {
    path: &'static str,
    available: bool,
    what: &'static str,
}

fn index(state: &State) -> Index {
    let jemalloc = cfg!(feature = "jemalloc");
    let dhat = cfg!(feature = "dhat-heap");
    Index {
        agent: "leakscope-agent",
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        started_unix: state
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        allocator: crate::allocator::name(),
        baked_malloc_conf: jemalloc.then_some(crate::BAKED_MALLOC_CONF),
        features: Features {
            jemalloc,
            cpu: cfg!(feature = "cpu"),
            console: cfg!(feature = "console"),
            dhat_heap: dhat,
            tokio_unstable: cfg!(tokio_unstable),
            taskdump: cfg!(feature = "taskdump"),
            task_dumps_allowed: state.task_dumps,
            task_hooks: crate::tasks::installed(),
        },
        endpoints: vec![
            IndexEntry {
                path: Endpoint::Metrics.path(),
                available: true,
                what: "process, allocator and task metrics (OpenMetrics when asked, else \
                       Prometheus text)",
            },
            IndexEntry {
                path: Endpoint::HeapStats.path(),
                available: jemalloc || dhat,
                what: "allocator counters (JSON)",
            },
            IndexEntry {
                path: Endpoint::HeapProfile.path(),
                available: jemalloc,
                what: "sampled heap profile, gzipped pprof; ?format=svg for a flamegraph",
            },
            IndexEntry {
                path: Endpoint::CpuProfile.path(),
                available: cfg!(feature = "cpu"),
                what: "CPU profile, gzipped pprof; ?seconds=N&hz=H&format=pprof|svg",
            },
            IndexEntry {
                path: Endpoint::Tasks.path(),
                available: true,
                what:
                    "tokio runtime metrics of the host runtime, and live tasks by spawn site when \
                       the runtime has the agent's task hooks (JSON)",
            },
            IndexEntry {
                path: Endpoint::TaskDump.path(),
                available: cfg!(feature = "taskdump"),
                what: "every task's parked stack, grouped by spawn site; ?seconds=N (deadline, \
                       default 10)&format=json|text; on a multi-thread runtime only when allowed \
                       (LEAKSCOPE_TASK_DUMPS=on): tokio's dump can wedge it",
            },
        ],
        dhat_file: state.dhat_file.as_ref().map(|p| p.display().to_string()),
    }
}

/// The agent's own listener: a thread with a current-thread runtime.
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn spawn_listener(addr: SocketAddr, state: Arc<State>) -> Result<Listener, AgentError> {
    let bind_err = |source| AgentError::Bind {
        what: "debug",
        addr,
        source,
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let bound = std_listener.local_addr().map_err(bind_err)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Captured here, on the host's thread, so the muted agent thread can
    // still report accept errors through the host's subscriber.
    let host_dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let thread = std::thread::Builder::new()
        .name(crate::metrics::AGENT_THREAD.into())
        .spawn(move || {
            let _quiet = crate::muted::mute_this_thread();
            // Its blocking threads (profiles, symbolizing) carry the
            // agent's name and stay, so the agent's CPU is every thread of
            // that name (`leakscope_agent_thread_cpu_seconds_total`, and
            // what the cost bench charges to the sidecar) and never falls
            // when one exits.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(2)
                .thread_name(crate::metrics::AGENT_THREAD)
                .thread_keep_alive(Duration::MAX)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::dispatcher::with_default(&host_dispatch, || {
                        tracing::error!("leakscope-agent runtime failed to start: {e}")
                    });
                    return;
                }
            };
            rt.block_on(serve(std_listener, state, stop_rx, host_dispatch));
        })
        .map_err(|e| AgentError::Thread(e.to_string()))?;
    Ok(Listener {
        addr: bound,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve(
    std_listener: std::net::TcpListener,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    host_dispatch: tracing::Dispatch,
) {
    let warn = |msg: String| {
        tracing::dispatcher::with_default(&host_dispatch, || tracing::warn!("{msg}"));
    };
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => return warn(format!("leakscope-agent listener: {e}")),
    };
    let service = AgentService::new(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(io, service.clone());
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; a
                    // leaking host is exactly when this happens.
                    warn(format!("leakscope-agent accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // In-flight requests (a CPU profile) get a short grace period.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}
