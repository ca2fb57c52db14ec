//! Heap figures and profiles from whichever allocator the build installed.

#[cfg(not(any(feature = "jemalloc", feature = "dhat-heap")))]
use crate::AgentError;

/// The allocator's counters, as `/debug/heap/stats` serves them: the
/// type is the wire crate's, so the sidecar decodes what is encoded here.
pub use leakscope_wire::HeapStats;

#[cfg(feature = "jemalloc")]
mod imp {
    use super::HeapStats;
    use crate::AgentError;
    use tikv_jemalloc_ctl::{epoch, raw, stats};

    fn ctl(what: &'static str, e: tikv_jemalloc_ctl::Error) -> AgentError {
        AgentError::Allocator(format!("reading {what}: {e}"))
    }

    pub fn stats() -> Result<HeapStats, AgentError> {
        // The stats are a cached snapshot until the epoch advances.
        epoch::advance().map_err(|e| ctl("epoch", e))?;
        let size = |r: Result<usize, tikv_jemalloc_ctl::Error>, what| {
            r.map(|v| Some(v as u64)).map_err(|e| ctl(what, e))
        };
        let totals = crate::allocator::counting::totals();
        Ok(HeapStats {
            allocator: leakscope_wire::Allocator::Jemalloc,
            allocated: size(stats::allocated::read(), "stats.allocated")?,
            active: size(stats::active::read(), "stats.active")?,
            resident: size(stats::resident::read(), "stats.resident")?,
            mapped: size(stats::mapped::read(), "stats.mapped")?,
            retained: size(stats::retained::read(), "stats.retained")?,
            metadata: size(stats::metadata::read(), "stats.metadata")?,
            // jemalloc counts bytes, not calls (see allocator::counting).
            allocations_total: None,
            deallocations_total: None,
            allocated_bytes_total: totals.map(|(allocated, _)| allocated),
            // Each thread's counters are read in turn, so frees on one may
            // be read ahead of the allocations they free on another.
            live_bytes: totals.map(|(allocated, freed)| allocated.saturating_sub(freed)),
            live_allocations: None,
            peak_allocated: None,
            sample_interval_bytes: sample_interval_lg()?.map(|lg| 1u64 << lg),
        })
    }

    /// `None` when the process runs without heap profiling (e.g. a
    /// `MALLOC_CONF=prof:false` override).
    pub fn sample_interval_lg() -> Result<Option<u32>, AgentError> {
        // SAFETY: documented bool / size_t controls.
        let on: bool = unsafe { raw::read(b"opt.prof\0") }.map_err(|e| ctl("opt.prof", e))?;
        if !on {
            return Ok(None);
        }
        let lg: usize =
            unsafe { raw::read(b"prof.lg_sample\0") }.map_err(|e| ctl("prof.lg_sample", e))?;
        Ok(Some(lg as u32))
    }

    /// Resets the profile's statistics and sets a new sampling interval.
    pub fn set_sample_interval_lg(lg: u32) -> Result<(), AgentError> {
        if sample_interval_lg()?.is_none() {
            return Err(AgentError::HeapProfilingOff);
        }
        // SAFETY: prof.reset takes a size_t.
        unsafe { raw::write(b"prof.reset\0", lg as usize) }.map_err(|e| ctl("prof.reset", e))?;
        Ok(())
    }

    /// Turns sampling on or off (`prof.active`) without touching what was
    /// already sampled.
    ///
    /// Why it exists: `prof.reset` alone cannot promise an empty profile.
    /// Each thread draws the distance to its next sample when it takes one,
    /// so after a reset to a coarser interval every thread still takes one
    /// more sample at the old spacing, and whatever it catches may stay
    /// live. With sampling off, jemalloc takes no sample at all, so "pause,
    /// then reset" gives a profile that is empty for certain (a clean
    /// baseline, or a test of the empty case).
    pub fn set_sampling_active(active: bool) -> Result<(), AgentError> {
        if sample_interval_lg()?.is_none() {
            return Err(AgentError::HeapProfilingOff);
        }
        // SAFETY: prof.active is a documented writable bool.
        unsafe { raw::write(b"prof.active\0", active) }.map_err(|e| ctl("prof.active", e))?;
        Ok(())
    }

    /// Whether sampling is on now (`prof.active`).
    pub fn sampling_active() -> Result<bool, AgentError> {
        // SAFETY: prof.active is a documented readable bool.
        unsafe { raw::read(b"prof.active\0") }.map_err(|e| ctl("prof.active", e))
    }

    /// What the flamegraph endpoint shows when no sampled allocation is live.
    const EMPTY_FLAMEGRAPH: &[u8] = br#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg"><text x="10" y="35" font-family="monospace" font-size="14">inuse_space: no sampled allocation is live</text></svg>
"#;

    pub enum Format {
        Pprof,
        Svg,
    }

    /// Dumps the sampled heap profile. Blocking: it writes a temp file and
    /// symbolizes (tens to hundreds of ms, logged), so call it off the async
    /// workers.
    pub fn profile(format: Format) -> Result<Vec<u8>, AgentError> {
        let ctl = jemalloc_pprof::PROF_CTL
            .as_ref()
            .ok_or(AgentError::HeapProfilingOff)?;
        let mut ctl = ctl.blocking_lock();
        if !ctl.activated() {
            return Err(AgentError::HeapProfilingOff);
        }
        let stacks = ctl
            .dump_profile()
            .map_err(|e| AgentError::Profile(format!("{e:#}")))?;
        drop(ctl);
        let period = sample_interval_lg()?.map(|lg| 1u64 << lg);
        // Our own symbolizer, not jemalloc_pprof's: it names inlined frames
        // by their qualified paths and cuts jemalloc and the allocation
        // library from the leaf end. Its tables are dropped with it, so a
        // recorder dumping every 10 s does not see them as a heap step.
        let (profile, built) = leakscope_pprof::heap_profile(&stacks, period);
        tracing::debug!(
            samples = built.samples,
            addresses = built.addresses,
            trimmed = built.trimmed,
            elapsed_ms = built.elapsed.as_millis() as u64,
            "heap profile symbolized"
        );
        match format {
            Format::Pprof => Ok(leakscope_pprof::encode_gzip(&profile)),
            Format::Svg => flamegraph(&leakscope_pprof::folded(&profile, "inuse_space")),
        }
    }

    fn flamegraph(lines: &[String]) -> Result<Vec<u8>, AgentError> {
        // inferno refuses an empty input, and a quiet process (or one
        // sampled at a coarse interval) often has no sampled allocation
        // live: that is an answer, not a server error.
        if lines.is_empty() {
            return Ok(EMPTY_FLAMEGRAPH.to_vec());
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = "inuse_space".to_string();
        opts.count_name = "bytes".to_string();
        let mut svg = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
            .map_err(|e| AgentError::Profile(format!("flamegraph: {e}")))?;
        Ok(svg)
    }
}

// Only the compile_error! when both are on, not a cascade of clashes.
#[cfg(all(feature = "dhat-heap", not(feature = "jemalloc")))]
mod imp {
    use super::HeapStats;
    use crate::AgentError;

    pub fn stats() -> Result<HeapStats, AgentError> {
        // dhat panics if asked for stats with no profiler running.
        if !crate::dhat_session::running() {
            return Err(AgentError::Allocator(
                "dhat is the allocator but its profiler is not running (the agent starts it)"
                    .into(),
            ));
        }
        let s = dhat::HeapStats::get();
        Ok(HeapStats {
            allocator: leakscope_wire::Allocator::Dhat,
            allocated: Some(s.curr_bytes as u64),
            active: None,
            resident: None,
            mapped: None,
            retained: None,
            metadata: None,
            allocations_total: Some(s.total_blocks),
            deallocations_total: Some(s.total_blocks - s.curr_blocks as u64),
            allocated_bytes_total: Some(s.total_bytes),
            live_bytes: Some(s.curr_bytes as u64),
            live_allocations: Some(s.curr_blocks as u64),
            peak_allocated: Some(s.max_bytes as u64),
            sample_interval_bytes: None,
        })
    }
}

#[cfg(feature = "jemalloc")]
pub use imp::{
    profile, sample_interval_lg, sampling_active, set_sample_interval_lg, set_sampling_active,
    Format,
};

#[cfg(any(feature = "jemalloc", feature = "dhat-heap"))]
pub use imp::stats;

/// With the system allocator there is nothing to read.
#[cfg(not(any(feature = "jemalloc", feature = "dhat-heap")))]
pub fn stats() -> Result<HeapStats, AgentError> {
    Err(AgentError::FeatureOff {
        endpoint: leakscope_wire::Endpoint::HeapStats.path(),
        feature: "jemalloc` or `dhat-heap",
    })
}
