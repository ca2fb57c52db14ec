//! One source's read, running beside the ticks.
//!
//! Why: read one after another, a silent agent cost every tick its full
//! timeout (2 samples instead of 13, and 10.2 s for `--duration 3s`). Each
//! source's read now runs on a task of its own and the tick waits for it no
//! longer than its own budget (the interval): a slow source loses its own
//! readings, never the other sources' or the tick's pace.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// What a tick got from a source.
pub enum Reading<T> {
    Got(T, Duration),
    Failed(String, Duration),
    /// Still waiting after this long; the read goes on, and the next tick
    /// starts no other until it ends.
    Late(Duration),
    /// The source is not asked (absent).
    None,
}

pub struct Poll<T> {
    task: Option<JoinHandle<Result<T, String>>>,
    started: Instant,
}

impl<T: Send + 'static> Default for Poll<T> {
    fn default() -> Self {
        Poll {
            task: None,
            started: Instant::now(),
        }
    }
}

impl<T: Send + 'static> Poll<T> {
    /// Starts a read, unless the last one is still running: then the tick
    /// waits for that one again, and uses its answer if it comes. A read
    /// that ended between ticks, after its own tick gave up on it, is
    /// dropped for a fresh one: a source that answers at all answers that
    /// quickly.
    pub fn start<F>(&mut self, read: F)
    where
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.started = Instant::now();
        self.task = Some(tokio::spawn(read));
    }

    /// The read's answer if it comes by `deadline`.
    pub async fn collect(&mut self, deadline: tokio::time::Instant) -> Reading<T> {
        let Some(task) = self.task.as_mut() else {
            return Reading::None;
        };
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Reading::Late(self.started.elapsed()),
            Ok(joined) => {
                self.task = None;
                let took = self.started.elapsed();
                match joined {
                    Ok(Ok(v)) => Reading::Got(v, took),
                    Ok(Err(e)) => Reading::Failed(e, took),
                    Err(e) => Reading::Failed(format!("the read's task: {e}"), took),
                }
            }
        }
    }
}

impl<T> Drop for Poll<T> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
