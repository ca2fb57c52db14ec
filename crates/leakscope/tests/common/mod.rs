//! A real target for the sidecar's tests: this test binary, re-executed,
//! runs the download server (with leakscope-agent and console-subscriber)
//! in a process of its own, so the sidecar watches something it can see
//! leak, answer, and die.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use tracing_subscriber::prelude::*;

/// Set to the directory to serve, in the re-executed child.
pub const TARGET_ROOT_ENV: &str = "LEAKSCOPE_TEST_TARGET_ROOT";
/// "leaky" or "fixed": the scenario variant the child serves.
pub const TARGET_VARIANT_ENV: &str = "LEAKSCOPE_TEST_TARGET_VARIANT";
/// Set (to anything) for a current-thread runtime with the agent's task
/// hooks, which the sidecar then reads tasks from, and task dumps allowed
/// (a current-thread runtime is dumped from inside, so the multi-thread
/// dump's barrier, which a loaded machine can wedge, is not involved);
/// unset, a multi-thread runtime and tasks from the console.
pub const TARGET_HOOKS_ENV: &str = "LEAKSCOPE_TEST_TARGET_HOOKS";
/// "N,MIB,FILE": once FILE exists, the child spawns N tasks (from this file)
/// that end a second later, and allocates MIB MiB it keeps.
pub const TARGET_WORK_ENV: &str = "LEAKSCOPE_TEST_TARGET_WORK";

/// The body of the `target_process` test each test binary defines: returns
/// at once unless re-executed as the target. Prints, each on its own line
/// (after a newline, since libtest starts a line of its own first):
/// `agent listening on ADDR`, `console listening on ADDR`, `listening on ADDR`.
/// Exits 0 on SIGTERM, like a well-behaved service.
pub fn target_process() {
    let Ok(root) = std::env::var(TARGET_ROOT_ENV) else {
        return;
    };
    let hooks = std::env::var_os(TARGET_HOOKS_ENV).is_some();
    let rt = if hooks {
        let mut b = tokio::runtime::Builder::new_current_thread();
        leakscope_agent::tasks::install(b.enable_all())
            .build()
            .unwrap()
    } else {
        tokio::runtime::Runtime::new().unwrap()
    };
    rt.block_on(async move {
        let config = leakscope_agent::console::ConsoleConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        let (layer, console) = leakscope_agent::console::spawn(&config).unwrap();
        tracing_subscriber::registry().with(layer).init();
        let agent = leakscope_agent::Agent::builder()
            .task_dumps(hooks)
            .listen(Some("127.0.0.1:0".parse().unwrap()))
            .start()
            .unwrap();
        let mut c = download_server::Config::new(root);
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.variant = std::env::var(TARGET_VARIANT_ENV)
            .ok()
            .map(|v| clap::ValueEnum::from_str(&v, false).unwrap());
        let server = download_server::Server::bind(c).await.unwrap();
        println!();
        println!("agent listening on {}", agent.local_addr().unwrap());
        println!("console listening on {console}");
        println!("listening on {}", server.local_addr());
        if let Ok(work) = std::env::var(TARGET_WORK_ENV) {
            let mut parts = work.split(',');
            let n: usize = parts.next().unwrap().parse().unwrap();
            let mib: usize = parts.next().unwrap().parse().unwrap();
            let go = std::path::PathBuf::from(parts.next().unwrap());
            tokio::spawn(async move {
                while !go.exists() {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                for _ in 0..n {
                    tokio::spawn(tokio::time::sleep(std::time::Duration::from_millis(1000)));
                }
                let held = std::hint::black_box(vec![1u8; mib << 20]);
                std::future::pending::<()>().await;
                drop(held);
            });
        }
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        server
            .run(async move {
                term.recv().await;
            })
            .await;
    });
    std::process::exit(0);
}

/// The command that runs this test binary as the target.
pub fn target_command() -> Vec<String> {
    vec![
        std::env::current_exe()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string(),
        "--exact".into(),
        "target_process".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

pub struct Target {
    pub child: Child,
    pub agent: String,
    pub console: String,
    pub server: String,
}

/// Starts the target directly (for tests of the library parts).
pub fn spawn_target(root: &std::path::Path) -> Target {
    let cmd = target_command();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env(TARGET_ROOT_ENV, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut get = |prefix: &str| loop {
        let line = lines.next().expect("target output").unwrap();
        if let Some(v) = line.strip_prefix(prefix) {
            return format!("http://{v}");
        }
    };
    let agent = get("agent listening on ");
    let console = get("console listening on ");
    let server = get("listening on ");
    Target {
        child,
        agent,
        console,
        server,
    }
}
