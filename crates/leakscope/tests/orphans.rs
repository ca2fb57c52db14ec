//! The target never outlives `leakscope run`: not when leakscope is killed
//! with SIGKILL, not when its terminal closes (SIGHUP), and not through
//! children the target's leader started in its group and left behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Gone, or a zombie nobody has reaped yet: either way not running.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s
            .lines()
            .find(|l| l.starts_with("State:"))
            .is_some_and(|l| l.contains("Z (zombie)") || l.contains("X (dead)")),
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `leakscope run` over a shell that starts a background child, writes
/// both pids, then becomes (exec) or ends as `leader`.
fn start(dir: &Path, leader: &str) -> (Child, u32, u32) {
    let (bg, lead) = (dir.join("bg"), dir.join("leader"));
    let script = format!(
        "sleep 300 & echo $! > {bg}.tmp && mv {bg}.tmp {bg}; echo $$ > {lead}.tmp && mv {lead}.tmp {lead}; {leader}",
        bg = bg.display(),
        lead = lead.display()
    );
    let child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args([
            "run",
            "-q",
            "--interval",
            "100ms",
            "--duration",
            "60s",
            "--out",
        ])
        .arg(dir.join("run"))
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("leakscope starts");
    let mut pids = (None, None);
    wait_for("the target's pids", Duration::from_secs(20), || {
        pids = (read_pid(&lead), read_pid(&bg));
        pids.0.is_some() && pids.1.is_some()
    });
    (child, pids.0.unwrap(), pids.1.unwrap())
}

fn killed_by(signal: rustix::process::Signal) {
    let dir = tempfile::tempdir().unwrap();
    let (mut leakscope, leader, bg) = start(dir.path(), "exec sleep 301");
    assert!(!gone(leader) && !gone(bg));
    let pid = rustix::process::Pid::from_raw(leakscope.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    leakscope.wait().unwrap();
    // SIGTERM, then SIGKILL 2 s later for what ignored it.
    wait_for("the leader gone", Duration::from_secs(10), || gone(leader));
    wait_for("the background child gone", Duration::from_secs(10), || {
        gone(bg)
    });
}

#[test]
fn a_leakscope_killed_with_sigkill_takes_its_target_group_with_it() {
    killed_by(rustix::process::Signal::KILL);
}

#[test]
fn a_closed_terminal_sighup_stops_the_target_group() {
    killed_by(rustix::process::Signal::HUP);
}

#[test]
fn what_the_leader_leaves_in_its_group_is_stopped_when_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leakscope, leader, bg) = start(dir.path(), "sleep 1; exit 3");
    let status = leakscope.wait().unwrap();
    assert!(gone(leader), "{status:?}");
    wait_for("the background child gone", Duration::from_secs(10), || {
        gone(bg)
    });
}
