//! The download server with leakscope-agent (jemalloc heap profiles, task
//! hooks and dumps) and, unless told otherwise, a tokio-console layer: a
//! real service for the sidecar to watch leak, answer and die. Configured
//! by the environment ([`test_targets::server`]), so a test can hand the
//! sidecar this binary as its command. Exits 0 on SIGTERM, as a
//! well-behaved service does.

use std::path::PathBuf;
use std::time::Duration;

use test_targets::server::*;
use tracing_subscriber::prelude::*;

fn main() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        eprintln!("instrumented-server: set {ROOT_ENV} to the directory to serve");
        std::process::exit(2);
    };
    let hooks = std::env::var_os(HOOKS_ENV).is_some();
    let rt = if hooks {
        let mut b = tokio::runtime::Builder::new_current_thread();
        leakscope_agent::tasks::install(b.enable_all())
            .build()
            .expect("a current-thread runtime")
    } else {
        tokio::runtime::Runtime::new().expect("a multi-thread runtime")
    };
    rt.block_on(serve(root, hooks));
}

async fn serve(root: String, hooks: bool) {
    // The console layer is the process's subscriber before anything spawns.
    let console = std::env::var_os(NO_CONSOLE_ENV).is_none().then(|| {
        let config = leakscope_agent::console::ConsoleConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        let (layer, console) = leakscope_agent::console::spawn(&config).unwrap();
        tracing_subscriber::registry().with(layer).init();
        console
    });
    let agent = leakscope_agent::Agent::builder()
        .task_dumps(hooks)
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let mut c = download_server::Config::new(root);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.variant = std::env::var(VARIANT_ENV)
        .ok()
        .map(|v| clap::ValueEnum::from_str(&v, false).unwrap());
    let server = download_server::Server::bind(c).await.unwrap();
    // In the order the lines' doc gives: readers may wait for each in turn.
    println!("{AGENT_LINE}{}", agent.local_addr().unwrap());
    if let Some(console) = console {
        println!("{CONSOLE_LINE}{console}");
    }
    // Before the ready line: a SIGTERM sent on it must find the handler.
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    println!("{SERVER_LINE}{}", server.local_addr());
    if let Ok(work) = std::env::var(WORK_ENV) {
        tokio::spawn(work_on_signal(&work));
    }
    server
        .run(async move {
            term.recv().await;
        })
        .await;
}

/// The work `WORK_ENV` asks for ("N,MIB,FILE"), once FILE exists: N tasks
/// that end a second later, and MIB MiB allocated here and kept, so the
/// heap profile names this function.
fn work_on_signal(work: &str) -> impl std::future::Future<Output = ()> {
    let mut parts = work.split(',');
    let n: usize = parts.next().unwrap().parse().unwrap();
    let mib: usize = parts.next().unwrap().parse().unwrap();
    let go = PathBuf::from(parts.next().unwrap());
    async move {
        while !go.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..n {
            tokio::spawn(tokio::time::sleep(Duration::from_millis(1000)));
        }
        let held = std::hint::black_box(vec![1u8; mib << 20]);
        std::future::pending::<()>().await;
        drop(held);
    }
}
