//! The smallest useful adoption of leakscope-agent: a hyper "hello" service
//! whose `main` gains debug endpoints. The lines marked `// agent` are all
//! a service needs; the rest is the service itself.
//!
//! ```text
//! cargo run -p leakscope-examples --bin agent-adoption
//! curl -s 127.0.0.1:6060/debug/heap/stats
//! curl -s -o heap.pb.gz 127.0.0.1:6060/debug/pprof/heap
//! curl -s -o cpu.pb.gz '127.0.0.1:6060/debug/pprof/profile?seconds=5'
//! curl -s 127.0.0.1:6060/debug/tasks                    # live tasks by spawn site
//! curl -s '127.0.0.1:6060/debug/tasks/dump?format=text' # where each task is parked
//! LEAKSCOPE_CONSOLE=on cargo run -p leakscope-examples --bin agent-adoption  # then: tokio-console
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tracing_subscriber::{filter::LevelFilter, prelude::*};

fn main() -> anyhow::Result<()> {
    // agent: `#[tokio::main]`'s runtime, plus hooks that count live tasks by spawn site
    leakscope_agent::tasks::runtime().build()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let console = leakscope_agent::console::layer_from_env()?; // agent
    tracing_subscriber::registry()
        .with(console) // agent
        // The console turns on tokio's own trace events; logs stay at INFO.
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO))
        .init();
    let agent = leakscope_agent::AgentBuilder::from_env()?.start()?; // agent
    tracing::info!(debug = ?agent.local_addr(), "agent up"); // agent

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("serving on http://127.0.0.1:3000");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        }
    }
    agent.shutdown().await; // agent: in dhat mode this writes dhat-heap.json
    Ok(())
}
