//! The agent source: leakscope-agent's heap figures and heap profiles.

use std::time::Duration;

use leakscope_rundir::{HeapSample, TaskDump, TaskSample, TaskSource};
use leakscope_wire::{Endpoint, HeapStats, TasksAnswer};

use super::http::{self, HttpClient, HttpError};

/// Cheap to clone (the client is shared), so a profile can be fetched on a
/// task of its own.
#[derive(Clone)]
pub struct AgentSource {
    base: String,
    client: HttpClient,
    timeout: Duration,
    /// Set once the agent said its runtime has no task hooks: a runtime
    /// does not gain them later, so the tick stops asking (each request is
    /// time the tick spends off the target's figures).
    no_hooks: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AgentSource {
    /// `base` is the agent's address, e.g. `http://127.0.0.1:6060`.
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: http::client(),
            timeout,
            no_hooks: Default::default(),
        }
    }

    pub async fn heap(&self) -> Result<HeapSample, HttpError> {
        let url = Endpoint::HeapStats.url(&self.base);
        let body = http::get(&self.client, &url, self.timeout).await?;
        let s: HeapStats = decode(&url, &body)?;
        Ok(HeapSample {
            allocated: s.allocated,
            resident: s.resident,
            active: s.active,
            allocations_total: s.allocations_total,
            allocated_bytes_total: s.allocated_bytes_total,
            live_bytes: s.live_bytes,
        })
    }

    /// Live tasks from the agent's task hooks; `Ok(None)` when the target's
    /// runtime was built without them (the console is the fallback then).
    pub async fn tasks(&self) -> Result<Option<TaskSample>, HttpError> {
        use std::sync::atomic::Ordering;
        if self.no_hooks.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let url = Endpoint::Tasks.url(&self.base);
        let body = http::get(&self.client, &url, self.timeout).await?;
        let t: TasksAnswer = decode(&url, &body)?;
        self.no_hooks.store(t.hooks.is_none(), Ordering::Relaxed);
        let console_retention_ms = t.console_retention_ms;
        Ok(t.hooks.map(|h| TaskSample {
            source: TaskSource::AgentHooks,
            live_tasks: h.live,
            by_location: h
                .sites
                .into_iter()
                .filter(|s| s.live > 0)
                .map(|s| (s.location, s.live))
                .collect(),
            by_name: Default::default(),
            dropped_events: 0,
            spawned_total: Some(h.spawned_total),
            console_retention_ms,
        }))
    }

    /// A task dump, grouped by the agent; `deadline` bounds the agent's wait
    /// for the runtime (a blocked worker stalls a dump).
    pub async fn task_dump(&self, deadline: Duration) -> Result<TaskDump, HttpError> {
        let secs = deadline.as_secs().clamp(1, 60);
        let url = format!("{}?seconds={secs}", Endpoint::TaskDump.url(&self.base));
        // Symbolizing thousands of stacks comes on top of the deadline.
        let body = http::get(&self.client, &url, Duration::from_secs(secs + 60)).await?;
        decode(&url, &body)
    }

    /// The heap profile, gzipped pprof, as the agent serves it. Dumping
    /// takes up to a few hundred ms the first time, so the deadline is longer.
    pub async fn heap_profile(&self) -> Result<bytes::Bytes, HttpError> {
        let url = Endpoint::HeapProfile.url(&self.base);
        http::get(
            &self.client,
            &url,
            self.timeout.max(Duration::from_secs(10)),
        )
        .await
    }
}

/// The agent's JSON as the wire type: a field the agent renamed or dropped
/// is an error naming it, never a silent `null`.
fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::Failed {
        url: url.to_string(),
        message: format!("not the agent's answer: {e}"),
    })
}
