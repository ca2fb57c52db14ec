//! Reading a run directory back, tolerating what a crash can leave.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::{Meta, RunDirError, RunFile, Sample, META_FILE, SAMPLES_FILE, SCHEMA_VERSION};

/// A recording as read back.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub meta: Meta,
    pub samples: Vec<Sample>,
    /// Things a reader of the report should know (a torn last line, …).
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// The last line was cut off (the recorder stopped mid-write); skipped.
    TornLastLine { line: usize },
    /// The recording has no end time: the recorder did not finish it.
    Unfinished,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::TornLastLine { line } => write!(
                f,
                "{SAMPLES_FILE} line {line} was cut off (the recorder stopped while writing it) and was skipped"
            ),
            Warning::Unfinished => {
                write!(f, "the recording was not finished (no end time in {META_FILE})")
            }
        }
    }
}

impl Run {
    /// The end-of-run task dump, when the agent gave one. `Err` when the
    /// file is there but unreadable: that is damage to report, not absence.
    pub fn task_dump(&self) -> Result<Option<crate::TaskDump>, RunDirError> {
        read_task_dump(&self.dir)
    }

    pub fn open(dir: impl AsRef<Path>) -> Result<Run, RunDirError> {
        let dir = dir.as_ref().to_path_buf();
        let meta_path = RunFile::Meta.path(&dir);
        let meta_text = match std::fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunDirError::NotARunDir { path: dir })
            }
            Err(source) => {
                return Err(RunDirError::Io {
                    path: meta_path,
                    source,
                })
            }
        };
        // Check the version before the shape: a newer schema may have
        // changed the shape, and "upgrade" is the useful message then.
        let version = serde_json::from_slice::<serde_json::Value>(&meta_text)
            .ok()
            .and_then(|v| v.get("schema_version")?.as_u64());
        match version {
            Some(v) if v > u64::from(SCHEMA_VERSION) => {
                return Err(RunDirError::NewerSchema {
                    path: meta_path,
                    found: v as u32,
                    supported: SCHEMA_VERSION,
                })
            }
            _ => {}
        }
        let meta: Meta = serde_json::from_slice(&meta_text).map_err(|e| RunDirError::Corrupt {
            path: meta_path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        let mut warnings = Vec::new();
        if meta.ended_unix_ms.is_none() {
            warnings.push(Warning::Unfinished);
        }
        let samples_path = RunFile::Samples.path(&dir);
        let file = std::fs::File::open(&samples_path).map_err(|source| RunDirError::Io {
            path: samples_path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut samples = Vec::new();
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| RunDirError::Io {
                    path: samples_path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            number += 1;
            let complete = line.ends_with(b"\n");
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Sample>(text) {
                Ok(sample) => samples.push(sample),
                // Only the last line can be torn, and only if it lacks its
                // newline: anything else is damage, not an interrupted write.
                Err(_) if !complete => {
                    tracing::warn!(line = number, "skipping a torn last sample line");
                    warnings.push(Warning::TornLastLine { line: number });
                }
                Err(e) => {
                    return Err(RunDirError::Corrupt {
                        path: samples_path,
                        line: number,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(Run {
            dir,
            meta,
            samples,
            warnings,
        })
    }
}

/// The end-of-run task dump in `dir`, if any (see [`Run::task_dump`]).
pub fn read_task_dump(dir: &Path) -> Result<Option<crate::TaskDump>, RunDirError> {
    let path = RunFile::TaskDump.path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RunDirError::Corrupt {
                path,
                line: e.line(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunDirError::Io { path, source }),
    }
}
