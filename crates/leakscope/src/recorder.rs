//! The recording: every tick, read every source at once, append one sample.
//!
//! [`record`] drives a `Recorder` tick by tick. A tick reads all sources
//! side by side (`readings`: procfs, the agent's heap and tasks, the
//! metrics counter, the console, the load driver), books each reading's
//! cost and error in one place (`books`), lets the `ProfileSchedule` decide
//! about heap profiles (`profiles`), and writes the sample. Its `t_ms` is
//! the moment its reads started; its `taken_ms` has each section's reading
//! window, which differs when a read an earlier tick started answered late.
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

use leakscope_rundir::{RunDirError, RunWriter, Sample};

use crate::sources::agent::AgentSource;
use crate::sources::console::ConsoleSource;
use crate::sources::metrics::MetricsSource;
use crate::sources::procfs::ProcSource;

mod books;
mod load;
mod poll;
mod profiles;
mod readings;

use books::{Books, AGENT_HEAP, AGENT_TASKS, CONSOLE, METRICS, PROCFS, TASK_DUMP};
use load::Served;
use poll::Taken;
use profiles::Profiles;
use readings::{Readings, Reads};

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
    let mut recorder = Recorder::begin(writer, sources, settings).await;
    let mut ticker = tokio::time::interval(settings.interval);
    // Skip, not Delay: a tick woken a few ms late on a busy host keeps the
    // schedule (Delay would restart it from the late moment, and the pace
    // would drift by every late wake-up); a tick missed whole is skipped.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stopped = loop {
        let (stop_now, at) = tokio::select! {
            why = &mut stop => (Some(why), tokio::time::Instant::now()),
            at = ticker.tick() => (None, at),
        };
        if let Some(end) = recorder.tick(stop_now, at, &mut on_tick).await? {
            break end;
        }
    };
    recorder.finish(stopped).await
}

/// One recording's state between ticks.
struct Recorder<'a> {
    writer: &'a mut RunWriter,
    sources: &'a Sources,
    settings: &'a Settings,
    /// `t_ms` is counted from here.
    start: Instant,
    seq: u64,
    reads: Reads,
    books: Books,
    /// With an agent only.
    profiles: Option<Profiles>,
    served: Served,
}

impl<'a> Recorder<'a> {
    async fn begin(
        writer: &'a mut RunWriter,
        sources: &'a Sources,
        settings: &'a Settings,
    ) -> Self {
        if let Some(console) = &sources.console {
            // The stream's first replay takes a moment; without it the baseline
            // sample would have no tasks. A console that is down costs 3 s here
            // and an error per tick after.
            console.wait_connected(Duration::from_secs(3)).await;
        }
        let every = settings.heap_profile_every;
        Recorder {
            writer,
            sources,
            settings,
            start: Instant::now(),
            seq: 0,
            reads: Reads::default(),
            books: Books::default(),
            profiles: sources.agent.as_ref().map(|a| Profiles::new(a, every)),
            served: Served::default(),
        }
    }

    /// One tick: read, book, profile, write. `Some` when the recording ends
    /// with it.
    async fn tick(
        &mut self,
        stop_now: Option<Stopped>,
        at: tokio::time::Instant,
        on_tick: &mut impl FnMut(&Sample),
    ) -> Result<Option<Stopped>, RunDirError> {
        let out_of_time = self
            .settings
            .duration
            .is_some_and(|d| self.start.elapsed() >= d);
        let mut sample = Sample {
            seq: self.seq,
            t_ms: ms_between(self.start, Instant::now()),
            ..Sample::default()
        };
        // The sources' reads run side by side, each waited for until a tenth
        // of an interval before the next tick is due (`at` is when this one
        // was): a slow one costs its own reading, not the tick, and the
        // bookkeeping after it never pushes the next tick late.
        let deadline = at + self.settings.interval.mul_f64(0.9);
        let readings = self.reads.take(self.sources, deadline).await;
        let gone = readings.gone();
        let agent_up = self.fill(&mut sample, readings);
        let last = stop_now.is_some() || out_of_time || gone;
        self.profile(&mut sample, agent_up && !gone, last).await;
        let errors = self.books.take_errors();
        // The target dying mid-tick is the end, not an error of this tick.
        if gone {
            return Ok(Some(Stopped::TargetGone));
        }
        sample.errors = errors;
        self.writer.append(&sample)?;
        on_tick(&sample);
        self.seq += 1;
        Ok(stop_now.or(out_of_time.then_some(Stopped::Duration)))
    }

    /// Heap profiles, with an agent: see `ProfileSchedule`.
    async fn profile(&mut self, sample: &mut Sample, reachable: bool, last: bool) {
        let Some(profiles) = &mut self.profiles else {
            return;
        };
        let (writer, books) = (&*self.writer, &mut self.books);
        profiles
            .tick(writer, self.seq, reachable, last, sample, books)
            .await;
    }

    /// Books every reading and puts what came into its section, with when
    /// it was taken. Whether the agent answered.
    fn fill(&mut self, sample: &mut Sample, r: Readings) -> bool {
        let books = &mut self.books;
        let proc = books.account(r.proc, PROCFS);
        let heap = books.account(r.heap, AGENT_HEAP);
        let hooks = books.account(r.tasks, AGENT_TASKS);
        let hooks = hooks.and_then(|(tasks, at)| tasks.map(|t| (t, at)));
        // The console is booked only when the hooks gave no tasks: it is
        // their stand-in.
        let tasks = hooks.or_else(|| books.account(r.console, CONSOLE));
        let scraped = books.account(r.metrics, METRICS);
        let scraped = scraped.and_then(|(total, at)| total.map(|t| (t, at)));
        let metrics = self.sources.metrics.as_ref().map(|_| scraped);
        let load = self.served.section(r.driven, metrics);
        let agent_up = heap.is_some();
        let (start, taken) = (self.start, &mut sample.taken_ms);
        sample.proc = stamped(proc, "proc", start, taken);
        sample.heap = stamped(heap, "heap", start, taken);
        sample.tasks = stamped(tasks, "tasks", start, taken);
        sample.load = stamped(load, "load", start, taken);
        agent_up
    }

    /// The task dump if asked for, and `meta.json`'s end time and sources.
    async fn finish(mut self, stopped: Stopped) -> Result<Stopped, RunDirError> {
        let alive = stopped != Stopped::TargetGone;
        if let (Some(agent), true) = (&self.sources.agent, self.settings.task_dump && alive) {
            take_task_dump(agent, self.writer, &mut self.books).await;
        }
        // A misspelt counter must not read as "no load".
        let never_counted = match &self.sources.metrics {
            Some(metrics) if !self.served.metrics_seen() => Some(metrics.counter()),
            _ => None,
        };
        let books = &self.books;
        self.writer.update_meta(|m| {
            m.ended_unix_ms = Some(unix_ms());
            for (name, info) in books.infos() {
                m.sources.insert(name, info);
            }
            if let (Some(counter), Some(info)) = (never_counted, m.sources.get_mut(&METRICS.cost)) {
                if info.error.is_none() {
                    info.error = Some(format!("the scrape never had a counter named {counter}"));
                }
            }
        })?;
        Ok(stopped)
    }
}

/// A reading's value, its window noted under `section` in `taken_ms` (on
/// the clock of `t_ms`, which starts at `start`).
fn stamped<T>(
    got: Option<(T, Taken)>,
    section: &str,
    start: Instant,
    taken_ms: &mut BTreeMap<String, [u64; 2]>,
) -> Option<T> {
    let (value, at) = got?;
    let window = [
        ms_between(start, at.started),
        ms_between(start, at.started + at.took),
    ];
    taken_ms.insert(section.to_string(), window);
    Some(value)
}

fn ms_between(start: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(start).as_millis() as u64
}

/// How long the target may take to trace its tasks at the end; a runtime
/// that cannot within it has a blocked worker, which the error says.
const TASK_DUMP_DEADLINE: Duration = Duration::from_secs(10);

/// The end-of-run task dump: where the live tasks are parked. Its failure
/// (no `taskdump` feature, dumps not allowed, the deadline passed) is the
/// source's error in meta.json and a warning: the recording stands.
async fn take_task_dump(agent: &AgentSource, writer: &RunWriter, books: &mut Books) {
    let t = Instant::now();
    let outcome = match agent.task_dump(TASK_DUMP_DEADLINE).await {
        Ok(dump) => writer.write_task_dump(&dump).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &outcome {
        tracing::warn!("task dump: {e}");
    }
    books.cost(TASK_DUMP, t.elapsed(), outcome.err().as_deref());
}
