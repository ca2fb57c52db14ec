//! `meta.json`: what was recorded and how it ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub schema_version: u32,
    pub leakscope_version: String,
    /// The target's command line when leakscope started it; empty when it
    /// attached to a running process.
    pub command: Vec<String>,
    pub pid: u32,
    /// Free-form labels; the report pairs runs by `scenario` and `variant`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub host: Host,
    pub interval_ms: u64,
    #[serde(default)]
    pub git_revision: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    #[serde(default)]
    pub ended_unix_ms: Option<u64>,
    /// `None` while recording (or if the recorder itself died).
    #[serde(default)]
    pub target_end: Option<TargetEnd>,
    /// Per source: whether it was reachable, why not, and what it cost.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub kernel: String,
    pub cpus: u32,
}

/// How the target's life ended, as far as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetEnd {
    /// Still running when recording stopped (duration reached, or attached).
    StillRunning,
    /// Exited by itself or after leakscope's SIGTERM.
    Exited { code: i32 },
    /// Killed by a signal (leakscope's SIGKILL after the deadline included).
    Signaled { signal: i32 },
    /// Gone, but not our child, so its status is unknown.
    Vanished,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub enabled: bool,
    /// The first error the source gave, if any.
    #[serde(default)]
    pub error: Option<String>,
    /// Ticks the source was asked.
    pub samples: u64,
    /// Ticks it failed (its section of those samples is empty).
    #[serde(default)]
    pub failed: u64,
    /// Mean wall time per sample, milliseconds: what watching cost.
    pub mean_cost_ms: f64,
}
