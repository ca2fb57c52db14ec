//! The run directory survives what recordings go through: a crash mid-line,
//! a newer leakscope, an existing directory.

use std::io::Write;

use leakscope_rundir::{
    Host, Meta, ProcSample, Run, RunDirError, RunWriter, Sample, TargetEnd, Warning, SAMPLES_FILE,
    SCHEMA_VERSION,
};

fn meta() -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        leakscope_version: "test".into(),
        command: vec!["download-server".into(), "--variant".into(), "leaky".into()],
        pid: 4242,
        labels: [("scenario".to_string(), "fd-leak".to_string())].into(),
        host: Host {
            hostname: "h".into(),
            kernel: "6.1".into(),
            cpus: 2,
        },
        interval_ms: 250,
        git_revision: None,
        started_unix_ms: 1,
        ended_unix_ms: None,
        target_end: None,
        sources: Default::default(),
        limits: Default::default(),
        oom_kills: None,
        console_retention_ms: None,
    }
}

fn sample(seq: u64) -> Sample {
    Sample {
        seq,
        t_ms: seq * 250,
        proc: Some(ProcSample {
            rss_bytes: 1000 + seq,
            fds: 10 + seq,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn what_is_written_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut w = RunWriter::create(&run_dir, meta()).unwrap();
    for seq in 0..5 {
        w.append(&sample(seq)).unwrap();
    }
    w.update_meta(|m| {
        m.ended_unix_ms = Some(2);
        m.target_end = Some(TargetEnd::Exited { code: 0 });
    })
    .unwrap();
    let run = Run::open(&run_dir).unwrap();
    assert_eq!(run.samples, (0..5).map(sample).collect::<Vec<_>>());
    assert_eq!(run.meta.target_end, Some(TargetEnd::Exited { code: 0 }));
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
}

#[test]
fn a_torn_last_line_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RunWriter::create(dir.path(), meta()).unwrap();
    w.append(&sample(0)).unwrap();
    w.append(&sample(1)).unwrap();
    drop(w);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(SAMPLES_FILE))
        .unwrap();
    f.write_all(br#"{"seq":2,"t_ms":500,"proc":{"rss_by"#)
        .unwrap();
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(run.samples.len(), 2);
    assert!(run.warnings.contains(&Warning::TornLastLine { line: 3 }));
    assert!(run.warnings.contains(&Warning::Unfinished));
}

#[test]
fn damage_before_the_end_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RunWriter::create(dir.path(), meta()).unwrap();
    w.append(&sample(0)).unwrap();
    drop(w);
    let path = dir.path().join(SAMPLES_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("not json\n");
    text.push_str(&serde_json::to_string(&sample(2)).unwrap());
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    match Run::open(dir.path()) {
        Err(RunDirError::Corrupt { line: 2, .. }) => {}
        other => panic!("expected a corrupt-line error, got {other:?}"),
    }
}

#[test]
fn a_newer_schema_is_refused_with_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = meta();
    m.schema_version = SCHEMA_VERSION + 1;
    RunWriter::create(dir.path(), m).unwrap();
    let err = Run::open(dir.path()).unwrap_err();
    assert!(matches!(err, RunDirError::NewerSchema { .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade leakscope"), "{err}");
}

#[test]
fn an_existing_recording_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    RunWriter::create(dir.path(), meta()).unwrap();
    let err = RunWriter::create(dir.path(), meta()).err().unwrap();
    assert!(matches!(err, RunDirError::NotEmpty { .. }), "{err:?}");
}

#[test]
fn a_directory_without_meta_is_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let err = Run::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not a run directory"), "{err}");
}
