//! The procfs source on real processes: this test process (whose fds it
//! opens itself) and a child that exits.

use std::net::{TcpListener, TcpStream};

use leakscope::sources::procfs::{ProcSource, ProcSourceError};

#[test]
fn counts_files_by_path_and_sockets_by_tcp_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.bin");
    std::fs::write(&path, b"x").unwrap();
    let source = ProcSource::new(std::process::id() as i32).unwrap();
    let before = source.sample().unwrap();

    let files: Vec<_> = (0..7)
        .map(|_| std::fs::File::open(&path).unwrap())
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let after = source.sample().unwrap();

    // Other tests in this process open and close descriptors too, so the
    // totals are checked as lower bounds and the served path exactly.
    assert!(after.fds >= 7 + 3, "{} -> {}", before.fds, after.fds);
    assert!(after.fds_by_kind.get("file").copied().unwrap_or(0) >= 7);
    assert!(after.fds_by_kind.get("socket").copied().unwrap_or(0) >= 3);
    let top = &after.top_files[0];
    assert_eq!((top.0.as_str(), top.1), (path.to_str().unwrap(), 7));
    assert!(after.tcp_states.get("LISTEN").copied().unwrap_or(0) >= 1);
    assert!(after.tcp_states.get("ESTABLISHED").copied().unwrap_or(0) >= 2);
    assert!(after.rss_bytes > 0 && after.peak_rss_bytes >= after.rss_bytes);
    assert!(after.threads >= 1);
    drop((files, client, server, listener));
}

#[test]
fn a_process_that_exits_is_reported_gone() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let source = ProcSource::new(child.id() as i32).unwrap();
    assert!(source.sample().is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
    match source.sample() {
        Err(ProcSourceError::Gone { .. }) => {}
        other => panic!("expected Gone, got {other:?}"),
    }
}
