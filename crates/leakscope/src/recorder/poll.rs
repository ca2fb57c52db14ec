//! One source's read, running beside the ticks.
//!
//! Why: read one after another, a silent agent cost every tick its full
//! timeout (2 samples instead of 13, and 10.2 s for `--duration 3s`). Each
//! source's read now runs on a task of its own and the tick waits for it no
//! longer than its own budget (the interval): a slow source loses its own
//! readings, never the other sources' or the tick's pace.
//!
//! What any read gave a tick is a [`Reading`], with when it was taken
//! ([`Taken`]): a sample records each section's window.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// When a read ran: it started at `started` and answered (or had been
/// waited for) `took` later. What it read was true at some moment between.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub started: Instant,
    pub took: Duration,
}

impl Taken {
    /// A figure read at once (an atomic counter).
    pub fn now() -> Self {
        Taken {
            started: Instant::now(),
            took: Duration::ZERO,
        }
    }

    /// A read that started at `started` and answered just now.
    pub fn since(started: Instant) -> Self {
        Taken {
            started,
            took: started.elapsed(),
        }
    }
}

/// What a tick got from a source.
pub enum Reading<T, E = String> {
    Got(T, Taken),
    Failed(E, Taken),
    /// Still waiting after `took`; the read goes on, and the next tick
    /// starts no other until it ends.
    Late(Taken),
    /// The source is not asked (absent).
    None,
}

impl<T, E> Reading<T, E> {
    /// A read done in place, timed: for one that is local and quick
    /// (leakscope's own copy of the console's tasks).
    pub fn now(read: impl FnOnce() -> Result<T, E>) -> Self {
        let started = Instant::now();
        Self::of(read(), Taken::since(started))
    }

    pub fn of(result: Result<T, E>, taken: Taken) -> Self {
        match result {
            Ok(v) => Reading::Got(v, taken),
            Err(e) => Reading::Failed(e, taken),
        }
    }
}

pub struct Poll<T, E = String> {
    task: Option<JoinHandle<Result<T, E>>>,
    started: Instant,
}

impl<T: Send + 'static, E: Send + 'static> Default for Poll<T, E> {
    fn default() -> Self {
        Poll {
            task: None,
            started: Instant::now(),
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> Poll<T, E> {
    /// Starts a read, unless the last one is still running: then the tick
    /// waits for that one again, and uses its answer if it comes. A read
    /// that ended between ticks, after its own tick gave up on it, is
    /// dropped for a fresh one: a source that answers at all answers that
    /// quickly.
    pub fn start<F>(&mut self, read: F)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.started = Instant::now();
        self.task = Some(tokio::spawn(read));
    }

    /// The read's answer if it comes by `deadline`. An answer to a read
    /// an earlier tick started keeps that start: its `Taken` says so. A
    /// read whose task died answers `task_failed(why)`.
    pub async fn collect_with(
        &mut self,
        deadline: tokio::time::Instant,
        task_failed: impl FnOnce(String) -> E,
    ) -> Reading<T, E> {
        let Some(task) = self.task.as_mut() else {
            return Reading::None;
        };
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Reading::Late(Taken::since(self.started)),
            Ok(joined) => {
                self.task = None;
                let taken = Taken::since(self.started);
                match joined {
                    Ok(result) => Reading::of(result, taken),
                    Err(e) => Reading::Failed(task_failed(format!("the read's task: {e}")), taken),
                }
            }
        }
    }
}

impl<T: Send + 'static> Poll<T> {
    /// [`Poll::collect_with`] for a read whose errors are text.
    pub async fn collect(&mut self, deadline: tokio::time::Instant) -> Reading<T> {
        self.collect_with(deadline, |why| why).await
    }
}

impl<T, E> Drop for Poll<T, E> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
