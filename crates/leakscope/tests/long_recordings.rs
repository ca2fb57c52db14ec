//! Recordings of hours and days: a real recording at 100 Hz crosses the
//! sealing of segments with the recorder's memory flat, and a day at 4 Hz,
//! synthesized from that recording's real samples, fits in 100 MB of disk
//! and is read by `check` within 300 MB. (How long `check` takes on it is
//! measured in `cargo xtask bench --only day-long`, not asserted here.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leakscope_rundir::{Run, RunWriter, Sample, SEAL_EVERY};

/// The bounds of the issue: a day of `record --pid` at the default
/// interval within 100 MB of disk and 50 MB of leakscope's RSS, and
/// `check` reading it within 300 MB.
const DAY_DISK: u64 = 100 << 20;
const RECORDER_RSS: u64 = 50 << 20;
const CHECK_RSS: u64 = 300 << 20;
/// A day at the default 250 ms.
const DAY_SAMPLES: u64 = 24 * 3600 * 4;

/// Runs `cmd` to its end; its exit code and its peak RSS in bytes (from
/// wait4's rusage: the kernel's own high-water mark of the child).
// wait4 reaps the child; clippy cannot see that through libc.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (i32, u64, Duration) {
    let started = Instant::now();
    let child = cmd.stdin(Stdio::null()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid, and wait4 fills both out-params
    // for the child we spawned and have not waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss as u64 * 1024, started.elapsed())
}

fn dir_size(dir: &Path) -> u64 {
    walk(dir)
}

fn walk(p: &Path) -> u64 {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| walk(&e.unwrap().path()))
            .sum()
    } else {
        m.len()
    }
}

fn leakscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leakscope"))
}

/// `record --pid` of the real target for `secs` at 10 ms, with a light
/// paced load of its own, so samples carry requests, tasks and heap.
fn record(target: &common::Target, out: &Path, secs: u64) -> (i32, u64) {
    let pid = target.child.id().to_string();
    let url = format!("{}/files/big.bin", target.server);
    let (code, rss, _) = run_measured(leakscope().args([
        "record",
        "--quiet",
        "--pid",
        &pid,
        "--out",
        out.to_str().unwrap(),
        "--interval",
        "10ms",
        "--duration",
        &format!("{secs}s"),
        "--agent",
        &target.agent,
        "--heap-profile-every",
        "1h",
        "--load",
        "full",
        "--url",
        &url,
        "--rate",
        "50",
        "--requests",
        &(secs * 40).to_string(),
        "--source-timeout",
        "30s",
    ]));
    (code, rss)
}

/// A day at 250 ms from a real recording's samples: each pass over them
/// continues every cumulative figure from where the last pass ended, so
/// the day reads as the same service, working all day.
fn synthesize_day(real: &[Sample], out: &Path, meta: leakscope_rundir::Meta) {
    let (first, last) = (&real[0], &real[real.len() - 1]);
    let mut w = RunWriter::create(
        out,
        leakscope_rundir::Meta {
            interval_ms: 250,
            ..meta
        },
    )
    .unwrap();
    for i in 0..DAY_SAMPLES {
        let pass = i / real.len() as u64;
        let mut s = real[(i % real.len() as u64) as usize].clone();
        s.seq = i;
        s.t_ms = i * 250;
        s.taken_ms.clear();
        s.heap_profile = None;
        advance(&mut s, first, last, pass);
        w.append(&s).unwrap();
    }
    w.update_meta(|m| m.ended_unix_ms = Some(m.started_unix_ms + DAY_SAMPLES * 250))
        .unwrap();
}

/// Moves `s`'s cumulative figures on by `pass` times what one pass added.
fn advance(s: &mut Sample, first: &Sample, last: &Sample, pass: u64) {
    let k = pass as f64;
    if let (Some(p), Some(a), Some(b)) = (s.proc.as_mut(), &first.proc, &last.proc) {
        p.cpu_user_seconds += k * (b.cpu_user_seconds - a.cpu_user_seconds);
        p.cpu_system_seconds += k * (b.cpu_system_seconds - a.cpu_system_seconds);
        if let (Some(v), Some(x), Some(y)) = (p.io_syscalls.as_mut(), a.io_syscalls, b.io_syscalls)
        {
            *v += pass * y.saturating_sub(x);
        }
    }
    if let (Some(l), Some(a), Some(b)) = (s.load.as_mut(), &first.load, &last.load) {
        l.requests_total += pass * b.requests_total.saturating_sub(a.requests_total);
        l.done += pass * b.done.saturating_sub(a.done);
        l.bytes += pass * b.bytes.saturating_sub(a.bytes);
    }
    if let (Some(t), Some(a), Some(b)) = (s.tasks.as_mut(), &first.tasks, &last.tasks) {
        if let (Some(v), Some(x), Some(y)) =
            (t.spawned_total.as_mut(), a.spawned_total, b.spawned_total)
        {
            *v += pass * y.saturating_sub(x);
        }
    }
    if let (Some(h), Some(a), Some(b)) = (s.heap.as_mut(), &first.heap, &last.heap) {
        for (v, x, y) in [
            (
                &mut h.allocations_total,
                a.allocations_total,
                b.allocations_total,
            ),
            (
                &mut h.allocated_bytes_total,
                a.allocated_bytes_total,
                b.allocated_bytes_total,
            ),
        ] {
            if let (Some(v), Some(x), Some(y)) = (v.as_mut(), x, y) {
                *v += pass * y.saturating_sub(x);
            }
        }
    }
}

#[test]
fn a_real_recording_then_a_day_of_its_samples_stay_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![1u8; 1 << 20]).unwrap();
    let mut target = common::spawn_target(&root);

    // A minute at 100 Hz: about 6,000 samples, a sealed segment and more.
    let real_dir = dir.path().join("real");
    let (code, recorder_rss) = record(&target, &real_dir, 60);
    let _ = target.child.kill();
    let _ = target.child.wait();
    assert_eq!(code, 0, "record failed");
    let real = Run::open(&real_dir).unwrap();
    let n = real.samples.len() as u64;
    eprintln!(
        "real recording: {n} samples, {} B on disk, recorder peak RSS {:.1} MiB",
        dir_size(&real_dir),
        recorder_rss as f64 / 1048576.0
    );
    assert!(n > SEAL_EVERY, "{n} samples: no segment was sealed");
    assert!(leakscope_rundir::RunFile::SealedSamples
        .path(&real_dir)
        .exists());
    let seqs: Vec<u64> = real.samples.iter().map(|s| s.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "a sample lost or repeated"
    );
    assert!(
        recorder_rss <= RECORDER_RSS,
        "recorder peak RSS {recorder_rss} B"
    );

    // A day of the same samples; LEAKSCOPE_DAY_OUT keeps it for the
    // benchmark (xtask/bench/day-long.sh).
    let day_dir = std::env::var_os("LEAKSCOPE_DAY_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("day"));
    let started = Instant::now();
    synthesize_day(&real.samples, &day_dir, real.meta.clone());
    let disk = dir_size(&day_dir);
    eprintln!(
        "a day at 4 Hz: {DAY_SAMPLES} samples, {:.1} MiB on disk, written in {:.1} s",
        disk as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    assert!(disk <= DAY_DISK, "{disk} B on disk");
    let (code, check_rss, took) = run_measured(
        leakscope()
            .args(["check", day_dir.to_str().unwrap()])
            .stdout(Stdio::inherit()),
    );
    eprintln!(
        "check --json on the day: exit {code}, peak RSS {:.1} MiB, {:.1} s (a debug build)",
        check_rss as f64 / 1048576.0,
        took.as_secs_f64()
    );
    // 0 or 1 are verdicts; 2 would be a run it could not read.
    assert!(code == 0 || code == 1, "check exit {code}");
    assert!(check_rss <= CHECK_RSS, "check peak RSS {check_rss} B");
}
