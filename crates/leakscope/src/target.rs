//! The target of `leakscope run`: started, watched until ready, stopped.
//!
//! The target runs in its own process group so a Ctrl-C at the terminal
//! reaches leakscope alone, which then stops the target the graceful way
//! (SIGTERM to the group, SIGKILL after a deadline) and still finishes the
//! run directory. Its output goes to a log file in the run directory, line by
//! line, and is scanned for the ready line and for addresses it announces.
//!
//! The target never outlives leakscope: a guard process stops its group if
//! leakscope dies (`guard`), and whatever the leader leaves running in its
//! group is stopped with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leakscope_rundir::TargetEnd;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

mod guard;
mod output;

pub use output::{MAX_LINE, MAX_LOG};

/// How leakscope knows the target can take load.
#[derive(Debug, Clone)]
pub enum Ready {
    /// As soon as it is started.
    Started,
    /// When it prints a line (stdout or stderr) starting with this text.
    Line(String),
    /// When this address accepts a TCP connection.
    Port(SocketAddr),
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no command to run (give it after --)")]
    NoCommand,
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the target exited before it was ready ({end}); its last output:\n{tail}")]
    ExitedEarly { end: TargetEnd, tail: String },
    #[error(
        "the target was not ready within {timeout:?} ({waiting_for}); its last output:\n{tail}"
    )]
    NotReady {
        timeout: Duration,
        waiting_for: String,
        tail: String,
    },
    #[error(
        "{placeholder}: the target printed no line starting with {prefix:?} before it was ready"
    )]
    NoSuchLine { placeholder: String, prefix: String },
    #[error("{placeholder}: the line {line:?} holds no HOST:PORT address")]
    NoAddress { placeholder: String, line: String },
}

/// A started target.
pub struct Target {
    child: Child,
    pid: u32,
    /// What it printed before it was ready, for placeholders and errors.
    lines: output::Kept,
    ready_line: Option<String>,
    end: Option<TargetEnd>,
    /// `None` only if the guard could not start (no /bin/sh), which is
    /// logged.
    guard: Option<guard::Guard>,
}

impl Target {
    /// Starts `command`, logging its output to `log`, and waits until it is
    /// ready. A target that exits or never gets ready is stopped and the
    /// error carries the end of its output.
    pub async fn start(
        command: &[String],
        log: &Path,
        ready: &Ready,
        timeout: Duration,
    ) -> Result<Self, TargetError> {
        let (mut target, lines) = Self::spawn(command, log)?;
        target.wait_ready(lines, ready, timeout).await?;
        Ok(target)
    }

    /// Spawns the target in a process group of its own, under a guard that
    /// ends it if leakscope dies, with its output pumped to the log and to
    /// the returned channel, line by line.
    fn spawn(
        command: &[String],
        log: &Path,
    ) -> Result<(Self, mpsc::UnboundedReceiver<String>), TargetError> {
        let (program, args) = command.split_first().ok_or(TargetError::NoCommand)?;
        let log = output::Log::create(log).map_err(|source| TargetError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TargetError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pid = child.id().expect("a child just spawned has a pid");
        let guard = guard::Guard::watch(pid)
            .map_err(|e| {
                tracing::warn!(
                    "no guard for the target ({e}): if leakscope is killed, the target will outlive it"
                )
            })
            .ok();
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(output::pump(out, Arc::clone(&log), tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(output::pump(err, log, tx));
        }
        let target = Self {
            child,
            pid,
            lines: output::Kept::default(),
            ready_line: None,
            end: None,
            guard,
        };
        Ok((target, rx))
    }

    /// Waits until `ready` holds, keeping what the target prints; an error
    /// when it exits first or `timeout` passes (then it is stopped).
    async fn wait_ready(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<String>,
        ready: &Ready,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let deadline = Instant::now() + timeout;
        loop {
            match ready {
                Ready::Started => return Ok(()),
                Ready::Port(addr) if tokio::net::TcpStream::connect(addr).await.is_ok() => {
                    return Ok(())
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.not_ready(&mut rx, ready, timeout).await);
            }
            let poll = (deadline - now).min(Duration::from_millis(50));
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => {
                        let hit = matches!(ready, Ready::Line(p) if line.trim_start().starts_with(p.as_str()));
                        self.lines.push(line.clone());
                        if hit {
                            self.ready_line = Some(line);
                            return Ok(());
                        }
                    }
                    // Both streams closed: the target is exiting.
                    None => {
                        let status = self.child.wait().await;
                        return Err(self.exited_early(status, &mut rx, Duration::ZERO).await);
                    }
                },
                status = self.child.wait() => {
                    return Err(self.exited_early(status, &mut rx, Duration::from_millis(100)).await);
                }
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// The target was not ready in time: it is stopped, and the error says
    /// what was awaited and how its output ended.
    async fn not_ready(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<String>,
        ready: &Ready,
        timeout: Duration,
    ) -> TargetError {
        let waiting_for = match ready {
            Ready::Line(l) => format!("a line starting with {l:?}"),
            Ready::Port(a) => format!("{a} to accept"),
            Ready::Started => "nothing".to_string(),
        };
        // Give the log pumps a moment so the tail is complete.
        self.drain(rx, Duration::from_millis(50)).await;
        self.stop(Duration::from_secs(2)).await;
        TargetError::NotReady {
            timeout,
            waiting_for,
            tail: self.lines.tail(),
        }
    }

    /// The target exited before it was ready: how, and its output's end
    /// (what the pumps still deliver within `linger` included).
    async fn exited_early(
        &mut self,
        status: std::io::Result<std::process::ExitStatus>,
        rx: &mut mpsc::UnboundedReceiver<String>,
        linger: Duration,
    ) -> TargetError {
        let end = status.map(end_of).unwrap_or(TargetEnd::Vanished);
        self.drain(rx, linger).await;
        TargetError::ExitedEarly {
            end,
            tail: self.lines.tail(),
        }
    }

    /// Keeps the lines that arrive, until none has for `quiet`.
    async fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<String>, quiet: Duration) {
        if quiet.is_zero() {
            return;
        }
        while let Ok(Some(l)) = tokio::time::timeout(quiet, rx.recv()).await {
            self.lines.push(l);
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Replaces `{addr}` with the address on the ready line, and
    /// `{addr:PREFIX}` with the address on the first line that starts with
    /// PREFIX, so a target listening on port 0 can be found.
    pub fn resolve(&self, template: &str) -> Result<String, TargetError> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find("{addr") {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let placeholder = &rest[open..open + close + 1];
            let inner = &placeholder[1..placeholder.len() - 1];
            let line = match inner.strip_prefix("addr:") {
                Some(prefix) => self
                    .lines
                    .first()
                    .iter()
                    .find(|l| l.trim_start().starts_with(prefix))
                    .map(|l| (l, prefix.to_string())),
                None if inner == "addr" => self.ready_line.as_ref().map(|l| (l, String::new())),
                None => {
                    out.push_str(&rest[..open + close + 1]);
                    rest = &rest[open + close + 1..];
                    continue;
                }
            };
            let Some((line, prefix)) = line else {
                return Err(TargetError::NoSuchLine {
                    placeholder: placeholder.to_string(),
                    prefix: inner
                        .strip_prefix("addr:")
                        .unwrap_or("(the ready line)")
                        .into(),
                });
            };
            let addr = line.trim_start()[prefix.len()..]
                .split_whitespace()
                .find_map(|w| {
                    w.trim_matches(|c| c == ',' || c == ';')
                        .parse::<SocketAddr>()
                        .ok()
                })
                .ok_or_else(|| TargetError::NoAddress {
                    placeholder: placeholder.to_string(),
                    line: line.clone(),
                })?;
            out.push_str(&rest[..open]);
            out.push_str(&addr.to_string());
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// How the target ended, if it has; does not wait.
    pub fn try_end(&mut self) -> Option<TargetEnd> {
        if self.end.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.end = Some(end_of(status));
            }
        }
        self.end.clone()
    }

    /// Waits until the target ends by itself.
    pub async fn ended(&mut self) -> TargetEnd {
        if let Some(end) = &self.end {
            return end.clone();
        }
        let end = self
            .child
            .wait()
            .await
            .map(end_of)
            .unwrap_or(TargetEnd::Vanished);
        self.end = Some(end.clone());
        end
    }

    /// SIGTERM to the target's process group, SIGKILL if it is still there
    /// after `grace`; returns how the leader ended. What the leader left
    /// running in its group (background children) is stopped the same way.
    pub async fn stop(&mut self, grace: Duration) -> TargetEnd {
        if self.try_end().is_none() {
            signal_group(self.pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(grace, self.ended()).await.is_err() {
                tracing::warn!(
                    pid = self.pid,
                    ?grace,
                    "the target ignored SIGTERM; sending SIGKILL"
                );
                signal_group(self.pid, rustix::process::Signal::KILL);
                let _ = self.child.start_kill();
            }
        }
        let end = self.ended().await;
        self.sweep_group(grace).await;
        if let Some(guard) = self.guard.take() {
            guard.release();
        }
        end
    }

    /// Stops what is left of the group once its leader has ended.
    async fn sweep_group(&self, grace: Duration) {
        if !signal_group(self.pid, rustix::process::Signal::TERM) {
            return;
        }
        tracing::info!(
            pgid = self.pid,
            "the target left processes in its group; stopping them"
        );
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !group_alive(self.pid) {
                return;
            }
        }
        signal_group(self.pid, rustix::process::Signal::KILL);
    }
}

/// Whether the signal reached a group that still had members.
fn signal_group(pgid: u32, signal: rustix::process::Signal) -> bool {
    let Some(group) = rustix::process::Pid::from_raw(pgid as i32) else {
        return false;
    };
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) => true,
        Err(e) => {
            if e != rustix::io::Errno::SRCH {
                tracing::debug!(error = %e, ?signal, "signal to the target's group");
            }
            false
        }
    }
}

/// Signal 0 to the group: whether any member is left.
fn group_alive(pgid: u32) -> bool {
    rustix::process::Pid::from_raw(pgid as i32)
        .is_some_and(|g| rustix::process::test_kill_process_group(g).is_ok())
}

pub fn end_of(status: ExitStatus) -> TargetEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => TargetEnd::Exited { code },
        (None, Some(signal)) => TargetEnd::Signaled { signal },
        (None, None) => TargetEnd::Vanished,
    }
}
