//! `/debug/tasks`: the host runtime's metrics, and live tasks by spawn
//! site when the runtime has the agent's task hooks.

use serde::{Deserialize, Serialize};

use crate::{required, TaskSites};

/// Which tokio scheduler the host runtime is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    MultiThread,
    CurrentThread,
}

/// The `/debug/tasks` answer. Figures tokio exposes only under
/// `--cfg tokio_unstable` are `null` without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TasksAnswer {
    pub flavor: Flavor,
    pub workers: u64,
    /// Tasks spawned and not yet finished: the figure a task leak grows.
    pub alive_tasks: u64,
    pub global_queue_depth: u64,
    /// Whether the agent's build had `--cfg tokio_unstable` (the `null`s).
    pub tokio_unstable: bool,
    /// Tasks spawned since the runtime started (cumulative).
    #[serde(deserialize_with = "required")]
    pub spawned_tasks_total: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub blocking_threads: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub idle_blocking_threads: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub blocking_queue_depth: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub remote_schedules_total: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub budget_forced_yields_total: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub io_driver_ready_total: Option<u64>,
    pub workers_detail: Vec<WorkerStats>,
    /// Live tasks by spawn site from the task hooks; `null` when the host
    /// runtime was built without them.
    #[serde(deserialize_with = "required")]
    pub hooks: Option<TaskSites>,
    /// How long the agent's console endpoint keeps finished tasks, when it
    /// runs: a sidecar judging memory needs it, since every retained task
    /// holds ~51 KB until then.
    #[serde(deserialize_with = "required")]
    pub console_retention_ms: Option<u64>,
}

impl TasksAnswer {
    /// An answer with the figures stable tokio always gives; every
    /// optional figure `null`, no workers' detail, no hooks, no console.
    pub fn new(flavor: Flavor, workers: u64, alive_tasks: u64, global_queue_depth: u64) -> Self {
        TasksAnswer {
            flavor,
            workers,
            alive_tasks,
            global_queue_depth,
            tokio_unstable: false,
            spawned_tasks_total: None,
            blocking_threads: None,
            idle_blocking_threads: None,
            blocking_queue_depth: None,
            remote_schedules_total: None,
            budget_forced_yields_total: None,
            io_driver_ready_total: None,
            workers_detail: Vec::new(),
            hooks: None,
            console_retention_ms: None,
        }
    }
}

/// One worker thread's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub busy_seconds_total: f64,
    pub parks_total: u64,
    #[serde(deserialize_with = "required")]
    pub local_queue_depth: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub polls_total: Option<u64>,
    #[serde(deserialize_with = "required")]
    pub steals_total: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_null_is_none_and_hooks_missing_is_an_error() {
        let answer = TasksAnswer::new(Flavor::CurrentThread, 1, 3, 0);
        let mut v = serde_json::to_value(&answer).unwrap();
        assert_eq!(v["flavor"], "current_thread");
        let back: TasksAnswer = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, answer);
        v.as_object_mut().unwrap().remove("hooks");
        let err = serde_json::from_value::<TasksAnswer>(v).unwrap_err();
        assert!(err.to_string().contains("missing field `hooks`"), "{err}");
    }
}
