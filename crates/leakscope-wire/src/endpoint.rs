//! The agent's paths, said once.

/// An endpoint the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Process, allocator and task metrics for Prometheus.
    Metrics,
    /// The index: features, endpoints, configuration.
    Index,
    /// Allocator counters ([`crate::HeapStats`]).
    HeapStats,
    /// The sampled heap profile, gzipped pprof.
    HeapProfile,
    /// A CPU profile, gzipped pprof.
    CpuProfile,
    /// Runtime metrics and live tasks by spawn site ([`crate::TasksAnswer`]).
    Tasks,
    /// Every task's parked stack ([`crate::TaskDump`]).
    TaskDump,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Metrics,
        Endpoint::Index,
        Endpoint::HeapStats,
        Endpoint::HeapProfile,
        Endpoint::CpuProfile,
        Endpoint::Tasks,
        Endpoint::TaskDump,
    ];

    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Metrics => "/metrics",
            Endpoint::Index => "/debug",
            Endpoint::HeapStats => "/debug/heap/stats",
            Endpoint::HeapProfile => "/debug/pprof/heap",
            Endpoint::CpuProfile => "/debug/pprof/profile",
            Endpoint::Tasks => "/debug/tasks",
            Endpoint::TaskDump => "/debug/tasks/dump",
        }
    }

    /// The endpoint at `path` (without query; a trailing `/` is ignored).
    pub fn from_path(path: &str) -> Option<Self> {
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    /// `base` (`http://127.0.0.1:6060`, with or without a trailing `/`)
    /// joined with this path.
    pub fn url(self, base: &str) -> String {
        format!("{}{}", base.trim_end_matches('/'), self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_maps_back_to_its_endpoint() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
            assert_eq!(Endpoint::from_path(&format!("{}/", e.path())), Some(e));
        }
        assert_eq!(Endpoint::from_path("/debug/pprof/allocs"), None);
        assert_eq!(Endpoint::from_path("/"), None);
        assert_eq!(
            Endpoint::HeapStats.url("http://127.0.0.1:6060/"),
            "http://127.0.0.1:6060/debug/heap/stats"
        );
    }
}
