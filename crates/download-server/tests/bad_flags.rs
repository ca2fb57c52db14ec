//! Flags a careless or hostile operator might pass are refused before the
//! server starts: no worker panics on every connection, no server that
//! answers every download 503 while /healthz says ok.

use std::process::{Command, Stdio};

#[test]
fn absurd_limits_and_timeouts_are_refused_with_the_flag_named() {
    let root = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--max-inflight", "0"),
        ("--max-zip-streams", "0"),
        ("--header-read-timeout", "9999999999999999s"),
        ("--stall-timeout", "400days"),
        ("--shutdown-timeout", "9999999999999999s"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_download-server"))
            .arg("--root")
            .arg(root.path())
            .args(["--listen", "127.0.0.1:0", flag, value])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
    }
}

#[tokio::test]
async fn a_library_config_with_a_zero_limit_does_not_bind() {
    let root = tempfile::tempdir().unwrap();
    let mut c = download_server::Config::new(root.path());
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.max_inflight = 0;
    let err = download_server::Server::bind(c.clone())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("max_inflight"), "{err}");
    c.max_inflight = 1;
    c.stall_timeout = download_server::MAX_TIMEOUT * 2;
    let err = download_server::Server::bind(c).await.err().unwrap();
    assert!(err.to_string().contains("stall_timeout"), "{err}");
}
