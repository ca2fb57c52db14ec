//! Tokio runtime metrics of the host's runtime.
//!
//! Read from the `Handle` the host started the agent in, never from the
//! agent's own runtime, so the agent's tasks are not counted. Figures that
//! tokio only exposes under `--cfg tokio_unstable` are `null` without it.

use leakscope_wire::runtime::Flavor;
use leakscope_wire::{TasksAnswer, WorkerStats};
use tokio::runtime::Handle;

/// The `/debug/tasks` answer for the host runtime.
pub fn stats(handle: &Handle) -> TasksAnswer {
    let m = handle.metrics();
    let flavor = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => Flavor::CurrentThread,
        _ => Flavor::MultiThread,
    };
    let workers_detail = (0..m.num_workers())
        .map(|w| WorkerStats {
            busy_seconds_total: m.worker_total_busy_duration(w).as_secs_f64(),
            parks_total: m.worker_park_count(w),
            #[cfg(tokio_unstable)]
            local_queue_depth: Some(m.worker_local_queue_depth(w) as u64),
            #[cfg(not(tokio_unstable))]
            local_queue_depth: None,
            #[cfg(tokio_unstable)]
            polls_total: Some(m.worker_poll_count(w)),
            #[cfg(not(tokio_unstable))]
            polls_total: None,
            #[cfg(tokio_unstable)]
            steals_total: Some(m.worker_steal_count(w)),
            #[cfg(not(tokio_unstable))]
            steals_total: None,
        })
        .collect();
    let mut s = TasksAnswer {
        tokio_unstable: cfg!(tokio_unstable),
        workers_detail,
        hooks: crate::tasks::snapshot(),
        console_retention_ms: crate::console::retention().map(|d| d.as_millis() as u64),
        ..TasksAnswer::new(
            flavor,
            m.num_workers() as u64,
            m.num_alive_tasks() as u64,
            m.global_queue_depth() as u64,
        )
    };
    #[cfg(tokio_unstable)]
    {
        s.spawned_tasks_total = Some(m.spawned_tasks_count());
        s.blocking_threads = Some(m.num_blocking_threads() as u64);
        s.idle_blocking_threads = Some(m.num_idle_blocking_threads() as u64);
        s.blocking_queue_depth = Some(m.blocking_queue_depth() as u64);
        s.remote_schedules_total = Some(m.remote_schedule_count());
        s.budget_forced_yields_total = Some(m.budget_forced_yield_count());
        s.io_driver_ready_total = Some(m.io_driver_ready_count());
    }
    #[cfg(not(tokio_unstable))]
    let _ = &mut s;
    s
}
