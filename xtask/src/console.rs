//! `cargo xtask console`: the leaky server with console-subscriber on, under
//! a light mixed load, for a developer to watch with tokio-console.
//!
//! The leaky variant, so there is something to see: the task-leak
//! scenario's progress tasks pile up at one spawn location while the other
//! scenarios' tasks come and go.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use download_server::scenarios;

use crate::catalogue::{self, Scenario, ScenarioExt};
use crate::workspace::{self, Bins};

#[derive(Args)]
pub struct ConsoleArgs {
    /// Where console-subscriber listens (tokio-console's default address)
    #[arg(long, default_value = "127.0.0.1:6669")]
    console_addr: SocketAddr,
    /// Stop by itself after this long [default: 1h]
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    duration: Duration,
}

/// The light mixed load: scenario, requests at once, requests per second.
/// Slow enough that console-subscriber never drops events and a person can
/// follow the task list.
const MIX: &[(&Scenario, u32, u32)] = &[
    (&scenarios::TASK_LEAK_ON_DISCONNECT, 2, 5),
    (&scenarios::UNBOUNDED_SESSION_MAP, 1, 20),
    (&scenarios::BUFFER_CHURN, 1, 2),
];

pub fn run(args: ConsoleArgs) -> ExitCode {
    match console(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask console: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn console(args: ConsoleArgs) -> Result<()> {
    let bins = workspace::build_release()?;
    let scenarios: Vec<&Scenario> = MIX.iter().map(|(s, _, _)| *s).collect();
    let data = workspace::target_dir().join("leakscope-profile-data");
    catalogue::generate(&data, &scenarios)?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&stop);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }

    let mut children = Children(Vec::new());
    let (server, addr, debug) = start_server(&bins, &data, args.console_addr)?;
    children.0.push(server);
    for (s, concurrency, rate) in MIX {
        children.0.push(start_load(
            &bins,
            s,
            addr,
            *concurrency,
            *rate,
            args.duration,
        )?);
    }

    println!(
        "\nThe download server (leaky variant) is at http://{addr}, under a light load:\n\
         {mix}\n\
         \n\
         console-subscriber listens on {console}. Attach with:\n\
         \n    tokio-console http://{console}\n\n\
         (install it once with `cargo install tokio-console --locked`, ~2.5 min).\n\
         In the Tasks view, sort by Total (t) and watch the tasks spawned at\n\
         task_leak.rs pile up: every aborted download leaves one behind.\n\
         Heap stats and profiles: http://{debug}/debug/pprof/heap (the agent).\n\
         \n\
         Ctrl-C stops everything (or it stops by itself after {dur}).",
        mix = MIX
            .iter()
            .map(|(s, c, r)| format!("  {}: {c} at once, {r} per second", s.name))
            .collect::<Vec<_>>()
            .join("\n"),
        console = args.console_addr,
        dur = humantime::format_duration(args.duration),
    );

    let started = Instant::now();
    let outcome = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        if started.elapsed() >= args.duration {
            break Ok(());
        }
        if let Some(status) = children.0[0].try_wait()? {
            break Err(anyhow::anyhow!("the server exited ({status})"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("xtask console: stopping");
    children.stop();
    outcome
}

fn start_server(
    bins: &Bins,
    data: &std::path::Path,
    console: SocketAddr,
) -> Result<(Child, SocketAddr, SocketAddr)> {
    let mut server = Command::new(&bins.server)
        .arg("--root")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0"])
        .args(["--variant", "leaky", "--console"])
        .arg(console.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bins.server.display()))?;
    let stdout = server.stdout.take().expect("piped");
    let mut debug = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the server's output")?;
        if let Some(a) = line.strip_prefix("debug listening on ") {
            debug = a.trim().parse().ok();
        } else if let Some(a) = line.strip_prefix("listening on ") {
            let addr: SocketAddr = a.trim().parse().context("the server's address")?;
            let debug = debug.context("the server printed no debug address")?;
            return Ok((server, addr, debug));
        }
    }
    let status = server.wait()?;
    bail!(
        "the server exited ({status}) before it was ready; is {console} already in use \
         (another console session)?"
    )
}

fn start_load(
    bins: &Bins,
    s: &Scenario,
    addr: SocketAddr,
    concurrency: u32,
    rate: u32,
    duration: Duration,
) -> Result<Child> {
    Command::new(&bins.leakscope)
        .args(["load", "--quiet"])
        .args(["--load", &s.load.pattern.to_string()])
        .args(["--url", &format!("http://{addr}{}", s.url_path())])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--rate", &rate.to_string()])
        .args([
            "--load-duration",
            &format!("{}s", duration.as_secs().max(1)),
        ])
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the {} load", s.name))
}

/// Every child stopped on the way out, even on an error path.
struct Children(Vec<Child>);

impl Children {
    fn stop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                if let Ok(pid) = i32::try_from(c.id()) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    }
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}
