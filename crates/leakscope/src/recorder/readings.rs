//! One tick's reads of every source, side by side.
//!
//! All start at the same moment, the sample's `t_ms`: procfs on a blocking
//! thread and each HTTP source on a task of its own ([`Poll`]), each waited
//! for until the tick's deadline; leakscope's own copies (the console's
//! tasks, the driver's counters) in place. A sample's
//! figures are then of one moment, not of a sequence skewed by whichever
//! source was slow, and each reading keeps when it was taken.

use std::future::Future;

use leakscope_load::Counts;
use leakscope_rundir::{HeapSample, ProcSample, TaskSample};

use super::poll::{Poll, Reading, Taken};
use super::Sources;
use crate::sources::procfs::{ProcSource, ProcSourceError};

/// What one tick got from each source.
pub struct Readings {
    pub proc: Reading<ProcSample, ProcSourceError>,
    pub heap: Reading<HeapSample>,
    /// The agent's hooks; `Got(None)` from a runtime without them.
    pub tasks: Reading<Option<TaskSample>>,
    /// For when the hooks gave no tasks.
    pub console: Reading<TaskSample>,
    pub metrics: Reading<Option<u64>>,
    pub driven: Option<(Counts, Taken)>,
}

impl Readings {
    /// procfs says the target is gone: the recording ends.
    pub fn gone(&self) -> bool {
        matches!(self.proc, Reading::Failed(ProcSourceError::Gone { .. }, _))
    }
}

/// The reads that can outlive a tick, one of each at most in flight.
#[derive(Default)]
pub struct Reads {
    proc: Poll<ProcSample, ProcSourceError>,
    heap: Poll<HeapSample>,
    tasks: Poll<Option<TaskSample>>,
    metrics: Poll<Option<u64>>,
    /// The hooks counted the tasks last tick: then the console is read only
    /// if they do not this time (a snapshot walks every live task). Else it
    /// is read with the others, so a silent agent does not make it late.
    hooks_counted: bool,
}

impl Reads {
    /// Reads every source at once, each waited for until `deadline`:
    /// procfs too, so a read that overruns (a host whose socket tables are
    /// huge) loses its own reading that tick, never the tick's pace. Only
    /// an answer says the target is gone.
    pub async fn take(&mut self, sources: &Sources, deadline: tokio::time::Instant) -> Readings {
        self.proc.start(read_proc(&sources.proc));
        let pid = sources.proc.pid();
        self.start(sources);
        let driven = sources.load.as_ref().map(|c| (c.counts(), Taken::now()));
        let console_now = !self.hooks_counted;
        let mut console = read_console(sources, console_now);
        let (proc, heap, tasks, metrics) = tokio::join!(
            self.proc
                .collect_with(deadline, |message| ProcSourceError::Other { pid, message }),
            self.heap.collect(deadline),
            self.tasks.collect(deadline),
            self.metrics.collect(deadline),
        );
        self.hooks_counted = matches!(tasks, Reading::Got(Some(_), _));
        if !console_now && !self.hooks_counted {
            console = read_console(sources, true);
        }
        Readings {
            proc,
            heap,
            tasks,
            console,
            metrics,
            driven,
        }
    }

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

/// A read of /proc on a blocking thread (a process with thousands of fds
/// takes milliseconds to list); the future is its answer.
fn read_proc(
    proc: &ProcSource,
) -> impl Future<Output = Result<ProcSample, ProcSourceError>> + Send + 'static {
    let (source, pid) = (proc.clone(), proc.pid());
    async move {
        tokio::task::spawn_blocking(move || source.sample())
            .await
            .unwrap_or_else(|e| {
                Err(ProcSourceError::Other {
                    pid,
                    message: format!("the read's task: {e}"),
                })
            })
    }
}

/// The console's live tasks, if it is there and `wanted`.
fn read_console(sources: &Sources, wanted: bool) -> Reading<TaskSample> {
    match sources.console.as_ref().filter(|_| wanted) {
        Some(console) => Reading::now(|| console.snapshot()),
        None => Reading::None,
    }
}
