//! `/debug/heap/stats`: the allocator's counters.

use serde::{Deserialize, Serialize};

use crate::required;

/// The allocator a build of the agent installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocator {
    Jemalloc,
    Dhat,
    System,
}

impl Allocator {
    pub const fn name(self) -> &'static str {
        match self {
            Allocator::Jemalloc => "jemalloc",
            Allocator::Dhat => "dhat",
            Allocator::System => "system",
        }
    }
}

/// A snapshot of the allocator's counters.
///
/// Fields a given allocator cannot supply are `None` (JSON `null`) rather
/// than zero, so a client never mistakes "unknown" for "nothing"; a field
/// missing from the JSON is a decoding error that names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeapStats {
    pub allocator: Allocator,
    /// Bytes in live allocations: the figure a leak grows.
    #[serde(deserialize_with = "required")]
    pub allocated: Option<u64>,
    /// Bytes in active pages (allocated plus fragmentation inside them).
    #[serde(deserialize_with = "required")]
    pub active: Option<u64>,
    /// Bytes physically resident in the allocator's mappings. resident −
    /// allocated is memory the allocator holds, not a leak.
    #[serde(deserialize_with = "required")]
    pub resident: Option<u64>,
    /// Bytes mapped by the allocator.
    #[serde(deserialize_with = "required")]
    pub mapped: Option<u64>,
    /// Bytes retained: unmapped-but-reserved virtual memory kept for reuse.
    #[serde(deserialize_with = "required")]
    pub retained: Option<u64>,
    /// Allocator metadata bytes.
    #[serde(deserialize_with = "required")]
    pub metadata: Option<u64>,
    /// Allocations since start (cumulative, so rate = Δ / Δt; a
    /// reallocation counts as one allocation and one deallocation), where
    /// the allocator counts them: dhat. jemalloc does not count calls
    /// without cost on its fast path, so a jemalloc build answers `null`.
    #[serde(deserialize_with = "required")]
    pub allocations_total: Option<u64>,
    /// Deallocations since start (dhat only, as above).
    #[serde(deserialize_with = "required")]
    pub deallocations_total: Option<u64>,
    /// Bytes of all allocations since start (cumulative): the allocation
    /// *rate* in bytes, which churn grows even when nothing leaks. dhat
    /// counts requested sizes; jemalloc its size classes, summed over its
    /// per-thread counters.
    #[serde(deserialize_with = "required")]
    pub allocated_bytes_total: Option<u64>,
    /// Bytes allocated and not yet freed, counted as `allocated_bytes_total`
    /// is. Unlike `allocated` it excludes thread-cache slack, so it moves
    /// only when the program's own allocations do. Named
    /// `requested_live_bytes` before jemalloc's own counters replaced the
    /// agent's; old answers still read.
    #[serde(deserialize_with = "required", alias = "requested_live_bytes")]
    pub live_bytes: Option<u64>,
    /// Live allocation count where the allocator knows it exactly (dhat).
    #[serde(deserialize_with = "required")]
    pub live_allocations: Option<u64>,
    /// Peak of `allocated` (dhat only).
    #[serde(deserialize_with = "required")]
    pub peak_allocated: Option<u64>,
    /// Heap profile sampling interval in bytes, when heap profiling is on.
    #[serde(deserialize_with = "required")]
    pub sample_interval_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> HeapStats {
        HeapStats {
            allocator: Allocator::Jemalloc,
            allocated: Some(1),
            active: Some(2),
            resident: Some(3),
            mapped: None,
            retained: None,
            metadata: None,
            allocations_total: Some(4),
            deallocations_total: Some(5),
            allocated_bytes_total: Some(6),
            live_bytes: Some(7),
            live_allocations: None,
            peak_allocated: None,
            sample_interval_bytes: Some(524_288),
        }
    }

    #[test]
    fn round_trips_with_nulls() {
        let json = serde_json::to_string(&stats()).unwrap();
        assert!(json.contains("\"allocator\":\"jemalloc\""), "{json}");
        assert!(json.contains("\"mapped\":null"), "{json}");
        let back: HeapStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stats());
    }

    #[test]
    fn a_missing_or_renamed_field_is_an_error_that_names_it() {
        let mut v = serde_json::to_value(stats()).unwrap();
        let allocated = v.as_object_mut().unwrap().remove("allocated").unwrap();
        let err = serde_json::from_value::<HeapStats>(v.clone()).unwrap_err();
        assert!(
            err.to_string().contains("missing field `allocated`"),
            "{err}"
        );
        v.as_object_mut()
            .unwrap()
            .insert("allocated_now".into(), allocated);
        let err = serde_json::from_value::<HeapStats>(v).unwrap_err();
        assert!(err.to_string().contains("`allocated`"), "{err}");
    }

    /// An agent from before the rename still answers `requested_live_bytes`.
    #[test]
    fn the_old_name_of_live_bytes_still_reads() {
        let mut v = serde_json::to_value(stats()).unwrap();
        let o = v.as_object_mut().unwrap();
        let live = o.remove("live_bytes").unwrap();
        o.insert("requested_live_bytes".into(), live);
        let back: HeapStats = serde_json::from_value(v).unwrap();
        assert_eq!(back, stats());
    }
}
