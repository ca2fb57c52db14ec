//! The server's scenario table and the test data it asks for.
//!
//! The table is the server's own (`download_server::scenarios::ALL`), never
//! restated here: a scenario added or retuned there is profiled as it says.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use download_server::scenarios::{Input, Resource, Scenario, Symptom, Variant, ALL};
use leakscope_analysis::MetricId;

/// What xtask derives from a scenario's row: its test data, its URL and the
/// metric it is judged by.
pub trait ScenarioExt {
    /// Bytes one request's response covers: the file, or every file of the
    /// directory for a ZIP route.
    fn response_bytes(&self) -> u64;
    /// The path under the data root that `{file}` or `{dir}` stands for.
    fn data_path(&self) -> String;
    /// The request path, relative to the server's address.
    fn url_path(&self) -> String;
    /// The analysis metric the scenario's resource is measured by.
    fn metric(&self) -> MetricId;
}

impl ScenarioExt for Scenario {
    fn response_bytes(&self) -> u64 {
        self.file_size * u64::from(self.files.max(1))
    }

    fn data_path(&self) -> String {
        match self.input {
            Input::Directory => format!("dir-{}x{}", self.files, self.file_size),
            Input::File => format!("file-{}.bin", self.file_size),
        }
    }

    fn url_path(&self) -> String {
        format!("/s/{}/{}", self.name, self.data_path())
    }

    fn metric(&self) -> MetricId {
        match self.resource {
            Resource::Heap => MetricId::Heap,
            Resource::Fds => MetricId::Fds,
            Resource::Tasks => MetricId::Tasks,
            Resource::AllocationRate => MetricId::Alloc,
        }
    }
}

/// Picks the scenarios named (all when none), in the table's order; an
/// unknown name is an error that lists the known ones.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>> {
    for n in names {
        if Scenario::named(n).is_none() {
            let known: Vec<&str> = ALL.iter().map(|s| s.name).collect();
            bail!("no scenario {n:?}; the server has: {}", known.join(", "));
        }
    }
    Ok(ALL
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect())
}

/// Writes the files the scenarios read under `root`, deterministically
/// (the same bytes on every machine, so runs compare), skipping any already
/// there at the right size. Incompressible, so the ZIP scenarios measure
/// what they hold rather than deflate's ratio on a pattern.
pub fn generate(root: &Path, scenarios: &[&Scenario]) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    for s in scenarios {
        let path = root.join(s.data_path());
        if s.input == Input::Directory {
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
            for i in 0..s.files {
                write_file(
                    &path.join(format!("part-{i}.bin")),
                    s.file_size,
                    u64::from(i),
                )?;
            }
        } else {
            write_file(&path, s.file_size, 0)?;
        }
    }
    Ok(())
}

fn write_file(path: &PathBuf, len: u64, seed: u64) -> Result<()> {
    if fs::metadata(path).map(|m| m.len() == len).unwrap_or(false) {
        return Ok(());
    }
    // Written beside and renamed into place, so an interrupted run never
    // leaves a short file under the final name.
    let tmp = path.with_extension("partial");
    let mut w = BufWriter::new(
        fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    // SplitMix64: tiny, fast, and fixed forever; no crate's stream to drift.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ len.rotate_left(17) ^ seed;
    let mut left = len;
    while left > 0 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        let n = left.min(8) as usize;
        w.write_all(&bytes[..n])?;
        left -= n as u64;
    }
    w.flush()?;
    drop(w);
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The server names its variants; the run directory's label values
    /// must be the same words, or the report cannot pair the runs.
    #[test]
    fn the_servers_variant_names_are_the_label_values() {
        assert_eq!(Variant::Leaky.as_str(), leakscope_rundir::labels::LEAKY);
        assert_eq!(Variant::Fixed.as_str(), leakscope_rundir::labels::FIXED);
    }

    use super::*;

    #[test]
    fn data_is_deterministic_and_sized() {
        let dir = std::env::temp_dir().join(format!("xtask-data-{}", std::process::id()));
        let a = dir.join("a.bin");
        let b = dir.join("b.bin");
        fs::create_dir_all(&dir).unwrap();
        write_file(&a, 1001, 0).unwrap();
        write_file(&b, 1001, 0).unwrap();
        let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert_eq!(x.len(), 1001);
        assert_eq!(x, y);
        write_file(&b, 1001, 1).unwrap(); // right size: kept as is
        assert_eq!(fs::read(&b).unwrap(), x);
        fs::remove_file(&b).unwrap();
        write_file(&b, 1001, 1).unwrap();
        assert_ne!(fs::read(&b).unwrap(), x, "another seed, other bytes");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_scenario_has_a_route_data_and_metric() {
        let zip = Scenario::named("zip-in-memory").unwrap();
        assert_eq!(
            zip.url_path(),
            format!("/s/zip-in-memory/dir-{}x{}", zip.files, zip.file_size)
        );
        assert_eq!(zip.response_bytes(), zip.file_size * u64::from(zip.files));
        let tasks = Scenario::named("task-leak-on-disconnect").unwrap();
        assert_eq!(tasks.metric(), MetricId::Tasks);
        assert!(tasks.url_path().ends_with(".bin"));
        let err = select(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("zip-in-memory"), "{err}");
        assert_eq!(select(&[]).unwrap().len(), ALL.len());
    }
}
