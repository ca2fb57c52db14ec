//! The leakscope sidecar: records a process from outside (procfs), from its
//! tokio-console stream and from leakscope-agent, onto one timeline in a run
//! directory, optionally while driving load at it.
//!
//! The library holds the parts the `leakscope` binary assembles, so tests
//! can drive them against real processes: the [`sources`], the
//! [`recorder`] loop, the [`target`] process of `leakscope run`, and the
//! [`host`] facts that go into `meta.json`.

pub mod environ;
pub mod host;
pub mod limits;
pub mod recorder;
pub mod sources;
pub mod target;
