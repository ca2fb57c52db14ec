//! What the target's environment says about its instrumentation.
//!
//! Why: console-subscriber's retention decides whether memory growth can
//! be its retained tasks (see leakscope-analysis's `confound`), and a
//! target without leakscope-agent cannot tell the sidecar; the variables
//! that set it are in `/proc/PID/environ` (readable as the target's user
//! or root), as the target was started.

use std::time::Duration;

/// The variables that set a console's retention: console-subscriber's own
/// (`ConsoleLayer::builder().with_default_env()`, which `console_subscriber::init`
/// uses) and leakscope-agent's.
pub const RETENTION_VARS: [&str; 2] = ["TOKIO_CONSOLE_RETENTION", "LEAKSCOPE_CONSOLE_RETENTION"];

/// The longest retention the target's environment sets (the one in use is
/// not known from outside, and the longer explains more), or `None` when
/// it sets none or cannot be read.
pub fn console_retention(pid: u32) -> Option<Duration> {
    let path = format!("/proc/{pid}/environ");
    // A process that has just been started (`leakscope run`) can still be
    // inside exec, past the point where its parent is told it succeeded but
    // before the kernel has laid out its new environment: its environ
    // reads empty for that moment. A real environment is never empty for
    // long, so an empty one is read again, for up to half a second.
    for _ in 0..50 {
        let environ = std::fs::read(&path).ok()?;
        if !environ.is_empty() {
            return retention_in(&environ);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// [`console_retention`] of an environ block (NUL-separated `KEY=VALUE`).
pub fn retention_in(environ: &[u8]) -> Option<Duration> {
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            RETENTION_VARS.contains(&k).then_some(v)
        })
        .filter_map(|v| humantime::parse_duration(v.trim()).ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_retention_set_is_taken_and_junk_ignored() {
        let env =
            b"PATH=/bin\0TOKIO_CONSOLE_RETENTION=1h\0LEAKSCOPE_CONSOLE_RETENTION=500ms\0X=\xff\0";
        assert_eq!(retention_in(env), Some(Duration::from_secs(3600)));
        assert_eq!(
            retention_in(b"LEAKSCOPE_CONSOLE_RETENTION=500ms"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(retention_in(b"TOKIO_CONSOLE_RETENTION=soon\0"), None);
        assert_eq!(retention_in(b""), None);
    }

    #[test]
    fn a_real_process_environment_is_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env("TOKIO_CONSOLE_RETENTION", "2s")
            .spawn()
            .unwrap();
        // Read at once, as `leakscope run` does: the child may still be in
        // exec (its environ empty for a moment).
        let got = console_retention(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got, Some(Duration::from_secs(2)));
    }
}
