//! dhat mode: the profiler lives as long as the agent and writes its file
//! when the agent shuts down.
//!
//! dhat only counts allocations made while its `Profiler` exists and writes
//! `dhat-heap.json` when it is dropped, so the agent owns it: started as early
//! as the host starts the agent, dropped by [`crate::Agent::shutdown`] (or
//! the agent's drop), which is the host's graceful shutdown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Whether a dhat profiler is alive in this process (dhat allows one).
pub fn running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

pub struct DhatSession {
    profiler: Option<dhat::Profiler>,
    path: PathBuf,
}

impl DhatSession {
    pub fn start(path: PathBuf) -> Result<Self, crate::AgentError> {
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(crate::AgentError::DhatAlreadyRunning);
        }
        let profiler = dhat::Profiler::builder().file_name(&path).build();
        Ok(Self {
            profiler: Some(profiler),
            path,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Drops the profiler, which writes the file (dhat prints where to stderr).
    pub fn finish(&mut self) {
        if let Some(p) = self.profiler.take() {
            drop(p);
            RUNNING.store(false, Ordering::Release);
        }
    }
}

impl Drop for DhatSession {
    fn drop(&mut self) {
        self.finish();
    }
}
