//! The run directory: the contract between the recorder and the report.
//!
//! ```text
//! RUN_DIR/
//!   meta.json       what was recorded, how, and how the target ended
//!   samples.jsonl   one JSON object per tick, appended and flushed per tick:
//!                   the live segment, at most SEAL_EVERY lines
//!   samples.jsonl.gz the sealed segments: every SEAL_EVERY ticks the live
//!                   segment is gzipped as one more member of this file and
//!                   the live file starts again (a day at 4 Hz: ~13 MB)
//!   profiles/       heap profiles (gzipped pprof) named by tick
//!   target.log      the target's output (`run` only)
//!   dhat-heap.json  dhat's profile, when the target wrote one here
//!   tasks-dump.json the agent's task dump at the end: live tasks grouped by
//!                   spawn site and parked stack
//! ```
//!
//! [`RunFile`] is this table in code, and [`profile_name`] names the
//! profiles: every crate spells these names through them.
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

mod decimate;
pub mod fdpath;
mod human;
mod meta;
mod reader;
mod sample;
mod writer;

pub use decimate::MAX_SAMPLES;
pub use human::UnixMs;
pub use meta::{Host, Limits, Meta, SourceInfo, SourceName, TargetEnd};
pub use reader::{read_task_dump, Run, Warning};
pub use sample::{HeapSample, LoadSample, ProcSample, Sample, SourceError, TaskSample, TaskSource};
/// The label keys and values the analysis, the report, the fleet and xtask
/// agree on: said once, here, with the metadata that carries them.
pub mod labels {
    /// Runs of one scenario are compared with each other.
    pub const SCENARIO: &str = "scenario";
    /// Which variant of the scenario a run is.
    pub const VARIANT: &str = "variant";
    /// The variant with the bug; the report puts it first.
    pub const LEAKY: &str = "leaky";
    /// The variant with the fix.
    pub const FIXED: &str = "fixed";
}

/// The agent's task answers, kept in a run directory as the agent served them.
pub use leakscope_wire::{ParkedGroup, StackFrame, TaskDump, TaskSite, TaskSites};
pub use writer::{RunWriter, SEAL_EVERY};

/// The schema this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Every entry of a run directory, named in this one place: the recorder,
/// the agent, the analysis, the report and the tools all spell a file
/// through it, so none can drift from what the writer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunFile {
    /// What was recorded, how, and how the target ended.
    Meta,
    /// One JSON object per tick: the live segment.
    Samples,
    /// The sealed segments, gzipped, one gzip member per segment.
    SealedSamples,
    /// The directory of heap profiles (see [`profile_name`]).
    Profiles,
    /// The target's output, when leakscope started it (`run`).
    TargetLog,
    /// dhat's file, when the target was built with dhat and wrote it there
    /// (also the name the agent gives dhat in the target's working
    /// directory by default).
    DhatHeap,
    /// The agent's task dump taken at the end of the recording: where the
    /// live tasks were parked.
    TaskDump,
}

impl RunFile {
    pub const ALL: [RunFile; 7] = [
        RunFile::Meta,
        RunFile::Samples,
        RunFile::SealedSamples,
        RunFile::Profiles,
        RunFile::TargetLog,
        RunFile::DhatHeap,
        RunFile::TaskDump,
    ];

    /// The entry's name inside the run directory.
    pub const fn name(self) -> &'static str {
        match self {
            RunFile::Meta => "meta.json",
            RunFile::Samples => "samples.jsonl",
            RunFile::SealedSamples => "samples.jsonl.gz",
            RunFile::Profiles => "profiles",
            RunFile::TargetLog => "target.log",
            RunFile::DhatHeap => leakscope_wire::DHAT_FILE,
            RunFile::TaskDump => "tasks-dump.json",
        }
    }

    /// The entry's path in the run directory `dir`.
    pub fn path(self, dir: &std::path::Path) -> std::path::PathBuf {
        dir.join(self.name())
    }
}

impl std::fmt::Display for RunFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// The names of the table's entries as constants, for format strings
// (`"{SAMPLES_FILE} line {line}"`) and patterns.
pub const META_FILE: &str = RunFile::Meta.name();
pub const SAMPLES_FILE: &str = RunFile::Samples.name();
pub const SEALED_SAMPLES_FILE: &str = RunFile::SealedSamples.name();
pub const PROFILES_DIR: &str = RunFile::Profiles.name();
pub const TARGET_LOG: &str = RunFile::TargetLog.name();
pub const DHAT_FILE: &str = RunFile::DhatHeap.name();
pub const TASK_DUMP_FILE: &str = RunFile::TaskDump.name();

/// What a profile in `profiles/` holds; part of its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// The agent's heap profile (gzipped pprof).
    Heap,
}

impl ProfileKind {
    pub const fn name(self) -> &'static str {
        match self {
            ProfileKind::Heap => "heap",
        }
    }
}

/// The name a sample records for the profile of `kind` taken at tick
/// `seq`, relative to the run directory: `profiles/heap-000042.pb.gz`.
/// The writer names its files so and [`profile_file`] opens only such.
pub fn profile_name(kind: ProfileKind, seq: u64) -> String {
    format!("{PROFILES_DIR}/{}-{seq:06}.pb.gz", kind.name())
}

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

    #[test]
    fn the_writer_names_files_as_the_table_says() {
        let dir = tempfile::tempdir().unwrap();
        let w = RunWriter::create(dir.path().join("run"), Meta::default()).unwrap();
        let (path, name) = w.profile_path(ProfileKind::Heap, 42);
        assert_eq!(name, "profiles/heap-000042.pb.gz");
        assert_eq!(
            path,
            RunFile::Profiles.path(w.dir()).join("heap-000042.pb.gz")
        );
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(profile_file(w.dir(), &name), Some(path));
        for file in [RunFile::Meta, RunFile::Samples, RunFile::Profiles] {
            assert!(file.path(w.dir()).exists(), "{file}");
        }
        let names: std::collections::BTreeSet<&str> =
            RunFile::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), RunFile::ALL.len(), "{names:?}");
    }
}
