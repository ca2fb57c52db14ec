//! The human forms of what a run directory records: how the target ended
//! and when the recording ran. They live beside the types so that the
//! report, the CLI and the tools word them alike, and none prints Debug
//! output or epoch milliseconds to a reader.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::{Meta, TargetEnd};

impl fmt::Display for TargetEnd {
    /// "exited with status 0", "killed by signal 15 (SIGTERM)", …: the
    /// number for whoever greps for it, the name for whoever reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetEnd::StillRunning => f.write_str("still running when the recording stopped"),
            TargetEnd::Exited { code } => write!(f, "exited with status {code}"),
            TargetEnd::Signaled { signal } => match signal_name(*signal) {
                Some(name) => write!(f, "killed by signal {signal} ({name})"),
                None => write!(f, "killed by signal {signal}"),
            },
            TargetEnd::Vanished => {
                f.write_str("gone, with an exit status leakscope could not read")
            }
        }
    }
}

/// The name of a standard signal as Linux numbers them on x86, ARM and
/// RISC-V (the recorder runs on Linux); `None` for real-time and unknown
/// ones, which are shown by number only.
fn signal_name(signal: i32) -> Option<&'static str> {
    #[rustfmt::skip]
    const NAMES: [&str; 31] = [
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
        "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT",
        "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU",
        "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];
    let index = usize::try_from(signal).ok()?.checked_sub(1)?;
    NAMES.get(index).copied()
}

/// A time as `meta.json` keeps it, milliseconds since the Unix epoch,
/// shown in RFC 3339, UTC, to the second (`2026-11-23T22:04:05Z`): the
/// form a reader can set beside the target's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixMs(pub u64);

/// The first millisecond of the year 10000, which RFC 3339 cannot write.
const YEAR_10000_MS: u64 = 253_402_300_800_000;

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // meta.json is input: a time past what RFC 3339 can write is shown
        // as recorded, rather than failing (humantime refuses it).
        let time = Some(self.0)
            .filter(|ms| *ms < YEAR_10000_MS)
            .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
        match time {
            Some(t) => write!(f, "{}", humantime::format_rfc3339_seconds(t)),
            None => write!(f, "{} ms since the Unix epoch", self.0),
        }
    }
}

impl Meta {
    /// How the target ended, in words; a recording the recorder did not
    /// finish says so instead of showing an absent value.
    pub fn target_end_text(&self) -> String {
        match &self.target_end {
            Some(end) => end.to_string(),
            None => "unknown (the recording was not finished)".into(),
        }
    }

    /// How long the recording ran, in seconds; `None` while unfinished.
    pub fn recorded_secs(&self) -> Option<f64> {
        self.ended_unix_ms
            .map(|e| e.saturating_sub(self.started_unix_ms) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_end_reads_as_words() {
        let cases = [
            (
                TargetEnd::StillRunning,
                "still running when the recording stopped",
            ),
            (TargetEnd::Exited { code: 0 }, "exited with status 0"),
            (TargetEnd::Exited { code: -3 }, "exited with status -3"),
            (
                TargetEnd::Signaled { signal: 15 },
                "killed by signal 15 (SIGTERM)",
            ),
            (
                TargetEnd::Signaled { signal: 9 },
                "killed by signal 9 (SIGKILL)",
            ),
            (
                TargetEnd::Signaled { signal: 1 },
                "killed by signal 1 (SIGHUP)",
            ),
            (
                TargetEnd::Signaled { signal: 31 },
                "killed by signal 31 (SIGSYS)",
            ),
            (TargetEnd::Signaled { signal: 34 }, "killed by signal 34"),
            (TargetEnd::Signaled { signal: 0 }, "killed by signal 0"),
            (TargetEnd::Signaled { signal: -1 }, "killed by signal -1"),
            (
                TargetEnd::Vanished,
                "gone, with an exit status leakscope could not read",
            ),
        ];
        for (end, text) in cases {
            assert_eq!(end.to_string(), text, "{end:?}");
        }
    }

    #[test]
    fn a_meta_without_an_end_says_the_recording_was_unfinished() {
        let mut meta = Meta::default();
        assert_eq!(
            meta.target_end_text(),
            "unknown (the recording was not finished)"
        );
        assert_eq!(meta.recorded_secs(), None);
        meta.target_end = Some(TargetEnd::Signaled { signal: 15 });
        meta.started_unix_ms = 1_000;
        meta.ended_unix_ms = Some(31_500);
        assert_eq!(meta.target_end_text(), "killed by signal 15 (SIGTERM)");
        assert_eq!(meta.recorded_secs(), Some(30.5));
    }

    #[test]
    fn times_are_rfc3339_utc_to_the_second() {
        assert_eq!(UnixMs(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            UnixMs(1_795_471_445_000).to_string(),
            "2026-11-23T22:04:05Z"
        );
        // Milliseconds are dropped, not rounded up.
        assert_eq!(
            UnixMs(1_795_471_445_999).to_string(),
            "2026-11-23T22:04:05Z"
        );
        assert_eq!(
            UnixMs(YEAR_10000_MS - 1).to_string(),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn a_time_rfc3339_cannot_write_is_shown_as_recorded() {
        assert_eq!(
            UnixMs(YEAR_10000_MS).to_string(),
            "253402300800000 ms since the Unix epoch"
        );
        assert_eq!(
            UnixMs(u64::MAX).to_string(),
            format!("{} ms since the Unix epoch", u64::MAX)
        );
    }
}
