//! What `record` and `run` share: building the sources, running the
//! recording with the load beside it, and the closing summary.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytesize::ByteSize;
use leakscope::recorder::{self, unix_ms, Settings, Sources, Stopped};
use leakscope::sources::agent::AgentSource;
use leakscope::sources::console::ConsoleSource;
use leakscope::sources::metrics::MetricsSource;
use leakscope::sources::procfs::ProcSource;
use leakscope_load::{Counters, Load, Pattern, Plan, Summary};
use leakscope_rundir::{Meta, RunWriter, SCHEMA_VERSION};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::args::{LoadArgs, RecordingArgs};
use super::progress::Progress;

/// Checks what can be checked before anything starts.
pub fn check(rec: &RecordingArgs, load: &LoadArgs) -> Result<()> {
    if load.load.is_some() && load.urls.is_empty() {
        bail!("--load needs at least one --url to send requests to");
    }
    if load.requests == Some(0) {
        bail!("--requests 0 would send nothing");
    }
    if let (Some(d), Some(l)) = (rec.duration, load.load_duration) {
        if l > d {
            bail!(
                "--load-duration ({l:?}) is longer than --duration ({d:?}); the load would be cut"
            );
        }
    }
    if rec.out.exists()
        && std::fs::read_dir(&rec.out)
            .with_context(|| format!("reading {}", rec.out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already holds files; a recording is never overwritten, choose a new --out",
            rec.out.display()
        );
    }
    Ok(())
}

pub fn meta(command: Vec<String>, pid: u32, rec: &RecordingArgs) -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        leakscope_version: env!("CARGO_PKG_VERSION").to_string(),
        command,
        pid,
        labels: rec.labels.iter().cloned().collect(),
        host: leakscope::host::host(),
        interval_ms: rec.interval.as_millis() as u64,
        git_revision: leakscope::host::git_revision(),
        started_unix_ms: unix_ms(),
        ended_unix_ms: None,
        target_end: None,
        sources: Default::default(),
        limits: Default::default(),
        oom_kills: None,
        console_retention_ms: rec
            .console_retention
            .or_else(|| leakscope::environ::console_retention(pid))
            .map(|d| d.as_millis() as u64),
    }
}

/// The load's plan; URLs go through `resolve` ({addr} placeholders).
pub fn plan(
    load: &LoadArgs,
    duration: Option<Duration>,
    resolve: &dyn Fn(&str) -> Result<String>,
) -> Result<Option<Plan>> {
    if load.urls.is_empty() {
        return Ok(None);
    }
    let urls = load
        .urls
        .iter()
        .map(|u| {
            let u = resolve(u)?;
            u.parse()
                .with_context(|| format!("--url {u:?} is not a URL"))
        })
        .collect::<Result<Vec<_>>>()?;
    let plan = Plan {
        urls,
        pattern: load.load.unwrap_or(Pattern::Full),
        concurrency: load.concurrency,
        duration: load
            .load_duration
            .or(duration)
            .unwrap_or(Duration::from_secs(30)),
        max_requests: load.requests,
        request_timeout: load.request_timeout,
        rate: load.rate,
    };
    plan.validate()?;
    let wanted = u64::from(plan.concurrency.max());
    if let Some((cap, why)) = leakscope::limits::load_capacity() {
        if wanted > cap {
            bail!(
                "--concurrency {wanted} needs {wanted} sockets at once, but {why}: at most {cap}"
            );
        }
    }
    Ok(Some(plan))
}

pub fn sources(
    pid: i32,
    rec: &RecordingArgs,
    resolve: &dyn Fn(&str) -> Result<String>,
    load: Option<Arc<Counters>>,
) -> Result<Sources> {
    let proc = ProcSource::new(pid).with_context(|| format!("watching process {pid}"))?;
    let t = rec.source_timeout;
    Ok(Sources {
        proc,
        agent: rec
            .agent
            .as_deref()
            .map(|u| Ok::<_, anyhow::Error>(AgentSource::new(&resolve(u)?, t)))
            .transpose()?,
        console: rec
            .console
            .as_deref()
            .map(|u| {
                Ok::<_, anyhow::Error>(ConsoleSource::spawn(
                    &resolve(u)?,
                    Duration::from_millis(500),
                ))
            })
            .transpose()?,
        metrics: rec
            .metrics
            .as_deref()
            .map(|u| {
                Ok::<_, anyhow::Error>(MetricsSource::new(&resolve(u)?, &rec.metrics_counter, t))
            })
            .transpose()?,
        load,
    })
}

pub struct Outcome {
    pub stopped: Stopped,
    pub load: Option<Summary>,
    pub samples: u64,
}

/// Records until the duration, the load's end plus `settle`, a signal, or
/// the target's end. The load starts after the first sample, so every run
/// has a baseline taken before any request.
pub async fn record(
    writer: &mut RunWriter,
    sources: &Sources,
    rec: &RecordingArgs,
    plan: Option<Plan>,
    settle: Duration,
    quiet: bool,
) -> Result<Outcome> {
    let settings = Settings {
        interval: rec.interval,
        duration: rec.duration,
        heap_profile_every: Some(rec.heap_profile_every),
        task_dump: rec.task_dump,
    };
    // First: an error here must leave nothing spawned behind it.
    let signalled = shutdown_signal()?;
    let first_tick = Arc::new(Notify::new());
    let load_ended = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let has_load = plan.is_some();
    let load_task = plan.map(|plan| {
        let counters = sources.load.clone().unwrap_or_default();
        let (first_tick, load_ended, cancel) = (
            Arc::clone(&first_tick),
            Arc::clone(&load_ended),
            cancel.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = first_tick.notified() => {}
                _ = cancel.cancelled() => return None,
            }
            let load = match Load::start_with(plan, counters) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("the load could not start: {e}");
                    return None;
                }
            };
            // Cut short (duration reached, target gone, a signal), the load
            // still ends with its summary: a run whose requests all failed
            // must say so whenever it stops.
            let stop = load.stop_handle();
            tokio::spawn(async move {
                cancel.cancelled().await;
                stop.cancel();
            });
            let summary = load.finish().await;
            load_ended.notify_one();
            Some(summary)
        })
    });
    let mut progress = Progress::new(quiet, rec.duration);
    let stop = async {
        let load_done = async {
            if has_load {
                load_ended.notified().await;
                tokio::time::sleep(settle).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = signalled => Stopped::Signal,
            _ = load_done => Stopped::LoadEnded,
        }
    };
    let stopped = recorder::record(writer, sources, &settings, stop, |s| {
        if progress.samples == 0 {
            first_tick.notify_one();
        }
        progress.tick(s);
    })
    .await?;
    progress.finish();
    // A load still running (duration reached, target gone, signal) is cut
    // here; its counts so far are in the samples.
    let load = match load_task {
        Some(task) => {
            if !task.is_finished() {
                cancel.cancel();
            }
            task.await.ok().flatten()
        }
        None => None,
    };
    Ok(Outcome {
        stopped,
        load,
        samples: progress.samples,
    })
}

/// Ctrl-C, SIGTERM, or SIGHUP (the terminal closed): each ends the
/// recording the graceful way, the target stopped and the run directory
/// finished. The handlers are installed when this is called, not on the
/// future's first poll, so a signal that comes early is not the default
/// action (death with the run unfinished).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind| signal(kind).context("installing a signal handler");
    let mut int = install(SignalKind::interrupt())?;
    let mut term = install(SignalKind::terminate())?;
    let mut hup = install(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

pub fn print_summary(writer: &RunWriter, outcome: &Outcome, target: &str) {
    let meta = writer.meta();
    let secs = meta.recorded_secs().unwrap_or(0.0);
    let why = match outcome.stopped {
        Stopped::Duration => "duration reached",
        Stopped::Signal => "stopped by a signal",
        Stopped::LoadEnded => "the load ended and settled",
        Stopped::TargetGone => "target gone",
    };
    tell!(
        "recorded {} samples over {secs:.1}s ({why}); target {target}",
        outcome.samples
    );
    tell!(
        "  {:<8} {:>8} {:>7} {:>10}  first error",
        "source",
        "samples",
        "failed",
        "ms/sample"
    );
    for (name, info) in &meta.sources {
        tell!(
            "  {name:<8} {:>8} {:>7} {:>10.3}  {}",
            info.samples,
            info.failed,
            info.mean_cost_ms,
            info.error.as_deref().unwrap_or("")
        );
    }
    if let Some(l) = &outcome.load {
        print_load(l);
    }
    say!("{}", writer.dir().display());
}

/// A run whose load mostly failed, or whose target died by itself, is not
/// a recording of the service at work: `run` says so and exits non-zero
/// (after writing everything, so the run directory shows what happened).
pub fn usable(outcome: &Outcome, target: &str) -> Result<()> {
    if let Some(l) = &outcome.load {
        let c = &l.counts;
        let succeeded = c.done + c.aborted;
        if c.failed > succeeded {
            let top = l
                .failures
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(why, n)| format!("; most often ({n}×): {why}"))
                .unwrap_or_default();
            bail!(
                "most of the load failed ({} failed, {succeeded} succeeded{top}): check --url and the target's log",
                c.failed
            );
        }
    }
    if outcome.stopped == Stopped::TargetGone {
        bail!("the target ended during the recording: {target}");
    }
    Ok(())
}

pub fn print_load(l: &Summary) {
    {
        tell!(
            "load: {} done, {} failed, {} aborted, {} cut at the end; {:.1} requests/s, {}/s",
            l.counts.done,
            l.counts.failed,
            l.counts.aborted,
            l.cut,
            l.requests_per_sec(),
            ByteSize((l.counts.bytes as f64 / l.elapsed.as_secs_f64().max(1e-9)) as u64)
                .display()
                .iec()
        );
        if let Some(lat) = l.latency {
            tell!(
                "  latency of the done requests: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
                lat.p50,
                lat.p99,
                lat.max
            );
        }
        for (reason, n) in &l.failures {
            tell!("  failed {n}×: {reason}");
        }
    }
}
