//! CPU profiles with pprof-rs.
//!
//! Two choices differ from pprof-rs's README:
//! - No blocklist. The README's `["libc", "libgcc", "pthread", "vdso"]`
//!   drops every sample whose innermost frame is in a syscall wrapper, which
//!   for an I/O server is most of its time (55 of 411 samples kept in one
//!   measured test). The blocklist exists because libgcc's unwinder is not
//!   signal-safe; we build pprof-rs with its `framehop-unwinder` instead, which
//!   unwinds without allocating or locking, so there is nothing to block.
//! - The profile is gzipped, as Go's `/debug/pprof/profile` serves it.
//!
//! pprof-rs keeps its sample collector after the first profile, for the life
//! of the process (about 23 MB measured on the release server); the endpoint
//! says so in a response header because it shows up in every heap
//! measurement taken afterwards. The larger cost, backtrace-rs's cache of
//! parsed DWARF (about 75 MB more), is released after each profile.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pprof::protos::Message;

use crate::AgentError;

/// Sent with every CPU profile: the one side effect a leak hunter must know.
pub const RETAINED_HEAP_NOTE: &str = "pprof-rs keeps its sample collector (about 23 MB \
measured) allocated for the rest of the process after the first CPU profile; heap figures \
taken after this include it";

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Held while a profile runs; a second request gets 409 instead of waiting.
pub struct Slot(());

impl Slot {
    pub fn try_take() -> Option<Slot> {
        (!RUNNING.swap(true, Ordering::AcqRel)).then_some(Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

const EMPTY_SVG: &str = r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="10" y="35" font-family="monospace" font-size="14">No CPU samples: the process used no CPU time while it was profiled.</text></svg>
"#;

#[derive(Debug, Clone, Copy)]
pub enum Format {
    Pprof,
    Svg,
}

/// How long a start waits for pprof-rs's profiler to read as stopped.
const START_PATIENCE: Duration = Duration::from_secs(1);

/// Starts pprof-rs's profiler (one per process). It can still read as
/// running just after the previous profile's guard was dropped, though
/// that drop stops it before [`Slot`] is released: seen in about 1 of 12
/// runs of the agent's CPU-profile test, each time a profile started
/// within 50 ms of one ending, and not explained by pprof-rs 0.15's code.
/// So a start that finds it running is tried again for
/// [`START_PATIENCE`] before the request fails.
async fn start(hz: i32) -> Result<pprof::ProfilerGuard<'static>, AgentError> {
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        match pprof::ProfilerGuardBuilder::default().frequency(hz).build() {
            Ok(guard) => return Ok(guard),
            Err(pprof::Error::Running) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("pprof-rs still reads as running; trying again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(AgentError::Profile(e.to_string())),
        }
    }
}

/// Samples every thread of the process for `duration` at `hz`.
///
/// The profiler stops when the returned future is dropped (the client went
/// away), because the guard lives inside it.
pub async fn profile(
    _slot: &Slot,
    duration: Duration,
    hz: i32,
    format: Format,
) -> Result<Vec<u8>, AgentError> {
    let guard = start(hz).await?;
    tokio::time::sleep(duration).await;
    // Symbolizing takes a while; keep it off the async thread.
    tokio::task::spawn_blocking(move || {
        let report = guard.report().build();
        drop(guard);
        // pprof-rs symbolizes through backtrace-rs, whose global cache keeps
        // the binary's parsed DWARF: ~100 MB measured on the release server,
        // for the rest of the process. Dropping it costs a re-parse on the
        // next profile and spares every later heap measurement the step.
        backtrace::clear_symbol_cache();
        let report = report.map_err(|e| AgentError::Profile(e.to_string()))?;
        match format {
            // inferno writes nothing at all for an empty profile; an idle
            // process deserves an image that says so, not an empty 200.
            Format::Svg if report.data.is_empty() => Ok(EMPTY_SVG.as_bytes().to_vec()),
            Format::Svg => {
                let mut svg = Vec::new();
                report
                    .flamegraph(&mut svg)
                    .map_err(|e| AgentError::Profile(e.to_string()))?;
                Ok(svg)
            }
            Format::Pprof => {
                let proto = report
                    .pprof()
                    .map_err(|e| AgentError::Profile(e.to_string()))?;
                let raw = proto.encode_to_vec();
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&raw)
                    .and_then(|()| gz.finish())
                    .map_err(|e| AgentError::Profile(format!("gzip: {e}")))
            }
        }
    })
    .await
    .map_err(|e| AgentError::Profile(format!("profile task: {e}")))?
}
