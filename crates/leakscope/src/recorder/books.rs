//! The recorder's books: what each source cost, how often it failed, and
//! this tick's errors. Every reading is booked here and nowhere else, so a
//! source's figures in `meta.json` and its entries in a sample's `errors`
//! cannot disagree.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use leakscope_rundir::{SourceError, SourceInfo, SourceName};

use super::poll::{Reading, Taken};

/// A source's two names: `source` for a sample's errors and the warning
/// (one dead agent is one warning, whichever of its endpoints failed),
/// `cost` for its line in `meta.json`'s sources.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub source: &'static str,
    pub cost: SourceName,
}

pub const PROCFS: Key = Key {
    source: SourceName::Procfs.as_str(),
    cost: SourceName::Procfs,
};
pub const AGENT_HEAP: Key = Key {
    source: SourceName::Agent.as_str(),
    cost: SourceName::Agent,
};
pub const AGENT_TASKS: Key = Key {
    source: SourceName::Agent.as_str(),
    cost: SourceName::AgentTasks,
};
pub const METRICS: Key = Key {
    source: SourceName::Metrics.as_str(),
    cost: SourceName::Metrics,
};
pub const CONSOLE: Key = Key {
    source: SourceName::Console.as_str(),
    cost: SourceName::Console,
};
/// The end-of-run task dump: a cost line, never a sample's error (there is
/// no sample after it).
pub const TASK_DUMP: SourceName = SourceName::TaskDump;

#[derive(Default)]
struct Cost {
    samples: u64,
    failed: u64,
    total: Duration,
    error: Option<String>,
}

impl Cost {
    fn add(&mut self, took: Duration, error: Option<&str>) {
        self.samples += 1;
        self.failed += u64::from(error.is_some());
        self.total += took;
        if self.error.is_none() {
            self.error = error.map(str::to_string);
        }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            enabled: true,
            error: self.error.clone(),
            samples: self.samples,
            failed: self.failed,
            mean_cost_ms: if self.samples == 0 {
                0.0
            } else {
                self.total.as_secs_f64() * 1000.0 / self.samples as f64
            },
        }
    }
}

#[derive(Default)]
pub struct Books {
    costs: BTreeMap<SourceName, Cost>,
    errors: Vec<SourceError>,
}

impl Books {
    /// Books a reading (its cost, its error if any) under `key`; its value
    /// and when it was taken, if it has one. A source not asked costs
    /// nothing.
    pub fn account<T, E: Display>(
        &mut self,
        reading: Reading<T, E>,
        key: Key,
    ) -> Option<(T, Taken)> {
        let (value, taken, error) = match reading {
            Reading::None => return None,
            Reading::Got(v, taken) => (Some(v), taken, None),
            Reading::Failed(e, taken) => (None, taken, Some(e.to_string())),
            Reading::Late(taken) => (
                None,
                taken,
                Some(format!(
                    "no answer within the tick ({} ms so far); the read goes on",
                    taken.took.as_millis()
                )),
            ),
        };
        self.cost(key.cost, taken.took, error.as_deref());
        if let Some(e) = error {
            self.error(key.source, e);
        }
        value.map(|v| (v, taken))
    }

    pub fn cost(&mut self, name: SourceName, took: Duration, error: Option<&str>) {
        self.costs.entry(name).or_default().add(took, error);
    }

    /// An error of this tick that has no cost of its own (a heap profile's).
    pub fn error(&mut self, source: &str, message: String) {
        self.errors.push(SourceError {
            source: source.to_string(),
            message,
        });
    }

    /// This tick's errors, in the order they were booked; the next tick
    /// starts with none.
    pub fn take_errors(&mut self) -> Vec<SourceError> {
        std::mem::take(&mut self.errors)
    }

    /// Each source's line for `meta.json`.
    pub fn infos(&self) -> impl Iterator<Item = (SourceName, SourceInfo)> + '_ {
        self.costs.iter().map(|(name, cost)| (*name, cost.info()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn taken(ms: u64) -> Taken {
        Taken {
            started: Instant::now(),
            took: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_source_is_booked_once_per_reading_and_keeps_its_first_error() {
        let mut books = Books::default();
        let got = books.account(Reading::<_, String>::Got(7, taken(2)), AGENT_HEAP);
        assert_eq!(got.map(|g| g.0), Some(7));
        assert!(books
            .account(
                Reading::<u8, String>::Failed("refused".into(), taken(4)),
                AGENT_HEAP
            )
            .is_none());
        assert!(books
            .account(Reading::<u8, String>::Late(taken(6)), AGENT_TASKS)
            .is_none());
        assert!(books
            .account(Reading::<u8, String>::None, METRICS)
            .is_none());

        let errors = books.take_errors();
        let sources: Vec<_> = errors.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(sources, ["agent", "agent"]);
        assert!(errors[1]
            .message
            .contains("no answer within the tick (6 ms"));
        assert!(books.take_errors().is_empty());

        let infos: BTreeMap<_, _> = books.infos().collect();
        assert_eq!(
            infos.keys().copied().collect::<Vec<_>>(),
            [SourceName::Agent, SourceName::AgentTasks]
        );
        let heap = &infos[&SourceName::Agent];
        assert_eq!((heap.samples, heap.failed), (2, 1));
        assert_eq!(heap.error.as_deref(), Some("refused"));
        assert!((heap.mean_cost_ms - 3.0).abs() < 1e-9, "{heap:?}");
    }
}
