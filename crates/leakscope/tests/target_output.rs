//! A target that floods its output costs leakscope bounded memory and a
//! bounded `target.log`.

use std::process::{Command, Stdio};
use std::time::Duration;

use leakscope::target::{MAX_LINE, MAX_LOG};
use leakscope_rundir::RunFile;

/// Peak resident memory of a running process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn a_flood_of_output_is_cut_to_bounded_lines_and_a_capped_log() {
    let dir = tempfile::tempdir().unwrap();
    // 200 MB with no newline before the ready line, then 100 MB of lines.
    let script = "head -c 200000000 /dev/zero | tr '\\0' x; echo; echo ready; \
                  yes 0123456789012345678901234567890123456789 | head -c 100000000; sleep 2";
    let run = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["run", "-q", "--ready-line", "ready", "--interval", "100ms"])
        .args(["--duration", "6s", "--ready-timeout", "60s", "--out"])
        .arg(&run)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The 200 MB line is never held whole: the kept part is 64 KiB.
    assert!(peak > 0 && peak < 100 << 20, "peak RSS {peak} B\n{stderr}");

    let log = std::fs::read(RunFile::TargetLog.path(&run)).unwrap();
    let text = String::from_utf8_lossy(&log);
    let first = text.lines().next().unwrap();
    assert!(first.len() <= MAX_LINE + 40, "{}", first.len());
    assert!(
        first.ends_with("[leakscope: line cut here]"),
        "{}",
        &first[first.len() - 40..]
    );
    assert!(
        text.lines().any(|l| l == "ready"),
        "the ready line is logged"
    );
    assert!(log.len() as u64 <= MAX_LOG + 200, "{} B", log.len());
    eprintln!("leakscope's peak RSS {peak} B; target.log {} B", log.len());
    let last = text.lines().last().unwrap();
    assert!(
        last.contains(&format!("{} reached", RunFile::TargetLog)),
        "{last}"
    );
}
