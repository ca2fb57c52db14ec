//! The accept loop, per-connection setup and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;
use crate::root::ServeRoot;
use crate::sendfile::{Pending, SendfileStream};
use crate::stall::StallTimeout;

/// hyper's per-connection buffer cap: bounds the request head (larger heads
/// get 431) and how much response body hyper queues ahead of the socket (one
/// [`crate::body::CHUNK`]), which keeps a download's memory bounded.
pub const MAX_BUF_SIZE: usize = crate::body::CHUNK;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the root directory {path}: {source}")]
    Root {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
}

pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    config: Config,
}

/// Connections the kernel queues before they are accepted; it caps this at
/// `net.core.somaxconn` (4096 on current kernels). `TcpListener::bind`
/// asks for 128, and a thousand clients connecting at once then lose SYNs
/// and wait a second to retry; nginx asks for 511.
const LISTEN_BACKLOG: u32 = 4096;

/// `TcpListener::bind` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As TcpListener::bind does: a restarted server rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        config.check().map_err(ServerError::Config)?;
        let root = ServeRoot::open(&config.root)
            .map_err(|source| ServerError::Root {
                path: config.root.clone(),
                source,
            })?
            .with_open_files(
                config
                    .open_file_cache
                    .unwrap_or_else(crate::open_files::OpenFiles::default_capacity),
            );
        let listener = listen(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let app = Arc::new(App::new(&config, root));
        Ok(Self {
            listener,
            app,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives
    /// in-flight responses `shutdown_timeout` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            app,
            config,
        } = self;
        let graceful = GracefulShutdown::new();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(MAX_BUF_SIZE);
        let pruner = {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    app.prune();
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE/ENFILE must not spin the loop or end the
                        // server: back off and let connections close.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            // File bodies reach this connection's socket with sendfile(2):
            // the stream and the responses share the queue of ranges.
            let pending = Pending::default();
            let stream = SendfileStream::new(stream, pending.clone());
            let io = TokioIo::new(StallTimeout::new(stream, config.stall_timeout));
            let app = Arc::clone(&app);
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(pending.clone());
                let app = Arc::clone(&app);
                async move { Ok::<_, std::convert::Infallible>(app.handle(peer.ip(), req).await) }
            });
            let conn = graceful.watch(builder.serve_connection(io, service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        pruner.abort();
        tracing::info!(inflight = app.inflight(), "shutting down");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(config.shutdown_timeout) => {
                tracing::warn!(timeout = ?config.shutdown_timeout, "shutdown deadline passed; dropping connections");
            }
        }
    }
}
