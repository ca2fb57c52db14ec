//! The agent source: leakscope-agent's heap figures and heap profiles.

use std::time::Duration;

use leakscope_rundir::HeapSample;

use super::http::{self, HttpClient, HttpError};

/// Cheap to clone (the client is shared), so a profile can be fetched on a
/// task of its own.
#[derive(Clone)]
pub struct AgentSource {
    base: String,
    client: HttpClient,
    timeout: Duration,
}

impl AgentSource {
    /// `base` is the agent's address, e.g. `http://127.0.0.1:6060`.
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: http::client(),
            timeout,
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
