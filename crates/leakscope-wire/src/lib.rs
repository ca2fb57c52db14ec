//! What leakscope-agent answers, typed once: the agent serializes these
//! types and the sidecar deserializes the same ones, as tokio-console's
//! `console-api` does for its producer and consumer. A renamed or missing
//! field is then a compile error on one side, or a decoding error that
//! names the field on the other, never a silent `null`.
//!
//! - [`Endpoint`], every path the agent serves.
//! - [`HeapStats`], the answer of `/debug/heap/stats`.
//! - [`TasksAnswer`], the answer of `/debug/tasks` (runtime metrics and,
//!   with the hooks, [`TaskSites`]).
//! - [`TaskDump`], the answer of `/debug/tasks/dump`.
//! - [`code`], which frames of a stack are the service's own code, one
//!   rule for the agent, the analysis and leakscope-test.
//! - [`DHAT_FILE`], the file a dhat build writes at exit.
//!
//! Invariant: this crate does no I/O and depends on serde alone, so the
//! in-process agent pays nothing for sharing it.

pub mod code;
mod endpoint;
mod heap;
pub mod runtime;
mod tasks;

pub use endpoint::Endpoint;
pub use heap::{Allocator, HeapStats};
pub use runtime::{TasksAnswer, WorkerStats};
pub use tasks::{ParkedGroup, StackFrame, TaskDump, TaskSite, TaskSites};

/// The file a dhat build of the agent writes its heap profile to, and the
/// name the run directory keeps it under.
pub const DHAT_FILE: &str = "dhat-heap.json";

/// Serde's `Option` fields default to `None` when missing; answers use
/// this instead, so a field the other side renamed or dropped is an error
/// that names it, while an explicit `null` is still `None`.
fn required<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d)
}
