//! The agent source: leakscope-agent's heap figures and heap profiles.

use std::time::Duration;

use leakscope_rundir::{HeapSample, TaskDump, TaskSample, TaskSites, TaskSource};

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
        let url = format!("{}/debug/heap/stats", self.base);
        let body = http::get(&self.client, &url, self.timeout).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| HttpError::Failed {
                url: url.clone(),
                message: format!("not the agent's JSON: {e}"),
            })?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Ok(HeapSample {
            allocated: n("allocated"),
            resident: n("resident"),
            active: n("active"),
            allocations_total: n("allocations_total"),
            allocated_bytes_total: n("allocated_bytes_total"),
            requested_live_bytes: n("requested_live_bytes"),
        })
    }

    /// Live tasks from the agent's task hooks; `Ok(None)` when the target's
    /// runtime was built without them (the console is the fallback then).
    pub async fn tasks(&self) -> Result<Option<TaskSample>, HttpError> {
        use std::sync::atomic::Ordering;
        if self.no_hooks.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let url = format!("{}/debug/tasks", self.base);
        let body = http::get(&self.client, &url, self.timeout).await?;
        #[derive(serde::Deserialize)]
        struct Tasks {
            #[serde(default)]
            hooks: Option<TaskSites>,
            #[serde(default)]
            console_retention_ms: Option<u64>,
        }
        let t: Tasks = serde_json::from_slice(&body).map_err(|e| HttpError::Failed {
            url: url.clone(),
            message: format!("not the agent's JSON: {e}"),
        })?;
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
        let url = format!("{}/debug/tasks/dump?seconds={secs}", self.base);
        // Symbolizing thousands of stacks comes on top of the deadline.
        let body = http::get(&self.client, &url, Duration::from_secs(secs + 60)).await?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Failed {
            url,
            message: format!("not the agent's task dump: {e}"),
        })
    }

    /// The heap profile, gzipped pprof, as the agent serves it. Dumping
    /// takes up to a few hundred ms the first time, so the deadline is longer.
    pub async fn heap_profile(&self) -> Result<bytes::Bytes, HttpError> {
        let url = format!("{}/debug/pprof/heap", self.base);
        http::get(
            &self.client,
            &url,
            self.timeout.max(Duration::from_secs(10)),
        )
        .await
    }
}
