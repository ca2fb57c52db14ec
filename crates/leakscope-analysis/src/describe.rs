//! The one-line sentences the CLI and the report share, so both say the
//! same thing about the same run.

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
            let (d, u) = if a >= 1024.0 * 1024.0 * 1024.0 {
                (1024.0 * 1024.0 * 1024.0, "GiB")
            } else if a >= 1024.0 * 1024.0 {
                (1024.0 * 1024.0, "MiB")
            } else if a >= 1024.0 {
                (1024.0, "KiB")
            } else {
                return format!("{v:.0} B");
            };
            format!("{:.1} {u}", v / d)
        }
    }
}

pub fn per(axis: Axis) -> &'static str {
    match axis {
        Axis::Requests => "per request",
        Axis::Seconds => "per second",
    }
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
    match j.verdict {
        Verdict::Leak => slope("leaks "),
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
                (None, _) => format!("bounded: plateaus at {at}"),
            };
            text + &held
        }
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

/// "fd-leak / leaky: 13,470 requests, 30 samples".
pub fn heading(a: &Analysis) -> String {
    let load = match a.window_requests {
        Some(r) => format!("{r:.0} requests in the analysis window"),
        None => "judged over time".into(),
    };
    format!(
        "{} / {}: {load}, {} samples",
        a.scenario(),
        a.variant(),
        a.samples
    )
}
