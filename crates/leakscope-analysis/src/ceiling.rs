//! Ceilings: a leak that reached its limit (EXHAUSTED), and for a leak that
//! has not yet, how long until it does at the observed rate.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::metrics::{Ceiling, CeilingKind, MetricId};
use crate::series::Point;
use crate::{describe, MetricAnalysis, Verdict};

/// How close to its ceiling a metric must come to be at it: the larger of
/// its noise floor and 1% of the ceiling. An exhausted process sits a few
/// descriptors under its limit, since requests in flight open and close
/// some between two samples.
pub fn margin(ceiling: f64, floor: f64) -> f64 {
    floor.max(0.01 * ceiling)
}

/// A metric that reached its ceiling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exhaustion {
    pub ceiling: Ceiling,
    /// The first sample at the ceiling.
    pub sample: usize,
    /// Seconds into the recording.
    pub t: f64,
    /// Requests served by then, when counted.
    pub requests: Option<f64>,
    /// The level there.
    pub level: f64,
    /// leakscope's driver's requests that failed from then on.
    pub failed_after: Option<u64>,
    /// The OOM killer ended the target (memory ceilings).
    pub oom_killed: bool,
    /// What the target's log says about it.
    pub log: Option<LogSigns>,
}

/// Lines of the target's log that name the ceiling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogSigns {
    /// How many times any sign appears.
    pub count: u64,
    /// The first line with one, cut to [`LOG_LINE_MAX`] bytes.
    pub first: String,
}

/// The longest quoted log line: enough for an error and its context.
pub const LOG_LINE_MAX: usize = 200;

/// The first sample whose level is within [`margin`] of the ceiling.
pub fn reached(points: &[Option<Point>], ceiling: f64, floor: f64) -> Option<usize> {
    let at = ceiling - margin(ceiling, floor);
    points.iter().position(|p| p.is_some_and(|p| p.y >= at))
}

/// One account per resource: the kinds of a metric (`fds.file`,
/// `fds.socket`) under a whole that is EXHAUSTED are read at the sample it
/// reached its ceiling. Judged alone, a kind pinned beside its exhausted
/// total looks level and read BOUNDED, with a "per request in flight"
/// figure that was only the ceiling over the concurrency.
///
/// - A kind drove the total when it grew from its baseline by more than
///   the [`margin`] the ceiling is read with (and by its own floor): growth
///   the slack could not hide. It reads EXHAUSTED and says so. Two kinds
///   leaking in step both drove it; the sockets of the requests in flight
///   did not.
/// - No kind of an exhausted whole carries a per-request-in-flight figure.
pub fn account_kinds(metrics: &mut [MetricAnalysis]) {
    let wholes: Vec<(MetricId, Exhaustion, f64)> = metrics
        .iter()
        .filter(|m| m.kind.is_none())
        .filter_map(|m| Some((m.metric, m.exhaustion.clone()?, m.floor)))
        .collect();
    for (id, e, floor) in wholes {
        let slack = margin(e.ceiling.value, floor);
        let title = id.def().title;
        for m in metrics
            .iter_mut()
            .filter(|m| m.metric == id && m.kind.is_some())
        {
            m.per_in_flight = None;
            let growth = kind_growth(m, e.t);
            if growth >= m.floor && growth > slack {
                drove_total(m, &e, growth, title);
            }
        }
    }
}

/// A kind's rise from its baseline to its level at `t` (the whole's first
/// sample at its ceiling; the kinds are read from the same samples).
fn kind_growth(m: &MetricAnalysis, t: f64) -> f64 {
    let at = m.points.iter().rev().find(|p| p.t <= t).map(|p| p.y);
    match (at, m.baseline) {
        (Some(y), Some(b)) => y - b,
        _ => 0.0,
    }
}

/// A kind without whose growth its total would not have reached the
/// ceiling: EXHAUSTED with the total, saying that it drove it there.
fn drove_total(m: &mut MetricAnalysis, e: &Exhaustion, growth: f64, title: &str) {
    let amount = |v| describe::amount(v, m.unit);
    let reason = format!(
        "drove the total to its limit: {} rose by {}, and {title} reached {} ({}) at {:.1} s",
        m.title,
        amount(growth),
        e.ceiling.what,
        amount(e.ceiling.value),
        e.t
    );
    let Some(j) = m.judgement.as_mut() else {
        return;
    };
    j.verdict = Verdict::Exhausted;
    j.reason = reason;
    // What it rules out belongs to a verdict that no longer stands.
    j.detection_limit = None;
    m.forecast = None;
}

/// How long until a LEAK reaches its ceiling at the rate it grew.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub ceiling: Ceiling,
    /// Growth per wall-clock second during the window (slope × work per
    /// second).
    pub per_second: f64,
    /// The level at the end of the recording.
    pub from: f64,
    /// Seconds from the end of the recording to the ceiling.
    pub seconds: f64,
    /// Units of work per second during the window (requests/s, CPU-s/s).
    pub work_per_second: f64,
}

pub fn forecast(ceiling: Ceiling, slope: f64, work_per_second: f64, from: f64) -> Option<Forecast> {
    let per_second = slope * work_per_second;
    if !(per_second > 0.0 && per_second.is_finite() && from.is_finite()) {
        return None;
    }
    let seconds = ((ceiling.value - from) / per_second).max(0.0);
    Some(Forecast {
        ceiling,
        per_second,
        from,
        seconds,
        work_per_second,
    })
}

/// "0.5 s", "12 min", "6 h 12 min", "3.2 days".
pub fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else if seconds < 7200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 48.0 * 3600.0 {
        let m = (seconds / 60.0).round() as u64;
        format!("{} h {} min", m / 60, m % 60)
    } else {
        format!("{:.1} days", seconds / 86400.0)
    }
}

/// Counts the ceiling's signs in a log without holding more than a chunk
/// of it: target logs have no size cap, and a line may be endless.
pub fn log_signs(path: &Path, kind: CeilingKind) -> Option<LogSigns> {
    let mut file = std::fs::File::open(path).ok()?;
    let signs = kind.log_signs();
    let keep = signs.iter().map(|s| s.len()).max().unwrap_or(0) + LOG_LINE_MAX;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024 + keep);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut count = 0u64;
    let mut first: Option<String> = None;
    loop {
        let n = file.read(&mut chunk).ok()?;
        let done = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        // Scan all but the last `keep` bytes (a sign may straddle the
        // chunk's end), or everything at the end of the file.
        let scan_to = if done {
            buf.len()
        } else {
            buf.len().saturating_sub(keep)
        };
        let mut i = 0;
        while i < scan_to {
            let hit = signs.iter().find(|s| buf[i..].starts_with(s.as_bytes()));
            if let Some(s) = hit {
                count += 1;
                if first.is_none() {
                    first = Some(line_around(&buf, i));
                }
                i += s.len();
            } else {
                i += 1;
            }
        }
        if done {
            break;
        }
        buf.drain(..scan_to);
    }
    first.map(|first| LogSigns { count, first })
}

/// The line holding byte `at`, cut to [`LOG_LINE_MAX`] bytes around it.
fn line_around(buf: &[u8], at: usize) -> String {
    let lo = at.saturating_sub(LOG_LINE_MAX / 2);
    let start = buf[lo..at]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(lo, |p| lo + p + 1);
    let hi = (start + LOG_LINE_MAX).min(buf.len());
    let end = buf[at..hi]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(hi, |p| at + p);
    strip_ansi(&String::from_utf8_lossy(&buf[start..end]))
        .trim()
        .to_string()
}

/// Drops terminal colour codes (ESC [ parameters final-byte): tracing's
/// default formatter writes them even into a file, and a quoted log line
/// must read as text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to the final byte @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_log_lines_lose_their_colour_codes() {
        let line = "\u{1b}[2m12:00\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m error=Too many open files";
        assert_eq!(strip_ansi(line), "12:00 ERROR error=Too many open files");
        assert_eq!(strip_ansi("plain [31m text"), "plain [31m text");
    }

    #[test]
    fn log_signs_count_across_chunks_and_quote_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = leakscope_rundir::RunFile::TargetLog.path(dir.path());
        let mut text = "x".repeat(70_000);
        text.push_str("\nerror: accept: Too many open files (os error 24)\n");
        text.push_str(&"y".repeat(65_530));
        text.push_str("Too many open files");
        std::fs::write(&path, &text).unwrap();
        let s = log_signs(&path, CeilingKind::OpenFiles).unwrap();
        // The first line has two signs; the last one straddles a chunk.
        assert_eq!(s.count, 3);
        assert_eq!(s.first, "error: accept: Too many open files (os error 24)");
        assert!(log_signs(&path, CeilingKind::Memory).is_none());
    }

    #[test]
    fn forecast_is_the_room_left_over_the_rate() {
        let c = Ceiling {
            value: 1024.0,
            what: "RLIMIT_NOFILE",
        };
        let f = forecast(c.clone(), 1.0, 1950.0, 50.0).unwrap();
        assert!((f.seconds - 974.0 / 1950.0).abs() < 1e-9);
        assert!(forecast(c, -1.0, 10.0, 5.0).is_none());
        assert_eq!(duration(22_320.0), "6 h 12 min");
    }
}
