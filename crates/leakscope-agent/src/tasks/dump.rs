//! Task dumps: where every live task is parked, grouped.
//!
//! tokio's `Handle::dump` re-polls each idle task in a tracing mode and
//! records one backtrace per tokio leaf future it reaches (a timer, a
//! channel receive, a socket read). Joined with the spawn site the hooks
//! recorded for the task's id, that answers "10,412 tasks from
//! task_leak.rs:83 are parked at `Interval::tick` ← task_leak.rs:53".
//!
//! Costs and limits, measured or from tokio's docs: the runtime pauses its
//! workers while it traces; a worker blocked for more than 250 ms makes the
//! dump wait forever, hence the deadline; symbolizing parses debuginfo
//! (hundreds of ms the first time), so it runs on a blocking thread and the
//! parsed-DWARF cache is dropped after. A task parked on a future that is
//! not tokio's (`std::future::pending`, a `futures` channel) has no leaf,
//! so its stack is empty.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leakscope_wire::{code, ParkedGroup, StackFrame, TaskDump};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::AgentError;

/// Traces every task of `handle`'s runtime, within `deadline`, and groups
/// them by spawn site and parked stack.
pub async fn dump(handle: &Handle, deadline: Duration) -> Result<TaskDump, AgentError> {
    let taken_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let t0 = Instant::now();
    let timed_out = || {
        AgentError::Dump(format!(
            "the runtime did not finish tracing its tasks within {deadline:?} \
             (a worker blocked for more than 250 ms stalls a dump)"
        ))
    };
    let dumped = if handle.runtime_flavor() == RuntimeFlavor::CurrentThread {
        // A current-thread runtime can only be dumped from inside itself.
        let inner = handle.spawn(async { Handle::current().dump().await });
        match tokio::time::timeout(deadline, inner).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(AgentError::Dump(format!("dump task: {e}"))),
            Err(_) => return Err(timed_out()),
        }
    } else {
        tokio::time::timeout(deadline, handle.dump())
            .await
            .map_err(|_| timed_out())?
    };
    let trace_ms = t0.elapsed().as_millis() as u64;
    let t1 = Instant::now();
    let count = dumped.tasks().iter().count() as u64;
    let groups = tokio::task::spawn_blocking(move || group(&dumped))
        .await
        .map_err(|e| AgentError::Dump(format!("symbolizing: {e}")))?;
    Ok(TaskDump {
        taken_unix_ms,
        trace_ms,
        symbolize_ms: t1.elapsed().as_millis() as u64,
        tasks: count,
        groups,
    })
}

/// Resolves each task's first backtrace and counts identical
/// (site, stack) pairs, largest group first.
fn group(dumped: &tokio::runtime::dump::Dump) -> Vec<ParkedGroup> {
    let mut counts: HashMap<(Option<String>, Vec<StackFrame>), u64> = HashMap::new();
    for task in dumped.tasks().iter() {
        let site = super::spawned_at(task.id())
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let stack = task
            .trace()
            .resolve_backtraces()
            .first()
            .map(stack_of)
            .unwrap_or_default();
        *counts.entry((site, stack)).or_default() += 1;
    }
    backtrace::clear_symbol_cache();
    let mut groups: Vec<ParkedGroup> = counts
        .into_iter()
        .map(|((spawned_at, stack), count)| ParkedGroup {
            spawned_at,
            count,
            stack,
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.spawned_at.cmp(&b.spawned_at))
    });
    groups
}

/// The frames between tokio's leaf hook and the task's root, leaf first
/// (`leakscope_wire::code::task_chain`, shared with leakscope-test).
fn stack_of(bt: &tokio::runtime::dump::Backtrace) -> Vec<StackFrame> {
    let frames: Vec<StackFrame> = bt
        .frames()
        .flat_map(|f| f.symbols())
        .map(|s| StackFrame {
            function: s
                .name_demangled()
                .map(|n| code::strip_hash(n).to_string())
                .unwrap_or_else(|| "??".to_string()),
            location: s
                .filename()
                .map(|p| format!("{}:{}", p.display(), s.lineno().unwrap_or(0))),
        })
        .collect();
    let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
    frames[code::task_chain(&names)].to_vec()
}
