//! The targets do what the sidecar's tests rely on: the server prints its
//! lines in order, answers on each address and exits 0 on SIGTERM; the fd
//! holder opens its fds and holds them as long as asked; bad
//! configuration is a clear exit 2; and
//! [`test_targets::path`] finds the binaries cargo built for this test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use test_targets::{fd_holder, server, Bin};

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts the fd holder with `args` and `stdin`; the child and its first
/// line (without the newline).
fn fd_holder(args: &[&std::ffi::OsStr], stdin: Stdio) -> (std::process::Child, String) {
    let mut child = Command::new(test_targets::path(Bin::FdHolder))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim_end().to_owned())
}

#[test]
fn path_finds_the_binaries_cargo_built() {
    for (bin, built) in [
        (
            Bin::InstrumentedServer,
            env!("CARGO_BIN_EXE_instrumented-server"),
        ),
        (Bin::FdHolder, env!("CARGO_BIN_EXE_fd-holder")),
    ] {
        assert_eq!(test_targets::path(bin), std::path::Path::new(built));
    }
}

#[test]
fn the_server_prints_its_lines_answers_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.txt"), "hello").unwrap();
    let mut child = Command::new(test_targets::path(Bin::InstrumentedServer))
        .env(server::ROOT_ENV, root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().expect("a line").unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line:?} is not {prefix:?}ADDR"))
            .to_owned()
    };
    let agent = next(server::AGENT_LINE);
    let console = next(server::CONSOLE_LINE);
    let addr = next(server::SERVER_LINE);
    assert!(get(&agent, "/debug/heap/stats").contains("\"allocated\""));
    assert!(TcpStream::connect(&console).is_ok());
    assert!(get(&addr, "/files/a.txt").ends_with("hello"));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_fd_holder_opens_its_fds() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["served.bin", "other.bin"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("logs-12")).unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = peer.local_addr().unwrap().to_string();
    let (mut child, line) = fd_holder(
        &["kinds".as_ref(), dir.path().as_os_str(), peer.as_ref()],
        Stdio::null(),
    );
    assert_eq!(line, fd_holder::READY);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .count();
    child.kill().unwrap();
    child.wait().unwrap();
    // 14 files and logs, 2 pipe ends, 2 unix, 3 pairs + listener, 2 peers,
    // beside stdin/out/err: at least 30.
    assert!(fds >= 30, "{fds} fds");
}

#[test]
fn the_fd_holder_holds_n_until_stdin_closes() {
    let (mut child, line) = fd_holder(&["dev-null".as_ref(), "100".as_ref()], Stdio::piped());
    assert_eq!(line, format!("{}100", fd_holder::HOLDING));
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn missing_configuration_is_a_clear_exit_2() {
    let out = Command::new(test_targets::path(Bin::InstrumentedServer))
        .env_remove(server::ROOT_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(server::ROOT_ENV));
    let out = Command::new(test_targets::path(Bin::FdHolder))
        .arg("kinds")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<PEER>"));
}
