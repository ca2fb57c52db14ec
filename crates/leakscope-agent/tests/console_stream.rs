//! The console endpoint streams task updates to a real console-api client,
//! the same gRPC API tokio-console and the leakscope sidecar read.

use std::time::Duration;

use console_api::field::{Name, Value};
use console_api::instrument::instrument_client::InstrumentClient;
use console_api::instrument::InstrumentRequest;
use tracing_subscriber::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_named_task_with_its_spawn_location() {
    let config = leakscope_agent::console::ConsoleConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let (layer, addr) = leakscope_agent::console::spawn(&config).expect("console starts");
    tracing_subscriber::registry().with(layer).init();

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::task::Builder::new()
        .name("console-stream-test-task")
        .spawn(async move {
            let _ = rx.await;
        })
        .unwrap();

    let mut client = InstrumentClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to console endpoint");
    let mut stream = client
        .watch_updates(InstrumentRequest {})
        .await
        .expect("watch_updates")
        .into_inner();

    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(update) = stream.message().await.expect("stream message") {
            let Some(tasks) = update.task_update else { continue };
            for t in tasks.new_tasks {
                let named = t.fields.iter().any(|f| {
                    matches!(&f.name, Some(Name::StrName(n)) if n == "task.name")
                        && matches!(&f.value, Some(Value::StrVal(v) | Value::DebugVal(v)) if v.contains("console-stream-test-task"))
                });
                if named {
                    return t.location;
                }
            }
        }
        None
    })
    .await
    .expect("the named task arrived within 15 s");
    let location = found.expect("stream ended before the task arrived");
    assert!(
        location
            .file
            .as_deref()
            .unwrap_or("")
            .ends_with("console_stream.rs"),
        "spawn location {location:?}"
    );
    tx.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_taken_port_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = leakscope_agent::console::ConsoleConfig {
        addr: taken.local_addr().unwrap(),
        ..Default::default()
    };
    let err = leakscope_agent::console::spawn::<tracing_subscriber::Registry>(&config)
        .err()
        .expect("port in use");
    assert!(
        err.to_string().contains("binding the console endpoint"),
        "{err}"
    );
}
