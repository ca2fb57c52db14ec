//! The console source: live tasks from console-subscriber's gRPC stream, the
//! API tokio-console reads.
//!
//! Updates are deltas: a task arrives once in `new_tasks`, and its end is
//! only signalled by `stats.dropped_at` being set; nothing is ever removed.
//! So the source keeps the id → task map itself, drops a task when its
//! `dropped_at` arrives, and counts live tasks by spawn location and name at
//! each snapshot. A fresh watch replays every task the process still retains,
//! so on reconnect (the target restarted) the map starts over.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use console_api::field::{Name, Value};
use console_api::instrument::instrument_client::InstrumentClient;
use console_api::instrument::InstrumentRequest;
use leakscope_rundir::TaskSample;

#[derive(Default)]
struct State {
    /// Live tasks by span id: (spawn location, name).
    tasks: HashMap<u64, (String, Option<String>)>,
    /// Field names by metadata id, to resolve indexed field names.
    field_names: HashMap<u64, Vec<String>>,
    dropped_events: u64,
    connected: bool,
    last_error: Option<String>,
}

/// Follows one process's console stream in the background.
pub struct ConsoleSource {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConsoleSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConsoleSource {
    /// Starts following `url` (e.g. `http://127.0.0.1:6669`), reconnecting
    /// every `retry` while it cannot.
    pub fn spawn(url: &str, retry: Duration) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(follow(url.to_string(), retry, Arc::clone(&state)));
        Self { state, task }
    }

    /// Waits until the stream is up and its replay applied, at most
    /// `timeout`; the recorder calls it so the baseline sample has tasks.
    pub async fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .connected
            {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Live tasks now; `Err` with the last connection error while the
    /// stream is down.
    pub fn snapshot(&self) -> Result<TaskSample, String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.connected {
            return Err(state
                .last_error
                .clone()
                .unwrap_or_else(|| "not connected yet".to_string()));
        }
        let mut sample = TaskSample {
            live_tasks: state.tasks.len() as u64,
            dropped_events: state.dropped_events,
            ..TaskSample::default()
        };
        let mut by_location: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
        for (location, name) in state.tasks.values() {
            *by_location.entry(location.clone()).or_default() += 1;
            if let Some(name) = name {
                *by_name.entry(name.clone()).or_default() += 1;
            }
        }
        sample.by_location = by_location;
        sample.by_name = by_name;
        Ok(sample)
    }
}

async fn follow(url: String, retry: Duration, state: Arc<Mutex<State>>) {
    loop {
        if let Err(e) = watch(&url, &state).await {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if s.connected || s.last_error.is_none() {
                tracing::debug!(%url, error = %e, "console stream unavailable; retrying");
            }
            s.connected = false;
            s.last_error = Some(format!("{url}: {e}"));
        }
        tokio::time::sleep(retry).await;
    }
}

async fn watch(url: &str, state: &Mutex<State>) -> Result<(), String> {
    let mut client = InstrumentClient::connect(url.to_string())
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let mut stream = client
        .watch_updates(InstrumentRequest {})
        .await
        .map_err(|e| format!("watch_updates: {}", e.message()))?
        .into_inner();
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        // A new watch replays everything still retained: start over.
        s.tasks.clear();
    }
    let mut first = true;
    loop {
        let update = match stream.message().await {
            Ok(Some(u)) => u,
            Ok(None) => return Err("stream ended".into()),
            Err(e) => return Err(format!("stream: {}", e.message())),
        };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        // Connected once the replay is applied, so a first snapshot is not
        // an empty map that merely has not been filled yet.
        let replayed = std::mem::take(&mut first);
        if let Some(meta) = update.new_metadata {
            for m in meta.metadata {
                if let (Some(id), Some(md)) = (m.id, m.metadata) {
                    s.field_names.insert(id.id, md.field_names);
                }
            }
        }
        let Some(tasks) = update.task_update else {
            if replayed {
                s.connected = true;
                s.last_error = None;
            }
            continue;
        };
        s.dropped_events = s.dropped_events.saturating_add(tasks.dropped_events);
        for task in tasks.new_tasks {
            let Some(id) = task.id.map(|i| i.id) else {
                continue;
            };
            let location = task
                .location
                .map(|l| {
                    format!(
                        "{}:{}:{}",
                        l.file.unwrap_or_else(|| "?".into()),
                        l.line.unwrap_or(0),
                        l.column.unwrap_or(0)
                    )
                })
                .unwrap_or_else(|| "<unknown>".into());
            let names = task
                .metadata
                .and_then(|m| s.field_names.get(&m.id))
                .cloned()
                .unwrap_or_default();
            let name = task.fields.iter().find_map(|f| {
                let key = match &f.name {
                    Some(Name::StrName(n)) => n.as_str(),
                    Some(Name::NameIdx(i)) => names.get(*i as usize)?.as_str(),
                    None => return None,
                };
                if key != "task.name" {
                    return None;
                }
                match &f.value {
                    Some(Value::StrVal(v) | Value::DebugVal(v)) => {
                        Some(v.trim_matches('"').to_string())
                    }
                    _ => None,
                }
            });
            s.tasks.insert(id, (location, name));
        }
        for (id, stats) in tasks.stats_update {
            if stats.dropped_at.is_some() {
                s.tasks.remove(&id);
            }
        }
        if replayed {
            s.connected = true;
            s.last_error = None;
        }
    }
}
