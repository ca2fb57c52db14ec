//! `download-server`: serve a directory, or print a signed URL.

use std::io::Write;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use download_server::scenarios::Variant;
use download_server::signing::Signer;
use download_server::{Config, Server};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

#[cfg(all(feature = "plain-jemalloc", feature = "agent"))]
compile_error!(
    "download-server: `plain-jemalloc` is the build without the agent (the cost \
     benchmark's baseline); build it with --no-default-features --features plain-jemalloc"
);

/// The baseline build's allocator: jemalloc as the agent's build has it,
/// without the agent's counters, heap profiling or task hooks.
#[cfg(all(feature = "plain-jemalloc", not(feature = "agent")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed, expiring URL for a path served by `--secret` servers.
    Sign(SignArgs),
}

#[derive(Args)]
struct SecretArgs {
    /// HMAC secret for signed URLs (visible in `ps`; prefer --secret-file or
    /// the environment variable).
    #[arg(long, env = "DOWNLOAD_SERVER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// File holding the HMAC secret (trailing newline ignored).
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn load(&self) -> Result<Option<Vec<u8>>> {
        let secret = match (&self.secret, &self.secret_file) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path)
                    .with_context(|| format!("reading secret file {}", path.display()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            (None, None) => return Ok(None),
        };
        if secret.len() < 16 {
            bail!("the secret must be at least 16 bytes");
        }
        Ok(Some(secret))
    }
}

/// A duration flag, at most a year: longer is a typo or a probe, and
/// `Instant + d` panics a worker past the clock's range.
fn timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    (d <= download_server::MAX_TIMEOUT)
        .then_some(d)
        .ok_or_else(|| format!("{s:?} is longer than a year"))
}

#[derive(Args)]
struct ServeArgs {
    /// Directory to serve (required to serve).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port. The bound address is
    /// printed on stdout as `listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Requests answered or streaming at once; excess get 503.
    #[arg(long, default_value_t = NonZeroUsize::new(1024).expect("1024 > 0"))]
    max_inflight: NonZeroUsize,
    /// Files kept open between requests (0: none); each costs one fd.
    /// Default: a quarter of RLIMIT_NOFILE, at most 1024.
    #[arg(long, value_name = "FILES")]
    open_file_cache: Option<usize>,
    /// ZIP archives streaming at once; excess get 503.
    #[arg(long, default_value_t = NonZeroUsize::new(16).expect("16 > 0"))]
    max_zip_streams: NonZeroUsize,
    /// Requests per second per client IP (burst of the same size); excess get 429.
    #[arg(long)]
    rate_per_ip: Option<NonZeroU32>,
    /// Time to send a request head; also the idle keep-alive limit.
    #[arg(long, default_value = "30s", value_parser = timeout)]
    header_read_timeout: Duration,
    /// Time a response may make no write progress before the connection drops.
    #[arg(long, default_value = "60s", value_parser = timeout)]
    stall_timeout: Duration,
    /// How long shutdown waits for in-flight responses.
    #[arg(long, default_value = "10s", value_parser = timeout)]
    shutdown_timeout: Duration,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    debug: DebugArgs,
    /// Which handler the leak-scenario routes `/s/{scenario}/…` run. One per
    /// process, so measurements never mix; without it those routes are 404.
    #[arg(long, value_enum)]
    variant: Option<Variant>,
    /// Print the leak scenarios as JSON (name, route, resource, description,
    /// source, file size, load pattern) and exit.
    #[arg(long)]
    list_scenarios: bool,
}

/// leakscope-agent's endpoints (docs/agent.md, "Endpoints").
#[derive(Args)]
struct DebugArgs {
    /// Serve /debug/ endpoints (heap stats and profiles, CPU profiles,
    /// runtime metrics) on this address, printed as `debug listening on ADDR`.
    /// Loopback only unless --debug-allow-remote.
    #[arg(long, value_name = "ADDR")]
    debug_listen: Option<SocketAddr>,
    /// Permit a non-loopback --debug-listen / --console address.
    #[arg(long)]
    debug_allow_remote: bool,
    /// Feed tokio-console on ADDR (default 127.0.0.1:6669). Without the
    /// flag, LEAKSCOPE_CONSOLE=ADDR|on does the same.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:6669")]
    console: Option<SocketAddr>,
    /// Where a dhat build writes its heap profile on shutdown.
    #[arg(long, value_name = "PATH", default_value = leakscope_wire::DHAT_FILE)]
    dhat_file: PathBuf,
}

#[derive(Args)]
struct SignArgs {
    /// The decoded request path, e.g. "/files/reports/q3 summary.pdf".
    path: String,
    /// How long the URL stays valid.
    #[arg(long, default_value = "1h", value_parser = timeout)]
    ttl: Duration,
    /// Scheme and authority to prefix, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "")]
    base: String,
    /// A query parameter the URL carries, signed with it (repeat for
    /// several), e.g. --param compression=deflated. The signature covers
    /// every parameter: one added or changed later is refused.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = param)]
    params: Vec<(String, String)>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Characters left as-is in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, _)) if k.is_empty() || k == "expires" || k == "sig" => {
            Err(format!("{k:?} cannot be a --param"))
        }
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn sign(args: &SignArgs) -> Result<()> {
    let secret = args
        .secret
        .load()?
        .context("sign needs --secret, --secret-file or DOWNLOAD_SERVER_SECRET")?;
    if !["/files/", "/zip/", "/s/"]
        .iter()
        .any(|p| args.path.starts_with(p))
    {
        bail!("the path must start with /files/, /zip/ or /s/");
    }
    let expires = (SystemTime::now() + args.ttl)
        .duration_since(UNIX_EPOCH)?
        .as_secs();
    let sig = Signer::new(secret).sign_with(args.path.as_bytes(), expires, &args.params);
    let encoded: Vec<String> = args
        .path
        .split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &args.params {
        query.append_pair(k, v);
    }
    query.append_pair("expires", &expires.to_string());
    query.append_pair("sig", &sig);
    println!(
        "{}{}?{}",
        args.base.trim_end_matches('/'),
        encoded.join("/"),
        query.finish()
    );
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now and returns the future that
/// resolves on either. Installed before `listening on` is printed: a handler
/// registered on the future's first poll leaves a window in which a
/// supervisor's SIGTERM, sent as soon as the server says it is ready, takes
/// the default action and kills downloads in flight.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received");
    })
}

async fn serve(args: ServeArgs, console_addr: Option<SocketAddr>) -> Result<()> {
    let root = args
        .root
        .context("--root DIR is required (the directory to serve)")?;
    #[cfg(feature = "agent")]
    let agent = leakscope_agent::Agent::builder()
        .listen(args.debug.debug_listen)
        .allow_remote(args.debug.debug_allow_remote)
        .dhat_file(&args.debug.dhat_file)
        .start()
        .context(
            "starting the debug agent (--debug-listen; --debug-allow-remote permits non-loopback)",
        )?;
    #[cfg(not(feature = "agent"))]
    if let Some(addr) = args.debug.debug_listen {
        bail!("--debug-listen {addr}: this build has no agent (built without the `agent` feature)");
    }
    let mut config = Config::new(root);
    config.listen = args.listen;
    config.max_inflight = args.max_inflight.get();
    config.max_zip_streams = args.max_zip_streams.get();
    config.open_file_cache = args.open_file_cache;
    config.rate_per_ip = args.rate_per_ip;
    config.header_read_timeout = args.header_read_timeout;
    config.stall_timeout = args.stall_timeout;
    config.shutdown_timeout = args.shutdown_timeout;
    config.secret = args.secret.load()?;
    config.variant = args.variant;
    let server = Server::bind(config).await?;
    let shutdown = shutdown_signal()?;
    let addr = server.local_addr();
    tracing::info!(%addr, "serving");
    // Lines on stdout that tools parse; `listening on` comes last and means
    // ready.
    let mut stdout = std::io::stdout().lock();
    #[cfg(feature = "agent")]
    if let Some(debug) = agent.local_addr() {
        writeln!(stdout, "debug listening on {debug}")?;
    }
    if let Some(console) = console_addr {
        writeln!(stdout, "console listening on {console}")?;
    }
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);
    server.run(shutdown).await;
    #[cfg(feature = "agent")]
    agent.shutdown().await;
    Ok(())
}

/// Logs to stderr (RUST_LOG, default info) and, when asked, feeds
/// tokio-console. The env filter sits on the log layer only: as a global
/// filter it would also hide tokio's task spans from the console.
fn init_tracing(debug: &DebugArgs) -> Result<Option<SocketAddr>> {
    use tracing_subscriber::prelude::*;
    let (layer, addr) = console_layer(debug)?.unzip();
    // No console, no console layer: an absent one (`Option::None`) enables
    // every callsite, and the registry would store a span per task spawn
    // and timer for no one (4.5% of the CPU at 4,000 requests/s).
    match layer {
        Some(console) => tracing_subscriber::registry()
            .with(console)
            .with(log_layer())
            .init(),
        None => tracing_subscriber::registry().with(log_layer()).init(),
    }
    Ok(addr)
}

/// Logs to stderr, filtered by RUST_LOG (default info).
fn log_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter)
}

/// The console's layer, boxed: its type is the agent's to choose.
type ConsoleLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// tokio-console's layer and address, when asked for.
#[cfg(feature = "agent")]
fn console_layer(debug: &DebugArgs) -> Result<Option<(ConsoleLayer, SocketAddr)>> {
    use leakscope_agent::console::{self, ConsoleConfig};
    let config = match debug.console {
        Some(addr) => Some(ConsoleConfig {
            addr,
            allow_remote: debug.debug_allow_remote,
            ..ConsoleConfig::default()
        }),
        None => ConsoleConfig::from_env()?,
    };
    let Some(config) = config else {
        return Ok(None);
    };
    let (layer, addr) = console::spawn(&config).context("starting the console endpoint")?;
    Ok(Some((Box::new(layer), addr)))
}

/// Without the agent there is no console: asking for one is an error.
#[cfg(not(feature = "agent"))]
fn console_layer(debug: &DebugArgs) -> Result<Option<(ConsoleLayer, SocketAddr)>> {
    match debug.console {
        Some(addr) => {
            bail!("--console {addr}: this build has no agent (built without the `agent` feature)")
        }
        None => Ok(None),
    }
}

/// What Runtime::new() builds, plus (with the agent) its task hooks: live
/// tasks by spawn site at /debug/tasks, counted exactly.
fn runtime() -> tokio::runtime::Builder {
    #[cfg(feature = "agent")]
    return leakscope_agent::tasks::runtime();
    #[cfg(not(feature = "agent"))]
    {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.enable_all();
        b
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sign(args)) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .init();
            sign(&args)
        }
        None if cli.serve.list_scenarios => {
            let mut json = serde_json::to_string_pretty(&download_server::scenarios::listing())?;
            json.push('\n');
            match std::io::stdout().lock().write_all(json.as_bytes()) {
                // `| head` closing the pipe is not an error worth a trace.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        None => {
            let console = init_tracing(&cli.serve.debug)?;
            runtime()
                .build()
                .context("starting the tokio runtime")?
                .block_on(serve(cli.serve, console))
        }
    }
}
