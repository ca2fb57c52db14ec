//! The recording loop: every tick, ask each source, append one sample.
//!
//! Sources are independent: one that fails gets an entry in the sample's
//! `errors` and the rest go on. The procfs source saying the process is gone
//! ends the recording cleanly; so does the caller's stop signal or the
//! duration. Samples stream to disk as they are taken, so memory stays flat
//! however long the recording runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leakscope_rundir::{
    HeapSample, LoadSample, RunDirError, RunWriter, Sample, SourceError, SourceInfo, TaskSample,
};

use crate::sources::agent::AgentSource;
use crate::sources::console::ConsoleSource;
use crate::sources::metrics::MetricsSource;
use crate::sources::procfs::{ProcSource, ProcSourceError};

mod poll;
use poll::{Poll, Reading};

pub struct Sources {
    pub proc: ProcSource,
    pub agent: Option<AgentSource>,
    pub console: Option<ConsoleSource>,
    pub metrics: Option<MetricsSource>,
    /// leakscope's own load driver, when it drives the target.
    pub load: Option<Arc<leakscope_load::Counters>>,
}

pub struct Settings {
    pub interval: Duration,
    pub duration: Option<Duration>,
    /// A heap profile at the start, every this often, and at the end.
    pub heap_profile_every: Option<Duration>,
    /// A task dump from the agent at the end (opt-in: it can wedge a
    /// multi-thread runtime).
    pub task_dump: bool,
}

/// Why the recording stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    Duration,
    /// A signal (Ctrl-C, SIGTERM) asked leakscope to stop.
    Signal,
    /// The load ended and the settle time passed.
    LoadEnded,
    TargetGone,
}

#[derive(Default)]
struct Cost {
    samples: u64,
    failed: u64,
    total: Duration,
    error: Option<String>,
}

impl Cost {
    fn add(&mut self, took: Duration, error: Option<&str>) {
        self.samples += 1;
        self.failed += u64::from(error.is_some());
        self.total += took;
        if self.error.is_none() {
            self.error = error.map(str::to_string);
        }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            enabled: true,
            error: self.error.clone(),
            samples: self.samples,
            failed: self.failed,
            mean_cost_ms: if self.samples == 0 {
                0.0
            } else {
                self.total.as_secs_f64() * 1000.0 / self.samples as f64
            },
        }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Records until the duration passes, `stop` resolves (with its reason), or
/// the target is gone; finishes `meta.json` with the end time and source
/// costs either way.
pub async fn record(
    writer: &mut RunWriter,
    sources: &Sources,
    settings: &Settings,
    stop: impl Future<Output = Stopped>,
    mut on_tick: impl FnMut(&Sample),
) -> Result<Stopped, RunDirError> {
    tokio::pin!(stop);
    if let Some(console) = &sources.console {
        // The stream's first replay takes a moment; without it the baseline
        // sample would have no tasks. A console that is down costs 3 s here
        // and an error per tick after.
        console.wait_connected(Duration::from_secs(3)).await;
    }
    let start = Instant::now();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut costs: BTreeMap<&'static str, Cost> = BTreeMap::new();
    let mut last_profile: Option<Instant> = None;
    let mut pending: Option<PendingProfile> = None;
    let mut seq = 0u64;
    let mut metrics_seen = false;
    let mut polls = Polls::default();
    let stopped = loop {
        let stop_now = tokio::select! {
            why = &mut stop => Some(why),
            _ = ticker.tick() => None,
        };
        let out_of_time = settings.duration.is_some_and(|d| start.elapsed() >= d);
        let mut sample = Sample {
            seq,
            t_ms: start.elapsed().as_millis() as u64,
            ..Sample::default()
        };
        let mut errors = Vec::new();

        let t = Instant::now();
        let proc = sources.proc.sample();
        let gone = matches!(proc, Err(ProcSourceError::Gone { .. }));
        match proc {
            Ok(p) => {
                sample.proc = Some(p);
                costs.entry("procfs").or_default().add(t.elapsed(), None);
            }
            Err(e) => {
                let msg = e.to_string();
                costs
                    .entry("procfs")
                    .or_default()
                    .add(t.elapsed(), Some(&msg));
                errors.push(("procfs", msg));
            }
        }
        // The sources' reads run side by side, each waited for up to one
        // interval: a slow one costs its own readings, not the tick.
        let deadline = tokio::time::Instant::now() + settings.interval;
        polls.start(sources);
        let heap = account(
            polls.heap.collect(deadline).await,
            ("agent", "agent"),
            &mut costs,
            &mut errors,
        );
        let hooks = account(
            polls.tasks.collect(deadline).await,
            ("agent", "agent-tasks"),
            &mut costs,
            &mut errors,
        );
        let scraped = account(
            polls.metrics.collect(deadline).await,
            ("metrics", "metrics"),
            &mut costs,
            &mut errors,
        );
        let agent_up = heap.is_some();
        sample.heap = heap;
        sample.tasks = hooks.flatten();
        if let Some(agent) = &sources.agent {
            // A profile is a dump plus symbolization in the target, up to
            // seconds for a large binary: those between the first and the
            // last run beside the ticks, never in one, so the series keeps
            // its pace. Such a file is named for the tick that asked; the
            // sample of the tick that sees it done carries the name.
            if pending.as_ref().is_some_and(|p| p.task.is_finished()) {
                let p = pending.take().expect("checked");
                finish_profile(p, &mut sample, &mut errors).await;
            }
            let last = stop_now.is_some() || out_of_time || gone;
            let due = match (settings.heap_profile_every, last_profile) {
                (_, None) => true,
                (Some(every), Some(at)) => at.elapsed() >= every,
                (None, Some(_)) => false,
            };
            // Only of an agent that answered this tick: a silent one would
            // hold the tick for the profile's whole deadline.
            if last && !gone && agent_up {
                // The end profile is the other half of every diff: wait for
                // the one in flight (its file stays; this sample names the
                // end one), then take it here.
                if let Some(p) = pending.take() {
                    finish_profile(p, &mut sample, &mut errors).await;
                }
                let p = start_profile(agent, writer, seq);
                finish_profile(p, &mut sample, &mut errors).await;
            } else if last_profile.is_none() && !gone && agent_up {
                // The first profile is the baseline of every diff: taken in
                // the first tick the agent answers, before any load starts
                // if it answers at once, however long it takes.
                let p = start_profile(agent, writer, seq);
                finish_profile(p, &mut sample, &mut errors).await;
                last_profile = Some(Instant::now());
            } else if due && pending.is_none() && !gone && agent_up {
                pending = Some(start_profile(agent, writer, seq));
                last_profile = Some(Instant::now());
            }
        }
        read_console(sources, &mut sample, &mut costs, &mut errors);
        // Requests served come from the target's own counter when it has
        // one (it sees every client, not just ours); the driver's otherwise,
        // counting only those that succeeded (an abort is the driver's own
        // choice after the response began): a 404 or a refused connection
        // is not work the service did. Once the target's counter has been
        // read, a tick without it has no figure: the driver's count is
        // smaller, and mixing the two would read as the counter going down.
        let driven = sources.load.as_ref().map(|c| c.counts());
        let mut served = driven.map(|c| c.done + c.aborted);
        if sources.metrics.is_some() {
            let total = scraped.flatten();
            metrics_seen |= total.is_some();
            served = if metrics_seen {
                total
            } else {
                total.or(served)
            };
        }
        if let Some(requests_total) = served {
            sample.load = Some(LoadSample {
                requests_total,
                done: driven.map_or(0, |c| c.done),
                failed: driven.map_or(0, |c| c.failed),
                aborted: driven.map_or(0, |c| c.aborted),
                bytes: driven.map_or(0, |c| c.bytes),
                concurrency: driven.map_or(0, |c| c.concurrency),
            });
        }
        // The target dying mid-tick is the end, not an error of this tick.
        if !gone {
            sample.errors = errors
                .into_iter()
                .map(|(source, message)| SourceError {
                    source: source.to_string(),
                    message,
                })
                .collect();
            writer.append(&sample)?;
            on_tick(&sample);
            seq += 1;
        }
        if gone {
            break Stopped::TargetGone;
        }
        if let Some(s) = stop_now {
            break s;
        }
        if out_of_time {
            break Stopped::Duration;
        }
    };
    let alive = stopped != Stopped::TargetGone;
    if let (Some(agent), true) = (&sources.agent, settings.task_dump && alive) {
        take_task_dump(agent, writer, &mut costs).await;
    }
    writer.update_meta(|m| {
        m.ended_unix_ms = Some(unix_ms());
        for (name, cost) in &costs {
            m.sources.insert(name.to_string(), cost.info());
        }
        if let (Some(metrics), Some(info)) = (&sources.metrics, m.sources.get_mut("metrics")) {
            // A misspelt counter must not read as "no load".
            if !metrics_seen && info.error.is_none() {
                info.error = Some(format!(
                    "the scrape never had a counter named {}",
                    metrics.counter()
                ));
            }
        }
    })?;
    Ok(stopped)
}

/// Live tasks from the console, when the agent's hooks gave none (the
/// console is not asked when they did).
fn read_console(
    sources: &Sources,
    sample: &mut Sample,
    costs: &mut BTreeMap<&'static str, Cost>,
    errors: &mut Vec<(&'static str, String)>,
) {
    let Some(console) = sources.console.as_ref().filter(|_| sample.tasks.is_none()) else {
        return;
    };
    let t = Instant::now();
    match console.snapshot() {
        Ok(c) => {
            sample.tasks = Some(c);
            costs.entry("console").or_default().add(t.elapsed(), None);
        }
        Err(e) => {
            costs
                .entry("console")
                .or_default()
                .add(t.elapsed(), Some(&e));
            errors.push(("console", e));
        }
    }
}

/// Books a reading's cost under `keys.1` and its error under `keys.0` (the
/// name a warning uses: one dead agent is one warning); its value, if any.
fn account<T>(
    reading: Reading<T>,
    keys: (&'static str, &'static str),
    costs: &mut BTreeMap<&'static str, Cost>,
    errors: &mut Vec<(&'static str, String)>,
) -> Option<T> {
    let (source, cost) = keys;
    let (value, took, error) = match reading {
        Reading::None => return None,
        Reading::Got(v, took) => (Some(v), took, None),
        Reading::Failed(e, took) => (None, took, Some(e)),
        Reading::Late(waited) => (
            None,
            waited,
            Some(format!(
                "no answer within the tick ({} ms so far); the read goes on",
                waited.as_millis()
            )),
        ),
    };
    costs.entry(cost).or_default().add(took, error.as_deref());
    if let Some(e) = error {
        errors.push((source, e));
    }
    value
}

/// The reads of the sources that are asked over HTTP, one of each at most
/// in flight.
#[derive(Default)]
struct Polls {
    heap: Poll<HeapSample>,
    tasks: Poll<Option<TaskSample>>,
    metrics: Poll<Option<u64>>,
}

impl Polls {
    fn start(&mut self, sources: &Sources) {
        if let Some(agent) = &sources.agent {
            let a = agent.clone();
            self.heap
                .start(async move { a.heap().await.map_err(|e| e.to_string()) });
            let a = agent.clone();
            self.tasks
                .start(async move { a.tasks().await.map_err(|e| e.to_string()) });
        }
        if let Some(metrics) = &sources.metrics {
            let m = metrics.clone();
            self.metrics
                .start(async move { m.requests_total().await.map_err(|e| e.to_string()) });
        }
    }
}

/// How long the target may take to trace its tasks at the end; a runtime
/// that cannot within it has a blocked worker, which the error says.
const TASK_DUMP_DEADLINE: Duration = Duration::from_secs(10);

/// The end-of-run task dump: where the live tasks are parked. Its failure
/// (no `taskdump` feature, dumps not allowed, the deadline passed) is the
/// source's error in meta.json and a warning: the recording stands.
async fn take_task_dump(
    agent: &AgentSource,
    writer: &RunWriter,
    costs: &mut BTreeMap<&'static str, Cost>,
) {
    let t = Instant::now();
    let outcome = match agent.task_dump(TASK_DUMP_DEADLINE).await {
        Ok(dump) => writer.write_task_dump(&dump).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &outcome {
        tracing::warn!("task dump: {e}");
    }
    costs
        .entry("task-dump")
        .or_default()
        .add(t.elapsed(), outcome.err().as_deref());
}

/// A heap profile being fetched and written on its own task.
struct PendingProfile {
    name: String,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn start_profile(agent: &AgentSource, writer: &RunWriter, seq: u64) -> PendingProfile {
    let (path, name) = writer.profile_path("heap", seq);
    let agent = agent.clone();
    let task = tokio::spawn(async move {
        let bytes = agent
            .heap_profile()
            .await
            .map_err(|e| format!("heap profile: {e}"))?;
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| format!("writing {}: {e}", path.display()))
    });
    PendingProfile { name, task }
}

async fn finish_profile(
    p: PendingProfile,
    sample: &mut Sample,
    errors: &mut Vec<(&'static str, String)>,
) {
    match p.task.await {
        Ok(Ok(())) => sample.heap_profile = Some(p.name),
        Ok(Err(e)) => errors.push(("agent", e)),
        Err(e) => errors.push(("agent", format!("heap profile task: {e}"))),
    }
}
