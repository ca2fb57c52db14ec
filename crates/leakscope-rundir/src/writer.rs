//! Writing a run directory as a recording goes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Meta, ProfileKind, RunDirError, RunFile, Sample, META_FILE};

/// Samples in the live segment before it is sealed: 15 minutes at 4 Hz,
/// about 4 MB of JSON. Why this many: a gzip member compresses its lines
/// against the 32 KiB before them, so the size barely depends on it, while
/// the live segment is what a crash can leave unsealed and what sealing
/// reads at once.
pub const SEAL_EVERY: u64 = 3600;

/// Appends samples and keeps `meta.json` current.
///
/// Every [`SEAL_EVERY`] samples the live segment is gzipped onto the end of
/// `samples.jsonl.gz` (synced), and only then emptied: a crash in between
/// leaves the segment in both, and the reader skips what it already read.
pub struct RunWriter {
    dir: PathBuf,
    samples: File,
    /// Samples in the live segment.
    live: u64,
    meta: Meta,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RunWriter {
    /// Creates `dir` (or uses it if empty) and writes the initial meta.
    /// Refuses a directory that already holds files: a recording is never
    /// overwritten.
    pub fn create(dir: impl Into<PathBuf>, meta: Meta) -> Result<Self, RunDirError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        if std::fs::read_dir(&dir).map_err(io(&dir))?.next().is_some() {
            return Err(RunDirError::NotEmpty { path: dir });
        }
        let profiles = RunFile::Profiles.path(&dir);
        std::fs::create_dir(&profiles).map_err(io(&profiles))?;
        let path = RunFile::Samples.path(&dir);
        let samples = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let writer = Self {
            dir,
            samples,
            live: 0,
            meta,
        };
        writer.write_meta()?;
        Ok(writer)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Appends one sample as a line and hands it to the OS before returning.
    pub fn append(&mut self, sample: &Sample) -> Result<(), RunDirError> {
        let mut line = serde_json::to_vec(sample).expect("samples always serialize");
        line.push(b'\n');
        let path = RunFile::Samples.path(&self.dir);
        self.samples.write_all(&line).map_err(io(&path))?;
        self.samples.flush().map_err(io(&path))?;
        self.live += 1;
        if self.live >= SEAL_EVERY {
            self.seal()?;
        }
        Ok(())
    }

    /// Gzips the live segment onto the sealed file, then empties it.
    fn seal(&mut self) -> Result<(), RunDirError> {
        use flate2::{write::GzEncoder, Compression};
        let live = RunFile::Samples.path(&self.dir);
        let text = std::fs::read(&live).map_err(io(&live))?;
        let sealed = RunFile::SealedSamples.path(&self.dir);
        let new = !sealed.exists();
        let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::default());
        gz.write_all(&text).map_err(io(&sealed))?;
        let member = gz.finish().map_err(io(&sealed))?;
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&sealed)
            .map_err(io(&sealed))?;
        out.write_all(&member).map_err(io(&sealed))?;
        out.sync_data().map_err(io(&sealed))?;
        if new {
            // The new file's name must be durable before the live file is
            // emptied, or a power loss could keep the one and not the other.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        // O_APPEND: the next line goes to the (new) end, offset 0.
        self.samples.set_len(0).map_err(io(&live))?;
        self.live = 0;
        tracing::debug!(
            json = text.len(),
            gzipped = member.len(),
            "sealed a segment of samples"
        );
        Ok(())
    }

    /// Where to store a profile taken at tick `seq`; returns the absolute
    /// path and the name to record in the sample.
    pub fn profile_path(&self, kind: ProfileKind, seq: u64) -> (PathBuf, String) {
        let name = crate::profile_name(kind, seq);
        (self.dir.join(&name), name)
    }

    /// Stores the end-of-run task dump (write, then rename: never torn).
    pub fn write_task_dump(&self, dump: &crate::TaskDump) -> Result<(), RunDirError> {
        let path = RunFile::TaskDump.path(&self.dir);
        let tmp = self.dir.join(format!("{}.tmp", crate::TASK_DUMP_FILE));
        let mut json = serde_json::to_vec_pretty(dump).expect("a dump always serializes");
        json.push(b'\n');
        std::fs::write(&tmp, &json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Changes the meta and rewrites `meta.json` atomically.
    pub fn update_meta(&mut self, f: impl FnOnce(&mut Meta)) -> Result<(), RunDirError> {
        f(&mut self.meta);
        self.write_meta()
    }

    fn write_meta(&self) -> Result<(), RunDirError> {
        let path = RunFile::Meta.path(&self.dir);
        let tmp = self.dir.join(format!("{META_FILE}.tmp"));
        let mut json = serde_json::to_vec_pretty(&self.meta).expect("meta always serializes");
        json.push(b'\n');
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}
