//! Reading a run directory back, tolerating what a crash can leave.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::decimate::Decimator;
use crate::{
    Meta, RunDirError, RunFile, Sample, META_FILE, SAMPLES_FILE, SCHEMA_VERSION,
    SEALED_SAMPLES_FILE,
};

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
    /// The sealed segments end in a cut-off member (the recorder stopped
    /// while sealing): read up to it; the live segment still holds the rest.
    TornSealed { after_line: usize },
    /// Samples after `after` up to `next` are in neither file: a sealed
    /// segment was lost or damaged.
    Gap { after: u64, next: u64 },
    /// A long run: every `stride`-th of its `ticks` samples was kept (see
    /// [`crate::MAX_SAMPLES`]).
    Thinned {
        ticks: u64,
        kept: usize,
        stride: u64,
    },
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
            Warning::TornSealed { after_line } => write!(
                f,
                "{SEALED_SAMPLES_FILE} ends in a cut-off or damaged member after line {after_line} (the recorder \
                 stopped while sealing, or the file was damaged); what followed was read from {SAMPLES_FILE}"
            ),
            Warning::Gap { after, next } => write!(
                f,
                "samples {} to {} are missing (a segment of {SEALED_SAMPLES_FILE} lost or damaged)",
                after + 1,
                next - 1
            ),
            Warning::Thinned { ticks, kept, stride } => write!(
                f,
                "the run holds {ticks} samples; every {stride}th ({kept}) was analysed, evenly spaced, \
                 to stay within memory: levels between them (a spike shorter than {stride} ticks) are not seen"
            ),
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
        let samples = read_samples(&dir, &mut warnings)?;
        Ok(Run {
            dir,
            meta,
            samples,
            warnings,
        })
    }
}

/// The sealed segments, then the live one, through one [`Decimator`].
///
/// The recorder numbers every tick it writes, so a jump in `seq` is
/// samples missing. A run still being recorded can seal a segment while it
/// is read: the live file is opened first (emptied, it reads empty through
/// that handle), and a jump means a seal slipped between the two reads, so
/// it reads once more. A jump that stays is damage (a sealed member lost
/// or garbled), and a warning says which samples are missing.
fn read_samples(dir: &Path, warnings: &mut Vec<Warning>) -> Result<Vec<Sample>, RunDirError> {
    let mut first = Vec::new();
    let (samples, gaps) = read_once(dir, &mut first)?;
    if gaps.is_empty() {
        warnings.extend(first);
        return Ok(samples);
    }
    let (samples, gaps) = read_once(dir, warnings)?;
    warnings.extend(
        gaps.into_iter()
            .map(|(after, next)| Warning::Gap { after, next }),
    );
    Ok(samples)
}

/// Where the samples read so far end, and the jumps in `seq` met.
#[derive(Default)]
struct Seam {
    last: Option<u64>,
    gaps: Vec<(u64, u64)>,
    /// While reading the live file: the last sealed `seq`, until a sample
    /// past it is met. A crash between sealing and emptying leaves the
    /// sealed segment again at the head of the live file, and only there.
    sealed_up_to: Option<u64>,
}

impl Seam {
    fn take(&mut self, s: Sample, dec: &mut Decimator) {
        if let Some(upto) = self.sealed_up_to {
            if s.seq <= upto {
                return;
            }
            self.sealed_up_to = None;
        }
        // A jump forward is samples missing; a step back (a reordered file)
        // passes through for the analysis to call it disorder.
        if let Some(last) = self.last.filter(|l| s.seq > l + 1) {
            self.gaps.push((last, s.seq));
        }
        self.last = Some(s.seq);
        dec.push(s);
    }

    /// The sealed file is read: what the live file repeats of it is skipped.
    fn live_follows(&mut self) {
        self.sealed_up_to = self.last;
    }
}

/// One read of both files: the samples, and the jumps in `seq`.
#[allow(clippy::type_complexity)]
fn read_once(
    dir: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<Sample>, Vec<(u64, u64)>), RunDirError> {
    let mut dec = Decimator::new(crate::MAX_SAMPLES);
    let mut seam = Seam::default();
    let live = RunFile::Samples.path(dir);
    let live_file = std::fs::File::open(&live).map_err(|source| RunDirError::Io {
        path: live.clone(),
        source,
    })?;
    let sealed = RunFile::SealedSamples.path(dir);
    match std::fs::File::open(&sealed) {
        Ok(file) => {
            let gz = BufReader::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)));
            read_sealed(gz, &sealed, &mut seam, &mut dec, warnings)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RunDirError::Io {
                path: sealed,
                source,
            })
        }
    }
    seam.live_follows();
    read_live(
        BufReader::new(live_file),
        &live,
        &mut seam,
        &mut dec,
        warnings,
    )?;
    let (ticks, stride) = (dec.seen(), dec.stride());
    let samples = dec.finish();
    if stride > 1 {
        warnings.push(Warning::Thinned {
            ticks,
            kept: samples.len(),
            stride,
        });
    }
    Ok((samples, seam.gaps))
}

fn corrupt(path: &Path, line: usize) -> impl FnOnce(serde_json::Error) -> RunDirError + '_ {
    move |e| RunDirError::Corrupt {
        path: path.to_path_buf(),
        line,
        message: e.to_string(),
    }
}

/// Every whole line of the sealed segments. A member cut off by a crash
/// ends the reading with a warning: the live segment was not yet emptied
/// then, so it still holds those samples.
fn read_sealed(
    mut reader: impl BufRead,
    path: &Path,
    seam: &mut Seam,
    dec: &mut Decimator,
    warnings: &mut Vec<Warning>,
) -> Result<(), RunDirError> {
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with(b"\n") => {}
            // A whole member always ends with its last line's newline.
            Ok(_) | Err(_) => {
                warnings.push(Warning::TornSealed { after_line: number });
                break;
            }
        }
        number += 1;
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let sample: Sample = serde_json::from_slice(text).map_err(corrupt(path, number))?;
        seam.take(sample, dec);
    }
    Ok(())
}

/// The live segment; a torn last line is skipped with a warning.
fn read_live(
    mut reader: impl BufRead,
    path: &Path,
    seam: &mut Seam,
    dec: &mut Decimator,
    warnings: &mut Vec<Warning>,
) -> Result<(), RunDirError> {
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| RunDirError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let complete = line.ends_with(b"\n");
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Sample>(text) {
            Ok(s) => seam.take(s, dec),
            // Only the last line can be torn, and only if it lacks its
            // newline: anything else is damage, not an interrupted write.
            Err(_) if !complete => {
                tracing::warn!(line = number, "skipping a torn last sample line");
                warnings.push(Warning::TornLastLine { line: number });
            }
            Err(e) => return Err(corrupt(path, number)(e)),
        }
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
