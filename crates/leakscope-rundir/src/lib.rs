//! The run directory: the contract between the recorder and the report.
//!
//! ```text
//! RUN_DIR/
//!   meta.json       what was recorded, how, and how the target ended
//!   samples.jsonl   one JSON object per tick, appended and flushed per tick
//!   profiles/       heap profiles (gzipped pprof) named by tick
//!   target.log      the target's output (`run` only)
//!   dhat-heap.json  dhat's profile, when the target wrote one here
//!   tasks-dump.json the agent's task dump at the end: live tasks grouped by
//!                   spawn site and parked stack
//! ```
//!
//! The writer flushes every sample to the OS as it is appended, so a recorder
//! that crashes loses at most the tick it was writing; the reader skips such
//! a torn last line with a warning. `meta.json` is replaced atomically
//! (write, then rename), so it is always whole. The schema is versioned: the
//! reader accepts its own version and older ones and refuses newer ones with
//! an error that says which.
//!
//! This crate does file I/O only: no network, no clock beyond what callers
//! pass in, so the report side can depend on it freely.

mod meta;
mod reader;
mod sample;
mod tasks;
mod writer;

pub use meta::{Host, Limits, Meta, SourceInfo, TargetEnd};
pub use reader::{read_task_dump, Run, Warning};
pub use sample::{HeapSample, LoadSample, ProcSample, Sample, SourceError, TaskSample, TaskSource};
pub use tasks::{ParkedGroup, StackFrame, TaskDump, TaskSite, TaskSites};
pub use writer::RunWriter;

/// The schema this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

pub const META_FILE: &str = "meta.json";
pub const SAMPLES_FILE: &str = "samples.jsonl";
pub const PROFILES_DIR: &str = "profiles";
/// The target's output, when leakscope started it (`run`).
pub const TARGET_LOG: &str = "target.log";
/// dhat's file, when the target was built with dhat and wrote it there.
pub const DHAT_FILE: &str = "dhat-heap.json";
/// The agent's task dump taken at the end of the recording: where the
/// live tasks were parked.
pub const TASK_DUMP_FILE: &str = "tasks-dump.json";

/// The file a sample's `heap_profile` names, when it names a regular file
/// under the run directory's `profiles/`, as the writer always does; else
/// `None`. Why: samples.jsonl is input like any other, and a name such as
/// `/etc/passwd` or `../../x` must not make a reader open a file outside the
/// run directory.
pub fn profile_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let mut parts = std::path::Path::new(name).components();
    let file = match (parts.next(), parts.next(), parts.next()) {
        (Some(Component::Normal(d)), Some(Component::Normal(f)), None) if d == PROFILES_DIR => f,
        _ => return None,
    };
    let path = dir.join(PROFILES_DIR).join(file);
    // Not followed: a symlink out of the directory is refused too.
    std::fs::symlink_metadata(&path)
        .is_ok_and(|m| m.is_file())
        .then_some(path)
}

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a run directory (no {META_FILE})")]
    NotARunDir { path: std::path::PathBuf },
    #[error("{path} already holds a recording; choose a new directory")]
    NotEmpty { path: std::path::PathBuf },
    #[error(
        "{path} was written with run-directory schema {found}, newer than the {supported} this \
         leakscope reads; upgrade leakscope"
    )]
    NewerSchema {
        path: std::path::PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}:{line}: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
}

#[cfg(test)]
mod profile_file_tests {
    use super::*;

    #[test]
    fn only_regular_files_under_profiles_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(PROFILES_DIR)).unwrap();
        std::fs::write(dir.path().join("profiles/heap-000001.pb.gz"), b"x").unwrap();
        std::fs::write(dir.path().join("elsewhere"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("profiles/link")).unwrap();
        assert_eq!(
            profile_file(dir.path(), "profiles/heap-000001.pb.gz"),
            Some(dir.path().join("profiles/heap-000001.pb.gz"))
        );
        for bad in [
            "/etc/passwd",
            "../../../etc/passwd",
            "profiles/../elsewhere",
            "elsewhere",
            "profiles/link",
            "profiles/missing.pb.gz",
            "profiles",
            "",
            "./profiles/heap-000001.pb.gz",
        ] {
            assert_eq!(profile_file(dir.path(), bad), None, "{bad}");
        }
    }
}
