//! Writing a run directory as a recording goes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Meta, ProfileKind, RunDirError, RunFile, Sample, META_FILE};

/// Appends samples and keeps `meta.json` current.
pub struct RunWriter {
    dir: PathBuf,
    samples: File,
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
        let writer = Self { dir, samples, meta };
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
        self.samples.flush().map_err(io(&path))
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
