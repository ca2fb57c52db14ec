//! Where the test targets are, for the tests of other packages.
//!
//! Cargo hands a package's own binaries to its integration tests
//! (`CARGO_BIN_EXE_<name>`), but not another package's: artifact
//! dependencies are unstable. So the sidecar's tests find the binaries
//! beside their own executable, in the same target directory and profile,
//! and refuse a binary older than any source it was built from (cargo's
//! dep-info file lists them), rather than run yesterday's target.
//! `cargo test --workspace` (and so `cargo xtask test`) builds them first,
//! because this package has an integration test.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The binaries of this package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// The download server with leakscope-agent, configured by the
    /// environment variables in [`server`].
    InstrumentedServer,
    /// Holds fds of known kinds and counts (its subcommands say which).
    FdHolder,
}

impl Bin {
    /// The binary's file name.
    pub const fn name(self) -> &'static str {
        match self {
            Bin::InstrumentedServer => "instrumented-server",
            Bin::FdHolder => "fd-holder",
        }
    }
}

/// The environment the instrumented server reads.
pub mod server {
    /// The directory to serve (required).
    pub const ROOT_ENV: &str = "LEAKSCOPE_TEST_TARGET_ROOT";
    /// "leaky" or "fixed": the scenario variant to serve.
    pub const VARIANT_ENV: &str = "LEAKSCOPE_TEST_TARGET_VARIANT";
    /// Set (to anything) for a current-thread runtime with the agent's task
    /// hooks, which the sidecar then reads tasks from, and task dumps
    /// allowed (a current-thread runtime is dumped from inside, so the
    /// multi-thread dump's barrier, which a loaded machine can wedge, is
    /// not involved); unset, a multi-thread runtime and tasks from the
    /// console.
    pub const HOOKS_ENV: &str = "LEAKSCOPE_TEST_TARGET_HOOKS";
    /// Set (to anything) for no tokio-console layer: its retention of
    /// finished tasks grows memory with the load, which is the console's
    /// cost, not the service's (a fleet's replicas run without it).
    pub const NO_CONSOLE_ENV: &str = "LEAKSCOPE_TEST_TARGET_NO_CONSOLE";
    /// "N,MIB,FILE": once FILE exists, the server spawns N tasks that end
    /// a second later, and allocates MIB MiB it keeps.
    pub const WORK_ENV: &str = "LEAKSCOPE_TEST_TARGET_WORK";
    /// The lines the server prints, each followed by `ADDR`, in this order
    /// (the console's only when it has one).
    pub const AGENT_LINE: &str = "agent listening on ";
    pub const CONSOLE_LINE: &str = "console listening on ";
    pub const SERVER_LINE: &str = "listening on ";
}

/// What the fd holder prints (its ways are its subcommands: `fd-holder
/// --help`).
pub mod fd_holder {
    /// Printed once the fds are open (each round, for `churn`).
    pub const READY: &str = "FD HOLDER READY";
    /// `dev-null`: followed by how many it holds.
    pub const HOLDING: &str = "HOLDING ";
    /// `listener`: followed by the port.
    pub const PORT: &str = "PORT ";
}

/// The path of `bin`, built and no older than its sources; panics (this is
/// for tests) with the command that builds it.
pub fn path(bin: Bin) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable inside target/<profile>/deps");
    let path = dir.join(bin.name());
    let build = "cargo build -p test-targets (cargo test --workspace builds it too)";
    let built = modified(&path).unwrap_or_else(|| {
        panic!(
            "the test target {} is not built in {}: {build}",
            bin.name(),
            dir.display()
        )
    });
    if let Some(newer) = newer_source(&dir.join(format!("{}.d", bin.name())), built) {
        panic!(
            "the test target {} is older than {}: {build}",
            bin.name(),
            newer.display()
        );
    }
    path
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// The first source in cargo's dep-info file `dep_info` modified after
/// `built`. A missing dep-info file says nothing (cargo always writes one
/// beside the binary, so it is only missing when the binary came from
/// elsewhere).
fn newer_source(dep_info: &Path, built: SystemTime) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dep_info).ok()?;
    let first = text.lines().next()?;
    let (_, deps) = first.split_once(": ")?;
    dep_info_paths(deps)
        .into_iter()
        .find(|p| modified(p).is_some_and(|m| m > built))
}

/// The paths of a dep-info rule's right side: separated by spaces, with
/// `\ ` for a space inside a path.
fn dep_info_paths(deps: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            ' ' => {
                if !cur.is_empty() {
                    paths.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        paths.push(PathBuf::from(cur));
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_paths_keep_escaped_spaces() {
        assert_eq!(
            dep_info_paths("/a/b.rs /c\\ d/e.rs  /f.rs"),
            [PathBuf::from("/a/b.rs"), "/c d/e.rs".into(), "/f.rs".into()]
        );
    }

    #[test]
    fn a_source_newer_than_the_binary_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let src = dir.join("src.rs");
        std::fs::write(&src, "").unwrap();
        let d = dir.join("bin.d");
        std::fs::write(
            &d,
            format!("{}: {}\n", dir.join("bin").display(), src.display()),
        )
        .unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        let after = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(newer_source(&d, before), Some(src));
        assert_eq!(newer_source(&d, after), None);
    }
}
