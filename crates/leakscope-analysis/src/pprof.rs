//! Heap profiles as leakscope-agent serves them (leakscope-pprof's gzipped
//! pprof), reduced to bytes in use per call stack, so two can be diffed.

use std::collections::HashMap;
use std::path::Path;

/// One frame of a stack, leaf first in [`Stacks`].
pub type Frame = leakscope_pprof::StackFrame;

/// Bytes in use by call stack.
pub type Stacks = HashMap<Vec<Frame>, f64>;

/// The most a profile may take once decompressed. The agent's are a few
/// MB; a file past this is not one of them, and reading it whole would
/// let a small gzip take the analysis's memory.
pub const MAX_PROFILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Decode {
        path: std::path::PathBuf,
        source: leakscope_pprof::PprofError,
    },
}

pub fn read(path: &Path) -> Result<Stacks, ProfileError> {
    use std::io::Read;
    let io = |source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    };
    // The file itself is bounded too: read at most one byte past the limit.
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let profile = leakscope_pprof::decode(&raw, MAX_PROFILE_BYTES).map_err(|source| {
        ProfileError::Decode {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(stacks(&profile))
}

/// The in-use bytes of each sample (`inuse_space`), summed per stack.
pub fn stacks(p: &leakscope_pprof::Profile) -> Stacks {
    let mut out = Stacks::new();
    for (stack, v) in leakscope_pprof::stacks(p, "inuse_space") {
        *out.entry(stack).or_default() += v as f64;
    }
    out
}

/// Runtime and library crates around an allocation, for frames without a
/// useful file name; the allocator and the standard library's allocation
/// paths are [`leakscope_pprof::machinery`]'s.
const MACHINERY: &[&str] = &[
    "std::",
    "tokio::",
    "hyper::",
    "hyper_util::",
    "h2::",
    "futures",
    "bytes::",
    "rust_",
    "leakscope_agent::",
    "tracing",
    "backtrace::",
    "__libc",
    "_start",
    "start_thread",
    "clone",
];

/// leakscope-agent's own source: its profile dumps allocate, and that is
/// the agent's cost, not the service's code. The rest of "whose code is
/// this" is the one rule in `leakscope_wire::code`.
const AGENT_PATH: &str = "/leakscope-agent/src/";

/// Index of the first frame (leaf first) in the target's own code: the
/// first whose file is the service's own (`leakscope_wire::code`), and
/// whose name is not allocator or runtime machinery.
pub fn own_frame(stack: &[Frame]) -> Option<usize> {
    stack.iter().position(|f| {
        let name = f.function.trim_start_matches('<');
        // A frame with no file (no debuginfo) is judged by its name alone.
        let foreign_file = !f.file.is_empty()
            && (!leakscope_wire::code::is_own_path(&f.file) || f.file.contains(AGENT_PATH));
        let machinery = MACHINERY.iter().any(|m| name.starts_with(m))
            || leakscope_pprof::machinery(&f.function, &f.file).is_some();
        !f.function.is_empty() && !f.function.starts_with("0x") && !foreign_file && !machinery
    })
}
