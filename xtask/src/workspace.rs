//! Where things are, and building the release binaries the journeys run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn root() -> PathBuf {
    // xtask lives one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The release binaries: measurements of a debug build would be of the
/// debug build.
pub struct Bins {
    pub server: PathBuf,
    pub leakscope: PathBuf,
    pub zoo: PathBuf,
}

/// The release download-server alone, for the benchmark against nginx.
pub fn build_server_release() -> Result<PathBuf> {
    eprintln!("xtask: building the release download-server");
    let status = Command::new(cargo())
        .current_dir(root())
        .args(["build", "--release", "-p", "download-server"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok(target_dir().join("release").join("download-server"))
}

pub fn build_release() -> Result<Bins> {
    eprintln!("xtask: building the release binaries (download-server, leakscope, leak-zoo)");
    let status = Command::new(cargo())
        .current_dir(root())
        .args([
            "build",
            "--release",
            "-p",
            "download-server",
            "-p",
            "leakscope",
            "-p",
            "leak-zoo",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    let dir = target_dir().join("release");
    Ok(Bins {
        server: dir.join("download-server"),
        leakscope: dir.join("leakscope"),
        zoo: dir.join("leak-zoo"),
    })
}
