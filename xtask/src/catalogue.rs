//! The server's scenario catalogue (`download-server --list-scenarios`) and
//! the test data it asks for.
//!
//! The catalogue is read from the built server, never restated here: a
//! scenario added or retuned there is profiled as it says.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use leakscope_load::Pattern;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Symptom {
    PerRequest,
    PerInFlight,
    AllocatedPerRequest,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "pattern", rename_all = "kebab-case")]
pub enum Load {
    Full { concurrency: u32 },
    Abort { concurrency: u32, after_bytes: u64 },
    Slow { concurrency: u32, kib_per_sec: u32 },
}

impl Load {
    pub fn concurrency(&self) -> u32 {
        match *self {
            Load::Full { concurrency }
            | Load::Abort { concurrency, .. }
            | Load::Slow { concurrency, .. } => concurrency,
        }
    }

    /// The load driver's own spelling, through its type so the two cannot
    /// drift apart.
    pub fn pattern(&self) -> Pattern {
        match *self {
            Load::Full { .. } => Pattern::Full,
            Load::Abort { after_bytes, .. } => Pattern::Abort { after_bytes },
            Load::Slow { kib_per_sec, .. } => Pattern::Slow {
                bytes_per_sec: u64::from(kib_per_sec) * 1024,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub route: String,
    pub resource: String,
    pub symptom: Symptom,
    pub file_size: u64,
    pub files: u32,
    pub load: Load,
    #[serde(default)]
    pub max_rate: Option<u32>,
}

impl Scenario {
    /// Bytes one request's response covers: the file, or every file of the
    /// directory for a ZIP route.
    pub fn response_bytes(&self) -> u64 {
        self.file_size * u64::from(self.files.max(1))
    }

    /// The path under the data root that `{file}` or `{dir}` stands for.
    fn data_path(&self) -> String {
        if self.route.contains("{dir}") {
            format!("dir-{}x{}", self.files, self.file_size)
        } else {
            format!("file-{}.bin", self.file_size)
        }
    }

    /// The request path, relative to the server's address.
    pub fn url_path(&self) -> String {
        self.route
            .replace("{file}", &self.data_path())
            .replace("{dir}", &self.data_path())
    }

    /// The metric the scenario's resource is measured by: the server says
    /// "allocation-rate" for what the analysis calls `alloc`.
    pub fn metric(&self) -> Option<leakscope_analysis::MetricId> {
        match self.resource.as_str() {
            "allocation-rate" => Some(leakscope_analysis::MetricId::Alloc),
            other => leakscope_analysis::MetricId::parse(other),
        }
    }
}

pub fn list(server: &Path) -> Result<Vec<Scenario>> {
    let out = Command::new(server)
        .arg("--list-scenarios")
        .output()
        .with_context(|| format!("running {} --list-scenarios", server.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list-scenarios failed ({}): {}",
            server.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing download-server --list-scenarios")
}

/// Picks the scenarios named (all when none), in the catalogue's order; an
/// unknown name is an error that lists the known ones.
pub fn select(all: Vec<Scenario>, names: &[String]) -> Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(all);
    }
    for n in names {
        if !all.iter().any(|s| &s.name == n) {
            let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
            bail!("no scenario {n:?}; the server has: {}", known.join(", "));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .collect())
}

/// Writes the files the scenarios read under `root`, deterministically
/// (the same bytes on every machine, so runs compare), skipping any already
/// there at the right size. Incompressible, so the ZIP scenarios measure
/// what they hold rather than deflate's ratio on a pattern.
pub fn generate(root: &Path, scenarios: &[Scenario]) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    for s in scenarios {
        let path = root.join(s.data_path());
        if s.route.contains("{dir}") {
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
    fn catalogue_json_parses_and_routes_resolve() {
        let json = r#"[{"name":"zip-in-memory","route":"/s/zip-in-memory/{dir}","resource":"heap",
            "symptom":"per-in-flight","description":"d","source":"s","file_size":8,"files":4,
            "load":{"pattern":"slow","concurrency":8,"kib_per_sec":512}},
            {"name":"t","route":"/s/t/{file}","resource":"tasks","symptom":"per-request",
            "description":"d","source":"s","file_size":8,"files":1,"max_rate":200,
            "load":{"pattern":"abort","concurrency":8,"after_bytes":65536}}]"#;
        let all: Vec<Scenario> = serde_json::from_str(json).unwrap();
        assert_eq!(all[0].url_path(), "/s/zip-in-memory/dir-4x8");
        assert_eq!(all[0].response_bytes(), 32);
        let slow = all[0].load.pattern();
        assert_eq!(
            slow,
            Pattern::Slow {
                bytes_per_sec: 512 * 1024
            }
        );
        assert_eq!(slow.to_string().parse::<Pattern>().unwrap(), slow);
        assert_eq!(all[1].url_path(), "/s/t/file-8.bin");
        assert_eq!(all[1].metric(), Some(leakscope_analysis::MetricId::Tasks));
        assert_eq!(all[1].max_rate, Some(200));
        let err = select(all, &["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("zip-in-memory, t"), "{err}");
    }
}
