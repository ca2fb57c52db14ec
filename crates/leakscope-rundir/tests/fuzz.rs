//! Generated run directories: `meta.json` and `samples.jsonl` are input
//! like any other (a run may come from anyone), so any bytes in them give a
//! run or a typed error, never a panic, and a sample's profile name never
//! leads outside the directory.

use leakscope_rundir::{profile_file, Meta, Run, RunFile, RunWriter};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn meta() -> Meta {
    Meta {
        ended_unix_ms: Some(2),
        ..Meta::default()
    }
}

/// Lines that are JSON-shaped enough to reach the sample's fields.
fn sample_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| s.replace('\n', " ")),
        "\\{\"seq\": ?-?[0-9]{0,22}(\\.[0-9])?, ?\"t_ms\": ?-?[0-9e.+]{0,22}(, ?\"heap_profile\": ?\"[ -!#-~]{0,30}\")?(, ?\"load\": ?\\{\"requests_total\": ?-?[0-9]{0,21}\\})?\\}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_meta_json_gives_a_run_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(RunFile::Meta.path(dir.path()), &bytes).unwrap();
        std::fs::write(RunFile::Samples.path(dir.path()), b"").unwrap();
        let _ = Run::open(dir.path());
    }

    #[test]
    fn any_samples_give_a_run_or_an_error(lines in prop::collection::vec(sample_line(), 0..30), torn in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        drop(RunWriter::create(&out, meta()).unwrap());
        let mut text = lines.join("\n");
        if !torn {
            text.push('\n');
        }
        std::fs::write(RunFile::Samples.path(&out), text).unwrap();
        if let Ok(run) = Run::open(&out) {
            for s in &run.samples {
                if let Some(name) = &s.heap_profile {
                    if let Some(path) = profile_file(&out, name) {
                        assert!(path.starts_with(RunFile::Profiles.path(&out)), "{name:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_profile_name_never_leads_outside(name in "(\\.\\.|/|profiles|[a-z.-]{1,8}|\\\\){0,6}") {
        let dir = tempfile::tempdir().unwrap();
        let profiles = RunFile::Profiles.path(dir.path());
        std::fs::create_dir(&profiles).unwrap();
        std::fs::write(profiles.join("a.pb.gz"), b"x").unwrap();
        if let Some(path) = profile_file(dir.path(), &name) {
            assert_eq!(path.parent(), Some(profiles.as_path()), "{name:?}");
        }
    }
}
