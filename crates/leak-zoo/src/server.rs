//! `leak-zoo serve`: an ordinary hyper 1 service whose `GET /` runs the
//! mode's action.
//!
//! Besides `/`, it answers `/debug/zoo` (the ground truth, as JSON) and,
//! with `--metrics`, `/metrics`. Neither counts as a request, so scraping
//! them never changes what is being measured.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use leak_zoo::Mode;
use tokio::net::TcpListener;

use leak_zoo::modes::{self, ScratchFile, Zoo};

/// Options of `leak-zoo serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// What each request to `/` does.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to serve on, loopback only; port 0 picks a free one
    /// (printed at start).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_loopback)]
    listen: SocketAddr,
    /// leakscope-agent's debug endpoints: IP:PORT (port 0 allowed) or `off`.
    #[arg(long, default_value = "off", value_parser = parse_endpoint)]
    agent: Endpoint,
    /// tokio-console's gRPC endpoint: IP:PORT (port 0 allowed) or `off`.
    #[arg(long, default_value = "off", value_parser = parse_endpoint)]
    console: Endpoint,
    /// How long console-subscriber keeps a finished task's data (and the
    /// memory it takes, about 51 KB a task). Memory a tool watches returns
    /// only after it, so a recording's idle tail must outlast it.
    #[arg(long, default_value = "10s")]
    console_retention: humantime::Duration,
    /// Serve Prometheus text at /metrics (otherwise it is 404).
    #[arg(long)]
    metrics: bool,
    /// Bytes per action for `heap` (default 256) and the caches (default 4096).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    leak_bytes: Option<u64>,
    /// Run the action on every Nth request only (1 = every request).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
}

/// An optional address: `off`, or IP:PORT.
#[derive(Debug, Clone, Copy)]
struct Endpoint(Option<SocketAddr>);

/// A service that leaks on purpose serves loopback only, like its client:
/// on any other address a stranger could drive it out of memory.
fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not IP:PORT"))?;
    if addr.ip().to_canonical().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "refusing to serve on {addr}: the zoo leaks on purpose, so it listens on loopback only \
             (127.0.0.0/8 or [::1])"
        ))
    }
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    match s.trim() {
        "off" => Ok(Endpoint(None)),
        addr => addr
            .parse()
            .map(|a| Endpoint(Some(a)))
            .map_err(|_| format!("{addr:?} is not IP:PORT or `off`")),
    }
}

/// What every connection shares.
struct State {
    mode: Mode,
    every: u64,
    metrics: bool,
    zoo: Arc<Zoo>,
    /// Requests to `/`, all of them (also the metrics counter).
    requests: AtomicU64,
    /// Actions that succeeded.
    actions: AtomicU64,
    /// Actions that failed (and were answered 500).
    failed_actions: AtomicU64,
}

/// Runs the server until SIGTERM or Ctrl-C. Errors are start-up failures.
pub fn run(args: ServeArgs) -> Result<(), String> {
    // The console layer has to be installed before the runtime spawns
    // anything, or those tasks are never seen.
    let console_addr = match args.console.0 {
        None => None,
        Some(addr) => Some(install_console(addr, args.console_retention.into())?),
    };
    // The agent's task hooks count every spawn exactly (the sidecar reads
    // them from /debug/tasks); LEAKSCOPE_TASK_HOOKS=off leaves them out.
    let runtime = leakscope_agent::tasks::runtime()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let result = runtime.block_on(serve(args, console_addr));
    // Leaked tasks never finish by design; don't wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

fn install_console(addr: SocketAddr, retention: Duration) -> Result<SocketAddr, String> {
    use tracing_subscriber::prelude::*;
    let config = leakscope_agent::console::ConsoleConfig {
        addr,
        retention,
        ..Default::default()
    };
    let (layer, bound) = leakscope_agent::console::spawn::<tracing_subscriber::Registry>(&config)
        .map_err(|e| format!("console: {e}"))?;
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| format!("console: installing the tracing subscriber: {e}"))?;
    Ok(bound)
}

async fn serve(args: ServeArgs, console_addr: Option<SocketAddr>) -> Result<(), String> {
    let scratch = if Zoo::needs_scratch(args.mode) {
        Some(ScratchFile::create().map_err(|e| format!("creating the scratch file: {e}"))?)
    } else {
        None
    };
    let leak_bytes = args.mode.leak_bytes(args.leak_bytes);
    let zoo = Zoo::new(
        args.mode,
        leak_bytes,
        scratch.as_ref().map(|s| s.path().to_path_buf()),
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("reading the listener's address: {e}"))?;
    let agent = match args.agent.0 {
        None => None,
        Some(addr) => Some(
            leakscope_agent::AgentBuilder::default()
                .listen(Some(addr))
                .start()
                .map_err(|e| format!("agent: {e}"))?,
        ),
    };

    // The listening line comes last so it can serve as the ready line. The
    // address is a word of its own: leakscope's `{addr:PREFIX}` parses the
    // first whitespace-separated word that is an IP:PORT.
    let mut out = std::io::stdout().lock();
    let mut announce = |what: &str, addr: SocketAddr| {
        let _ = writeln!(out, "leak-zoo {what} {addr}");
        let _ = out.flush();
    };
    if let Some(addr) = console_addr {
        announce("console on", addr);
    }
    if let Some(addr) = agent.as_ref().and_then(|a| a.local_addr()) {
        announce("agent on", addr);
    }
    announce("listening on", local);
    drop(out);

    let state = Arc::new(State {
        mode: args.mode,
        every: args.every,
        metrics: args.metrics,
        zoo,
        requests: AtomicU64::new(0),
        actions: AtomicU64::new(0),
        failed_actions: AtomicU64::new(0),
    });
    accept_loop(listener, state).await?;
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_millis(500), agent.shutdown()).await;
    }
    drop(scratch);
    Ok(())
}

/// Accepts until a shutdown signal. Accept errors (EMFILE when the leak
/// has used up the fd limit, ECONNABORTED, ...) are logged at most once a
/// second and retried after a short pause: the zoo must stay up at its
/// limit, and retrying at once would spin on the pending connection.
async fn accept_loop(listener: TcpListener, state: Arc<State>) -> Result<(), String> {
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    let more = match unlogged {
                        0 => String::new(),
                        n => format!(" ({n} more since the last report)"),
                    };
                    eprintln!("leak-zoo: accept failed: {e}{more}; retrying");
                    last_log = Some(Instant::now());
                    unlogged = 0;
                } else {
                    unlogged += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            // Errors here are the client's (reset, bad request): nothing to do.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Resolves on SIGTERM (what leakscope and service managers send) or Ctrl-C.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("installing SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("installing SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn route(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let get = req.method() == Method::GET;
    match req.uri().path() {
        "/" if get => root(state).await,
        "/debug/zoo" if get => debug_zoo(state),
        "/metrics" if get && state.metrics => metrics(state),
        "/" | "/debug/zoo" => text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn root(state: &State) -> Response<Full<Bytes>> {
    let seq = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if !seq.is_multiple_of(state.every) {
        return text(StatusCode::OK, "ok\n");
    }
    match state.zoo.act(seq).await {
        Ok(()) => {
            state.actions.fetch_add(1, Ordering::Relaxed);
            text(StatusCode::OK, "ok\n")
        }
        Err(e) => {
            state.failed_actions.fetch_add(1, Ordering::Relaxed);
            eprintln!("leak-zoo: request failed: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

fn debug_zoo(state: &State) -> Response<Full<Bytes>> {
    let alive_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    // Written by hand, in a fixed field order; every value is a number,
    // null, or a mode name (plain ASCII).
    let fds = match count_fds() {
        Ok(n) => n.to_string(),
        // The fd table is full, so the directory cannot be opened.
        Err(_) => "null".to_string(),
    };
    let body = format!(
        "{{\"mode\":\"{}\",\"requests\":{},\"actions\":{},\"failed_actions\":{},\
         \"alive_tasks\":{},\"held_bytes\":{},\"fds\":{}}}",
        state.mode.name(),
        state.requests.load(Ordering::Relaxed),
        state.actions.load(Ordering::Relaxed),
        state.failed_actions.load(Ordering::Relaxed),
        alive_tasks,
        modes::held_bytes(),
        fds,
    );
    let mut resp = text(StatusCode::OK, format!("{body}\n"));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Entries in /proc/self/fd, not counting the one that reading the
/// directory itself holds open, so the number matches what an outside
/// observer of /proc/PID/fd sees at the same moment.
fn count_fds() -> std::io::Result<usize> {
    let entries = std::fs::read_dir("/proc/self/fd")?.count();
    Ok(entries.saturating_sub(1))
}

fn metrics(state: &State) -> Response<Full<Bytes>> {
    let body = format!(
        "# HELP http_requests_total Requests to / served by leak-zoo.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total {}\n",
        state.requests.load(Ordering::Relaxed)
    );
    let mut resp = text(StatusCode::OK, body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_listens_on_loopback_only() {
        assert!(parse_loopback("127.0.0.1:0").is_ok());
        assert!(parse_loopback("127.8.9.10:8080").is_ok());
        assert!(parse_loopback("[::1]:0").is_ok());
        assert!(parse_loopback("[::ffff:127.0.0.1]:0").is_ok());
        let err = parse_loopback("0.0.0.0:8080").unwrap_err();
        assert!(err.contains("loopback only"), "{err}");
        assert!(parse_loopback("192.168.1.2:80").is_err());
        assert!(parse_loopback("[::]:80").is_err());
        assert!(parse_loopback("localhost:80").is_err());
    }
}
