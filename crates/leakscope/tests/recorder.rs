//! The recording loop on a real child process: this test binary re-executed
//! as a target (the download server with leakscope-agent, in-process), so the
//! recorder watches a separate process it can see die.

use std::time::Duration;

use leakscope::recorder::{self, Settings, Sources, Stopped};
use leakscope::sources::agent::AgentSource;
use leakscope::sources::console::ConsoleSource;
use leakscope::sources::metrics::{MetricsSource, DEFAULT_COUNTER};
use leakscope::sources::procfs::ProcSource;
use leakscope_rundir::{Host, Meta, Run, RunWriter, SourceName, SCHEMA_VERSION};

mod common;

use common::spawn_target;

fn meta(pid: u32) -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        leakscope_version: "test".into(),
        command: vec![],
        pid,
        labels: Default::default(),
        host: Host {
            hostname: "test".into(),
            kernel: "test".into(),
            cpus: 2,
        },
        interval_ms: 100,
        git_revision: None,
        started_unix_ms: recorder::unix_ms(),
        ended_unix_ms: None,
        target_end: None,
        sources: Default::default(),
        limits: Default::default(),
        oom_kills: None,
        console_retention_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_every_source_and_ends_cleanly_when_the_target_dies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.bin"), vec![7u8; 100_000]).unwrap();
    let mut target = spawn_target(&root);
    let pid = target.child.id();
    let t = Duration::from_secs(5);
    let sources = Sources {
        proc: ProcSource::new(pid as i32).unwrap(),
        agent: Some(AgentSource::new(&target.agent, t)),
        console: Some(ConsoleSource::spawn(
            &target.console,
            Duration::from_millis(100),
        )),
        load: None,
        metrics: Some(MetricsSource::new(
            &format!("{}/metrics", target.server),
            DEFAULT_COUNTER,
            t,
        )),
    };
    let settings = Settings {
        interval: Duration::from_millis(100),
        duration: Some(Duration::from_secs(60)),
        heap_profile_every: Some(Duration::from_millis(500)),
        task_dump: false,
    };
    let run_dir = dir.path().join("run");
    let mut writer = RunWriter::create(&run_dir, meta(pid)).unwrap();

    // Load for a second, then kill the target mid-recording.
    let server = target.server.clone();
    let load = tokio::spawn(async move {
        let client = leakscope::sources::http::client();
        for _ in 0..20 {
            leakscope::sources::http::get(&client, &format!("{server}/files/a.bin"), t)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Killed once the load is done, 15 samples are in and three profiles
    // have landed (they are fetched beside the ticks, so how many ticks
    // that takes depends on how fast the target symbolizes), however slow
    // the machine: a fixed delay raced the recorder's wait for the console.
    use std::sync::atomic::Ordering::Relaxed;
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let profiled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen, seen_profiles) = (ticks.clone(), profiled.clone());
    let killer = tokio::spawn(async move {
        load.await.unwrap();
        let at_load_end = seen.load(Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (seen.load(Relaxed) < (at_load_end + 3).max(15) || seen_profiles.load(Relaxed) < 3)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        target.child.kill().unwrap();
        target.child.wait().unwrap()
    });
    let stopped = recorder::record(
        &mut writer,
        &sources,
        &settings,
        std::future::pending::<Stopped>(),
        |s| {
            ticks.fetch_add(1, Relaxed);
            if s.heap_profile.is_some() {
                profiled.fetch_add(1, Relaxed);
            }
        },
    )
    .await
    .unwrap();
    killer.await.unwrap();
    assert_eq!(stopped, Stopped::TargetGone);

    let run = Run::open(&run_dir).unwrap();
    assert!(run.samples.len() >= 15, "{} samples", run.samples.len());
    // The very last tick may have caught the target half-dead (agent gone,
    // procfs not yet); the last complete one must have every source.
    let last = run
        .samples
        .iter()
        .rev()
        .find(|s| s.errors.is_empty())
        .expect("a complete sample");
    assert!(last.proc.as_ref().unwrap().fds > 0);
    assert!(last.heap.as_ref().unwrap().allocated.unwrap() > 0);
    assert!(last.tasks.as_ref().unwrap().live_tasks >= 1);
    assert_eq!(last.load.as_ref().unwrap().requests_total, 20);
    let profiles: Vec<_> = run
        .samples
        .iter()
        .filter_map(|s| s.heap_profile.clone())
        .collect();
    assert!(profiles.len() >= 3, "{profiles:?}");
    for p in &profiles {
        assert!(run_dir.join(p).is_file());
    }
    assert!(run.meta.ended_unix_ms.is_some());
    for source in [
        SourceName::Procfs,
        SourceName::Agent,
        SourceName::Console,
        SourceName::Metrics,
    ] {
        let info = &run.meta.sources[&source];
        assert!(
            info.samples > 0 && info.mean_cost_ms > 0.0,
            "{source}: {info:?}"
        );
    }
}

/// Every section says when it was read: all reads start with the tick, so
/// each window starts at the sample's `t_ms` (or before, for a read an
/// earlier tick started) and ends when that source answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_section_is_stamped_with_when_it_was_read() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    let sources = Sources {
        proc: ProcSource::new(pid as i32).unwrap(),
        agent: None,
        console: None,
        metrics: None,
        load: Some(Default::default()),
    };
    let settings = Settings {
        interval: Duration::from_millis(50),
        duration: Some(Duration::from_millis(400)),
        heap_profile_every: None,
        task_dump: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut writer = RunWriter::create(&run_dir, meta(pid)).unwrap();
    let stopped = recorder::record(
        &mut writer,
        &sources,
        &settings,
        std::future::pending::<Stopped>(),
        |_| {},
    )
    .await
    .unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(stopped, Stopped::Duration);

    let run = Run::open(&run_dir).unwrap();
    assert!(run.samples.len() >= 3, "{} samples", run.samples.len());
    for s in &run.samples {
        assert_eq!(
            s.taken_ms.keys().map(String::as_str).collect::<Vec<_>>(),
            ["load", "proc"],
            "{s:?}"
        );
        for [from, to] in s.taken_ms.values() {
            assert!(s.t_ms <= *from && from <= to, "{s:?}");
        }
    }
    assert!(run.samples.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
}
