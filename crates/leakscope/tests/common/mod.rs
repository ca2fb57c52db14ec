//! A real target for the sidecar's tests: the download server (with
//! leakscope-agent and console-subscriber) in a process of its own, the
//! test-targets package's `instrumented-server`, so the sidecar watches
//! something it can see leak, answer, and die.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The command that runs the target: the instrumented download server of
/// the test-targets package (configured by the variables of
/// [`test_targets::server`]).
pub fn target_command() -> Vec<String> {
    let bin = test_targets::path(test_targets::Bin::InstrumentedServer);
    vec![bin.to_str().unwrap().to_string()]
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
        .env(test_targets::server::ROOT_ENV, root)
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
    let agent = get(test_targets::server::AGENT_LINE);
    let console = get(test_targets::server::CONSOLE_LINE);
    let server = get(test_targets::server::SERVER_LINE);
    Target {
        child,
        agent,
        console,
        server,
    }
}
