//! Heap profiles as leakscope-agent serves them (jemalloc_pprof's gzipped
//! pprof), reduced to bytes in use per call stack, so two can be diffed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use pprof::protos::{Message, Profile};

/// One frame of a stack, leaf first in [`Stacks`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: i64,
}

/// Bytes in use by call stack.
pub type Stacks = HashMap<Vec<Frame>, f64>;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a pprof profile: {message}")]
    Decode {
        path: std::path::PathBuf,
        message: String,
    },
}

pub fn read(path: &Path) -> Result<Stacks, ProfileError> {
    let raw = std::fs::read(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| ProfileError::Decode {
                path: path.to_path_buf(),
                message: format!("gzip: {e}"),
            })?;
        out
    } else {
        raw
    };
    let profile = Profile::decode(&bytes[..]).map_err(|e| ProfileError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(stacks(&profile))
}

/// The in-use bytes value of each sample (the `inuse_space` / `space` value
/// type; jemalloc_pprof has one value), summed per stack.
pub fn stacks(p: &Profile) -> Stacks {
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let index = p
        .sample_type
        .iter()
        .position(|t| matches!(s(t.ty).as_str(), "inuse_space" | "space"))
        .unwrap_or(p.sample_type.len().saturating_sub(1));
    let functions: HashMap<u64, (String, String)> = p
        .function
        .iter()
        .map(|f| (f.id, (s(f.name), s(f.filename))))
        .collect();
    let locations: HashMap<u64, Vec<Frame>> = p
        .location
        .iter()
        .map(|l| {
            let frames = l
                .line
                .iter()
                .map(|line| {
                    let (function, file) = functions
                        .get(&line.function_id)
                        .cloned()
                        .unwrap_or_else(|| (format!("{:#x}", l.address), String::new()));
                    Frame {
                        function,
                        file,
                        line: line.line,
                    }
                })
                .collect::<Vec<_>>();
            let frames = if frames.is_empty() {
                vec![Frame {
                    function: format!("{:#x}", l.address),
                    file: String::new(),
                    line: 0,
                }]
            } else {
                frames
            };
            (l.id, frames)
        })
        .collect();
    let mut out = Stacks::new();
    for sample in &p.sample {
        let Some(v) = sample.value.get(index) else {
            continue;
        };
        let stack: Vec<Frame> = sample
            .location_id
            .iter()
            .flat_map(|id| locations.get(id).cloned().unwrap_or_default())
            .collect();
        *out.entry(stack).or_default() += *v as f64;
    }
    out
}

/// Symbols of the machinery around an allocation (allocator, runtime,
/// standard library), for frames without a useful file name.
const MACHINERY: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "hyper::",
    "hyper_util::",
    "h2::",
    "futures",
    "bytes::",
    "tikv_jemalloc",
    "_rjem",
    "je_",
    "jemalloc",
    "prof_",
    "imalloc",
    "ialloc",
    "irallocx",
    "rallocx",
    "mallocx",
    "malloc",
    "calloc",
    "realloc",
    "arena_",
    "tcache_",
    "__rust",
    "__rdl",
    "__rg_",
    "rust_",
    "leakscope_agent::",
    "tracing",
    "backtrace::",
    "hashbrown::",
    "__libc",
    "_start",
    "start_thread",
    "clone",
];

/// Where code that is not the target's lives: the toolchain's sources
/// (`/rustc/HASH/library/…`), downloaded crates (cargo's registry and git
/// checkouts), C code built by build scripts (jemalloc), and
/// leakscope-agent itself (its profile dumps allocate).
const FOREIGN_PATHS: &[&str] = &[
    "/rustc/",
    "/leakscope-agent/src/",
    "/.cargo/registry/",
    "/.cargo/git/",
    "/build/",
    "/library/std/",
    "/library/core/",
    "/library/alloc/",
];

/// Index of the first frame (leaf first) in the target's own code: the
/// first whose file is not the toolchain's, a dependency's or a build
/// script's, and whose name is not allocator or runtime machinery.
pub fn own_frame(stack: &[Frame]) -> Option<usize> {
    stack.iter().position(|f| {
        let name = f.function.trim_start_matches('<');
        let foreign_file = FOREIGN_PATHS.iter().any(|p| f.file.contains(p));
        let machinery = MACHINERY.iter().any(|m| name.starts_with(m));
        !f.function.is_empty() && !f.function.starts_with("0x") && !foreign_file && !machinery
    })
}
