//! With the console off, the agent costs the host's tracing nothing: the
//! process's maximum level stays the host's, and tokio's TRACE spans (one
//! per task spawn and per timer under `tokio_unstable`) are not recorded.
//! Its own process: the subscriber is global, as a host installs it.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::prelude::*;

#[tokio::test]
async fn the_agent_and_an_absent_console_leave_trace_spans_off() {
    std::env::remove_var("LEAKSCOPE_CONSOLE");
    // What README.md tells a host to write.
    let console = leakscope_agent::console::layer_from_env().unwrap();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(console)
        .with(logs)
        .init();
    // Its HTTP thread runs under its own muted subscriber.
    let agent = leakscope_agent::AgentBuilder::default()
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    // Answered, so its thread is up, under its subscriber.
    let addr = agent.local_addr().unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /debug HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert_eq!(
        LevelFilter::current(),
        LevelFilter::INFO,
        "a subscriber without a level hint lifted the process's maximum level"
    );
    let span = tracing::trace_span!(parent: None, "runtime.resource", concrete_type = "Sleep");
    assert!(span.is_disabled(), "a TRACE span was recorded for no one");
    // The host's own INFO spans are still recorded.
    assert!(!tracing::info_span!("the host's").is_disabled());
    agent.shutdown().await;
}
