//! The scenario contract as tools see it: `--list-scenarios` output, and the
//! routes only when a variant was chosen.

mod common;

use std::process::Command;

use common::{get, Fixture, Running};
use download_server::scenarios::{Input, Variant, ALL};

#[test]
fn list_scenarios_is_json_naming_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_download-server"))
        .arg("--list-scenarios")
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), ALL.len());
    for (entry, scenario) in list.iter().zip(ALL) {
        assert_eq!(entry["name"], scenario.name);
        assert_eq!(
            entry["route"].as_str().unwrap(),
            format!("/s/{}/{}", scenario.name, scenario.input.placeholder())
        );
        for key in [
            "resource",
            "symptom",
            "description",
            "source",
            "file_size",
            "files",
            "load",
        ] {
            assert!(!entry[key].is_null(), "{} lacks {key}", scenario.name);
        }
        assert!(
            ["per-request", "per-in-flight", "allocated-per-request"]
                .contains(&entry["symptom"].as_str().unwrap()),
            "{}: symptom {}",
            scenario.name,
            entry["symptom"]
        );
        // An in-flight cost only shows when the response outgrows what
        // loopback's socket buffers absorb (tcp_wmem's 4 MiB maximum).
        if entry["symptom"] == "per-in-flight" {
            let bytes = entry["file_size"].as_u64().unwrap() * entry["files"].as_u64().unwrap();
            assert!(bytes > 16 << 20, "{}: {bytes} bytes", scenario.name);
        }
        assert!(entry["load"]["pattern"].is_string());
    }
    for name in [
        "buffer-whole-file",
        "fd-leak",
        "task-leak-on-disconnect",
        "unbounded-session-map",
        "unbounded-channel",
        "zip-in-memory",
        "buffer-churn",
    ] {
        assert!(list.iter().any(|e| e["name"] == name), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_routes_need_a_variant_and_a_known_name() {
    let fx = Fixture::new();
    let plain = Running::start(fx.config()).await;
    let r = get(&plain.url("/s/fd-leak/hello.txt"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("--variant"));

    let mut config = fx.config();
    config.variant = Some(Variant::Fixed);
    let server = Running::start(config).await;
    let r = get(&server.url("/s/no-such-scenario/hello.txt"), &[]).await;
    assert_eq!(r.status, 404);
    // Every scenario serves the file (or the directory's archive) whole, and
    // refuses traversal like the main routes.
    for scenario in ALL {
        let target = if scenario.input == Input::Directory {
            "sub"
        } else {
            "hello.txt"
        };
        let r = get(&server.url(&format!("/s/{}/{target}", scenario.name)), &[]).await;
        assert_eq!(r.status, 200, "{}", scenario.name);
        if target == "hello.txt" {
            assert_eq!(&r.body[..], b"hello, world\n", "{}", scenario.name);
        }
        let r = get(
            &server.url(&format!("/s/{}/../outside/secret.txt", scenario.name)),
            &[],
        )
        .await;
        assert_eq!(r.status, 400, "{}", scenario.name);
        let r = get(
            &server.url(&format!("/s/{}/escape-relative", scenario.name)),
            &[],
        )
        .await;
        assert_ne!(r.status, 200, "{}", scenario.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_variants_serve_correct_bytes_too() {
    let fx = Fixture::new();
    let mut config = fx.config();
    config.variant = Some(Variant::Leaky);
    let server = Running::start(config).await;
    let want = std::fs::read(fx.root().join("big.bin")).unwrap();
    for scenario in ALL.iter().filter(|s| s.name != "zip-in-memory") {
        let r = get(&server.url(&format!("/s/{}/big.bin", scenario.name)), &[]).await;
        assert_eq!(r.status, 200, "{}", scenario.name);
        assert!(
            r.body[..] == want[..],
            "{} sent different bytes",
            scenario.name
        );
    }
}
