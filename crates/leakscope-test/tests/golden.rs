//! The failure message is part of the product: this pins it. A change to
//! the wording shows here as a diff; `LEAKSCOPE_BLESS=1` rewrites the file
//! after a deliberate change.

use std::time::Duration;

use leakscope_test::{Budget, HeapSite, LeakedTasks, OpenFd, Parked, Report};

fn report() -> Report {
    Report {
        test: "handlers::download_leaves_nothing".into(),
        rerun:
            "cargo test -p my-service --test handlers -- --exact handlers::download_leaves_nothing"
                .into(),
        tasks: vec![LeakedTasks {
            site: Some("src/download.rs:83:9".into()),
            count: 40,
            parked: vec![Parked {
                count: 40,
                leaf: "tokio::time::interval::Interval::tick".into(),
                own: Some(
                    "my_service::download::progress::{{closure}} (src/download.rs:53)".into(),
                ),
            }],
        }],
        registered_fds: 1,
        fds: vec![
            OpenFd {
                fd: 17,
                kind: "tcp".into(),
                target: "127.0.0.1:40000 -> 127.0.0.1:51234 (Established)".into(),
                link: "socket:[99]".into(),
            },
            OpenFd {
                fd: 18,
                kind: "file".into(),
                target: "/srv/files/8m.bin".into(),
                link: "/srv/files/8m.bin".into(),
            },
            OpenFd {
                fd: 19,
                kind: "file".into(),
                target: "/srv/files/8m.bin".into(),
                link: "/srv/files/8m.bin".into(),
            },
        ],
        fds_fail: true,
        overlapped: vec![],
        heap: vec![HeapSite {
            site: "src/cache.rs:41".into(),
            function: "my_service::cache::Cache::insert".into(),
            bytes_per_iteration: 4160,
        }],
        heap_fail: true,
        heap_tolerance: 0,
        peak: Some(Budget {
            limit: 4 << 20,
            used: 8 << 20,
        }),
        allocated: Some(Budget {
            limit: 64 << 20,
            used: 1 << 20,
        }),
        iterations: 10,
        warmup: 1,
        blind: vec!["where tasks are parked: leakscope-test built without `taskdump`".into()],
        errors: vec![],
        checks: 21,
        waited: Duration::from_millis(431),
    }
}

#[test]
fn the_failure_message_is_stable() {
    let got = report().to_string();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/failure.txt");
    if std::env::var_os("LEAKSCOPE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the message changed; if on purpose, rerun with LEAKSCOPE_BLESS=1\n--- want\n{want}\n--- got\n{got}"
    );
}

#[test]
fn overlapping_tests_turn_process_fds_into_a_named_warning() {
    let mut r = report();
    r.tasks.clear();
    r.registered_fds = 0;
    r.heap.clear();
    r.peak = None;
    r.fds_fail = false;
    r.overlapped = (1..=7).map(|i| format!("sibling_{i}")).collect();
    assert!(!r.fails(), "{r}");
    assert!(r.has_warnings());
    let text = r.to_string();
    assert!(
        text.contains("sibling_1, sibling_2, sibling_3, sibling_4, sibling_5 and 2 more"),
        "{text}"
    );
    assert!(text.contains("Config::new().exclusive()"), "{text}");
}

#[test]
fn many_fds_are_grouped_by_target_and_the_rest_counted_by_kind() {
    let mut r = report();
    let file = |fd| OpenFd {
        fd,
        kind: "file".into(),
        target: "/srv/files/a.bin".into(),
        link: "/srv/files/a.bin".into(),
    };
    let pipe = |fd: i32| OpenFd {
        fd,
        kind: "pipe".into(),
        target: format!("pipe:[{}]", 1000 + fd / 2),
        link: format!("pipe:[{}]", 1000 + fd / 2),
    };
    r.fds = (20..44).map(file).chain((50..80).map(pipe)).collect();
    let text = r.to_string();
    assert!(text.contains("left 40 tasks, 54 fds,"), "{text}");
    // 24 copies of one file in one line, then nine pipe pairs, then the
    // other six pairs counted.
    assert!(
        text.contains("  24 x     file       /srv/files/a.bin\n"),
        "{text}"
    );
    assert!(
        text.contains("  2 x      pipe       pipe:[1025]\n"),
        "{text}"
    );
    assert!(text.contains("  ... and 12 more: 12 pipe\n"), "{text}");
    assert!(text.contains("ignore_path(\"/srv/files/*\")"), "{text}");
    assert!(text.contains("ignore_path(\"pipe:*\")"), "{text}");
    assert_eq!(text.matches("pipe:[").count(), 9, "{text}");
}

#[test]
fn nested_async_closures_read_as_one() {
    let mut r = report();
    r.heap[0].function = "svc::handler::{{closure}}::{{closure}}::{{closure}}".into();
    let text = r.to_string();
    assert!(text.contains("in svc::handler::{{closure}}\n"), "{text}");
}
