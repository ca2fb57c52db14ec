//! leakscope-test's two checks that `cargo test` cannot make by itself:
//! the parallel fixture, which fails by design, run 20 times; and the
//! crate built the way most users build it, without `tokio_unstable`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::workspace;

/// How many times the fixture runs: the "20 out of 20".
const FIXTURE_RUNS: usize = 20;
/// The fixture's one leaking test.
const LEAKER: &str = "leaks_a_task_an_fd_and_heap";
/// What its message must name: the task's spawn site, the fd registered
/// with its runtime, the heap's allocation site.
const NAMED: [&str; 3] = [
    "spawned at crates/leakscope-test/tests/parallel_fixture.rs:",
    "registered with the test's runtime",
    "per iteration at crates/leakscope-test/tests/parallel_fixture.rs:",
];

/// Builds the fixture binary and returns its path.
fn build_fixture() -> Result<PathBuf> {
    let out = Command::new(workspace::cargo())
        .current_dir(workspace::root())
        .args([
            "test",
            "-p",
            "leakscope-test",
            "--features",
            "taskdump",
            "--test",
            "parallel_fixture",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the fixture failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "parallel_fixture")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo named no parallel_fixture executable")
}

/// What one run got wrong, if anything.
fn judge_run(text: &str) -> Option<String> {
    if !text.contains("test result: FAILED. 15 passed; 1 failed") {
        return Some("not exactly 15 passed and 1 failed".into());
    }
    if !text.contains(&format!("failures:\n    {LEAKER}\n")) {
        return Some(format!("the failing test is not {LEAKER}"));
    }
    NAMED
        .iter()
        .find(|n| !text.contains(*n))
        .map(|n| format!("the message does not name {n:?}"))
}

/// Runs the fixture 20 times with libtest's default parallel harness;
/// each run must fail exactly the leaking test, with all three named.
pub fn parallel_fixture() -> Result<()> {
    let exe = build_fixture()?;
    let dir = workspace::root().join("crates/leakscope-test");
    for run in 1..=FIXTURE_RUNS {
        let out = Command::new(&exe)
            .current_dir(&dir)
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(wrong) = judge_run(&text) {
            bail!("fixture run {run} of {FIXTURE_RUNS}: {wrong}\n{text}");
        }
        eprintln!(
            "xtask test: fixture run {run}/{FIXTURE_RUNS}: only {LEAKER} failed, all three named"
        );
    }
    Ok(())
}

/// leakscope-test's own tests in a build without `--cfg tokio_unstable`
/// (the workspace's `.cargo/config.toml` sets it), in a target directory
/// of its own so the two builds do not evict each other.
pub fn without_tokio_unstable() -> Result<()> {
    let status = Command::new(workspace::cargo())
        .current_dir(workspace::root())
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env(
            "CARGO_TARGET_DIR",
            workspace::target_dir().join("no-tokio-unstable"),
        )
        .args(["test", "-p", "leakscope-test"])
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test -p leakscope-test without tokio_unstable failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(result: &str, failures: &str, named: &[&str]) -> String {
        format!("{}\nfailures:\n{failures}\n{result}\n", named.join("\n"))
    }

    #[test]
    fn a_run_passes_only_with_the_one_failure_and_all_three_named() {
        let ok = run(
            "test result: FAILED. 15 passed; 1 failed; 0 ignored",
            &format!("    {LEAKER}\n"),
            &NAMED,
        );
        assert_eq!(judge_run(&ok), None);
        let two = run(
            "test result: FAILED. 14 passed; 2 failed; 0 ignored",
            &format!("    {LEAKER}\n    sibling\n"),
            &NAMED,
        );
        assert!(judge_run(&two).is_some());
        let other = run(
            "test result: FAILED. 15 passed; 1 failed; 0 ignored",
            "    sibling\n",
            &NAMED,
        );
        assert!(judge_run(&other).is_some());
        let unnamed = run(
            "test result: FAILED. 15 passed; 1 failed; 0 ignored",
            &format!("    {LEAKER}\n"),
            &NAMED[..2],
        );
        assert!(judge_run(&unnamed).unwrap().contains("per iteration"));
    }
}
