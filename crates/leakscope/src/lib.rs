//! The leakscope sidecar: records a process from outside (procfs), from its
//! tokio-console stream and from leakscope-agent, onto one timeline in a run
//! directory. Work in progress (issue 5): the sources and the recording loop exist; the
//! CLI, `run` and the load driver do not yet.

pub mod recorder;
pub mod sources;
