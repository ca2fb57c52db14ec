//! `meta.json`: what was recorded and how it ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Default` is an empty recording of this schema, for tests and tools that
/// fill in what they know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub schema_version: u32,
    pub leakscope_version: String,
    /// The target's command line when leakscope started it; empty when it
    /// attached to a running process.
    pub command: Vec<String>,
    pub pid: u32,
    /// Free-form labels; the report pairs runs by [`labels::SCENARIO`] and
    /// [`labels::VARIANT`].
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
    /// Per source ([`SourceName`]): whether it was reachable, why not, and
    /// what it cost.
    #[serde(default)]
    pub sources: BTreeMap<SourceName, SourceInfo>,
    /// The ceilings the target ran under, read when recording started.
    #[serde(default)]
    pub limits: Limits,
    /// OOM kills in the target's cgroup while it was recorded (memory.events
    /// `oom_kill` at the end minus at the start): a target killed for memory
    /// says so instead of reading as "exited".
    #[serde(default)]
    pub oom_kills: Option<u64>,
    /// How long the target's console-subscriber keeps finished tasks, when
    /// the user said (`--console-retention`) or the target's environment
    /// did (`TOKIO_CONSOLE_RETENTION`, `LEAKSCOPE_CONSOLE_RETENTION`): the
    /// analysis needs it to tell the console's retained memory from a leak
    /// when the agent cannot say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_retention_ms: Option<u64>,
}

/// What a leak runs into. Each is `None` where there is no limit
/// ("unlimited", "max") or it could not be read; a run recorded by an older
/// leakscope has none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// RLIMIT_NOFILE's soft limit (`/proc/PID/limits` "Max open files"):
    /// past it, open, accept and socket fail with EMFILE.
    #[serde(default)]
    pub open_files: Option<u64>,
    /// RLIMIT_AS's soft limit in bytes ("Max address space").
    #[serde(default)]
    pub address_space: Option<u64>,
    /// cgroup v2 `memory.max` of the target's cgroup, in bytes: past it the
    /// kernel reclaims, then OOM-kills.
    #[serde(default)]
    pub cgroup_memory_max: Option<u64>,
    /// cgroup v2 `pids.max`: threads and processes the cgroup may hold.
    #[serde(default)]
    pub cgroup_pids_max: Option<u64>,
    /// The target's cgroup v2 directory, where `memory.events` is read again
    /// at the end.
    #[serde(default)]
    pub cgroup_dir: Option<String>,
    /// `memory.events` `oom_kill` when recording started.
    #[serde(default)]
    pub oom_kills_at_start: Option<u64>,
    /// The host's physical memory (MemTotal): the ceiling of any memory
    /// growth when no cgroup sets a lower one.
    #[serde(default)]
    pub host_memory: Option<u64>,
}

impl Limits {
    /// The memory ceiling that binds first, with what sets it.
    pub fn memory(&self) -> Option<(u64, &'static str)> {
        match (self.cgroup_memory_max, self.host_memory) {
            (Some(c), Some(h)) if h < c => Some((h, "the host's memory")),
            (Some(c), _) => Some((c, "the cgroup's memory.max")),
            (None, Some(h)) => Some((h, "the host's memory")),
            (None, None) => None,
        }
    }
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            schema_version: crate::SCHEMA_VERSION,
            leakscope_version: env!("CARGO_PKG_VERSION").to_string(),
            command: Vec::new(),
            pid: 0,
            labels: Default::default(),
            host: Host::default(),
            interval_ms: 0,
            git_revision: None,
            started_unix_ms: 0,
            ended_unix_ms: None,
            target_end: None,
            sources: Default::default(),
            limits: Default::default(),
            oom_kills: None,
            console_retention_ms: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// The sources a recording reads, as `meta.json`'s `sources` and a
/// sample's `errors` name them: one spelling for the sidecar that writes
/// them and the analysis and report that read them. As a `meta.json` key
/// it is spelt [`SourceName::as_str`]; an unknown name is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceName {
    /// `/proc/PID`: any process, no instrumentation.
    Procfs,
    /// leakscope-agent's heap statistics and profiles (and, in `errors`,
    /// any of its endpoints).
    Agent,
    /// The agent's live tasks by spawn site (a cost line of its own).
    AgentTasks,
    /// The target's Prometheus request counter.
    Metrics,
    /// console-subscriber's gRPC stream.
    Console,
    /// The end-of-run task dump (a cost line; never a sample's error).
    TaskDump,
}

impl SourceName {
    pub const ALL: [SourceName; 6] = [
        SourceName::Procfs,
        SourceName::Agent,
        SourceName::AgentTasks,
        SourceName::Metrics,
        SourceName::Console,
        SourceName::TaskDump,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SourceName::Procfs => "procfs",
            SourceName::Agent => "agent",
            SourceName::AgentTasks => "agent-tasks",
            SourceName::Metrics => "metrics",
            SourceName::Console => "console",
            SourceName::TaskDump => "task-dump",
        }
    }
}

impl std::fmt::Display for SourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `meta.json` keys are the same words the errors and the report use.
    #[test]
    fn source_names_are_spelt_as_their_strings_and_unknown_ones_are_errors() {
        for name in SourceName::ALL {
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{}\"", name.as_str()));
            let mut m = BTreeMap::new();
            m.insert(name, SourceInfo::default());
            let back: BTreeMap<SourceName, SourceInfo> =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back.len(), 1);
        }
        let err = serde_json::from_str::<BTreeMap<SourceName, SourceInfo>>(
            r#"{"prodfs": {"enabled": true, "samples": 1, "failed": 0, "mean_cost_ms": 0.5}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("prodfs"), "{err}");
    }
}
