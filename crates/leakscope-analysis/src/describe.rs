//! The one-line sentences the CLI and the report share, so both say the
//! same thing about the same run.

use bytesize::ByteSize;

use crate::{Analysis, Axis, MetricAnalysis, Unit, Verdict};

/// "64.0 KiB", "1.00", "12.3 MiB".
pub fn amount(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else if v.abs() >= 0.1 || v == 0.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.2e}")
            }
        }
        Unit::Bytes => {
            let a = v.abs();
            // Below a KiB as a signed, rounded count: slopes can be
            // fractional or negative, and bytesize takes whole bytes.
            if a < 1024.0 || !a.is_finite() {
                return format!("{v:.0} B");
            }
            let sign = if v < 0.0 { "-" } else { "" };
            format!("{sign}{}", ByteSize(a.round() as u64).display().iec())
        }
    }
}

pub fn per(axis: Axis) -> &'static str {
    axis.per()
}

/// The forecast of a LEAK: "at 1.00 per request and 1950 requests/s,
/// RLIMIT_NOFILE (1024) is reached in 0.5 s".
pub fn forecast(m: &MetricAnalysis, axis: Axis) -> Option<String> {
    let f = m.forecast.as_ref()?;
    let work = match axis {
        Axis::Requests => format!("{:.0} requests/s", f.work_per_second),
        Axis::Syscalls => format!("{:.0} read/write syscalls/s", f.work_per_second),
        Axis::Cpu => format!("{:.2} CPU cores busy", f.work_per_second),
        Axis::Seconds => "this load".to_string(),
    };
    let slope = m.slope.map(|s| s.value).unwrap_or(0.0);
    Some(format!(
        "at {} {} and {work}, {} ({}) is reached in {}",
        amount(slope, m.unit),
        axis.per(),
        f.ceiling.what,
        amount(f.ceiling.value, m.unit),
        crate::ceiling::duration(f.seconds)
    ))
}

/// What followed an EXHAUSTED metric: "3495 requests failed afterwards;
/// target.log says \"Too many open files\" 120 times, first: …".
pub fn exhaustion(m: &MetricAnalysis) -> Option<String> {
    let e = m.exhaustion.as_ref()?;
    let mut parts = Vec::new();
    if let Some(n) = e.failed_after.filter(|n| *n > 0) {
        parts.push(format!("{n} of leakscope's requests failed afterwards"));
    }
    if let Some(log) = &e.log {
        parts.push(format!(
            "the target's log names it {} time(s), first: \"{}\"",
            log.count, log.first
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The verdict sentence of one metric.
pub fn metric(m: &MetricAnalysis, axis: Axis) -> String {
    let slope = |prefix: &str| match m.slope {
        Some(s) => format!(
            "{prefix}{} {} (95% CI {} to {}){}",
            amount(s.value, m.unit),
            per(axis),
            amount(s.lo, m.unit),
            amount(s.hi, m.unit),
            m.r2.map(|r| format!(", R² {r:.2}")).unwrap_or_default()
        ),
        None => "no slope".into(),
    };
    if m.rate {
        return slope("allocates ");
    }
    let Some(j) = &m.judgement else {
        return "not judged".into();
    };
    let text = verdict_text(m, j, axis, slope);
    match rules_out(m, axis) {
        Some(limit) => format!("{text}; {limit}"),
        None => text,
    }
}

/// "rules out leaks above 4.6 KiB per request": what a STABLE or BOUNDED
/// verdict excludes ([`crate::trend::detection_limit`]).
pub fn rules_out(m: &MetricAnalysis, axis: Axis) -> Option<String> {
    let j = m.judgement.as_ref()?;
    if !matches!(j.verdict, Verdict::Stable | Verdict::Bounded) {
        return None;
    }
    let limit = j.detection_limit?;
    Some(format!(
        "rules out leaks above {} {}",
        amount(limit, m.unit),
        per(axis)
    ))
}

fn verdict_text(
    m: &MetricAnalysis,
    j: &crate::Judgement,
    axis: Axis,
    slope: impl Fn(&str) -> String,
) -> String {
    match j.verdict {
        Verdict::Leak => slope("leaks "),
        Verdict::Exhausted => format!("exhausted: {}", j.reason),
        Verdict::Bounded => {
            let at = j.plateau.map(|p| amount(p, m.unit)).unwrap_or_default();
            let held = m
                .per_in_flight
                .map(|h| format!(" (≈ {} per request in flight)", amount(h, m.unit)))
                .unwrap_or_default();
            let text = match (j.plateau_from, axis) {
                (Some(x), Axis::Requests) => {
                    format!("bounded: plateaus at {at} after {x:.0} requests")
                }
                (Some(x), Axis::Seconds) => format!("bounded: plateaus at {at} after {x:.0} s"),
                (Some(x), Axis::Cpu) => {
                    format!("bounded: plateaus at {at} after {x:.1} CPU-seconds")
                }
                (Some(x), Axis::Syscalls) => {
                    format!("bounded: plateaus at {at} after {x:.0} read/write syscalls")
                }
                (None, _) => format!("bounded: plateaus at {at}"),
            };
            text + &held
        }
        Verdict::Stable if j.idle == crate::IdleEvidence::Returned => j.reason.clone(),
        Verdict::Stable => match m.slope {
            Some(s) => format!(
                "stable ({} {}, 95% CI {} to {})",
                amount(s.value, m.unit),
                per(axis),
                amount(s.lo, m.unit),
                amount(s.hi, m.unit)
            ),
            None => "stable".into(),
        },
        Verdict::Inconclusive => format!("inconclusive: {}", j.reason),
    }
}

/// "fd-leak / leaky: 13,470 requests in the analysis window, 30 samples".
pub fn heading(a: &Analysis) -> String {
    let load = match (a.window_requests, a.window_x) {
        (Some(r), _) => format!("{r:.0} requests in the analysis window"),
        (None, Some((x0, x1))) if a.axis == Axis::Cpu => format!(
            "judged per CPU-second: {:.2} CPU-seconds of work in the analysis window",
            x1 - x0
        ),
        (None, Some((x0, x1))) if a.axis == Axis::Syscalls => format!(
            "judged per read/write syscall: {:.0} of them in the analysis window",
            x1 - x0
        ),
        _ => "judged over time".into(),
    };
    format!(
        "{} / {}: {load}, {} samples",
        a.scenario(),
        a.variant(),
        a.samples
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_amounts_are_whole_bytes_below_a_kib_and_binary_units_above() {
        const MIB: f64 = 1024.0 * 1024.0;
        let cases = [
            (0.0, "0 B"),
            (0.4, "0 B"),
            (512.0, "512 B"),
            (-300.0, "-300 B"),
            (1023.0, "1023 B"),
            (1024.0, "1.0 KiB"),
            (1250.0, "1.2 KiB"),
            (65_536.0, "64.0 KiB"),
            (-1536.0, "-1.5 KiB"),
            (4.0 * MIB, "4.0 MiB"),
            (12.3 * MIB, "12.3 MiB"),
            (1536.0 * MIB, "1.5 GiB"),
            (1024.0 * 1024.0 * MIB, "1.0 TiB"),
        ];
        for (v, text) in cases {
            assert_eq!(amount(v, Unit::Bytes), text, "{v}");
        }
    }
}
