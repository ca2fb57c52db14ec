//! The pages: one per scenario (its variants on the same axes) and an index.
//! Everything is inline (CSS, SVG); links point only at the run
//! directories' own files, relative to the report.

use std::collections::BTreeMap;
use std::path::Path;

use leakscope_analysis::{describe, Analysis, Axis, MetricAnalysis, METRICS};
use leakscope_rundir::{labels, Meta, RunFile, UnixMs};
use minijinja::value::{Serde, Value};
use minijinja::{context, Environment};
use serde::Serialize;

use crate::charts::{self, Line};

mod tables;
use tables::{tables, Table};

const CSS: &str = include_str!("../templates/style.css");

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_template("index.html", include_str!("../templates/index.html"))
        .expect("the index template parses");
    env.add_template("scenario.html", include_str!("../templates/scenario.html"))
        .expect("the scenario template parses");
    env
}

#[derive(Serialize)]
struct Cell {
    verdict: Option<String>,
    text: String,
    /// What an operator must see first: when an EXHAUSTED metric hit its
    /// ceiling and what failed, or when a LEAK will.
    alert: Option<String>,
}

#[derive(Serialize)]
struct IndexRow {
    variant: String,
    /// "per request", "per read/write syscall": what the slopes are per.
    per: &'static str,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct IndexScenario {
    name: String,
    page: String,
    rows: Vec<IndexRow>,
}

#[derive(Serialize)]
struct Column {
    title: &'static str,
}

/// The exhaustion (when and what failed) of an EXHAUSTED metric, else the
/// forecast of a LEAK: the line an operator acts on.
fn alert(m: &MetricAnalysis, axis: Axis) -> Option<String> {
    match m.exhaustion {
        // "reached its ceiling (RLIMIT_NOFILE of 20000) at 7.8 s …", then
        // what failed afterwards.
        Some(_) => Some(
            std::iter::once(describe::metric(m, axis))
                .chain(describe::exhaustion(m))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        None => describe::forecast(m, axis),
    }
}

/// File names of the scenarios' pages, by scenario: each name made safe
/// (ASCII letters, digits, `-` and `_`; anything else `_`), and unique. A
/// name that would clash with another page (`a/b` and `a?b` both give
/// `a_b`; case is ignored, as some file systems do) or with `index.html`
/// gets `-2`, `-3`, …: no page overwrites another. What is left needs no
/// percent-encoding in a link.
pub fn page_names<'a>(scenarios: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, String> {
    let mut taken: std::collections::BTreeSet<String> = ["index".to_string()].into();
    let mut out = BTreeMap::new();
    for name in scenarios {
        let safe: String = name
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        let base = if safe.is_empty() {
            "scenario".into()
        } else {
            safe
        };
        let unique = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|c| !taken.contains(&c.to_lowercase()))
            .expect("an unbounded range has a free name");
        taken.insert(unique.to_lowercase());
        out.insert(name.clone(), format!("{unique}.html"));
    }
    out
}

fn short(m: &MetricAnalysis, axis: Axis) -> String {
    match (m.verdict(), m.slope) {
        (Some(leakscope_analysis::Verdict::Bounded), _) => describe::metric(m, axis),
        (_, Some(s)) => format!(
            "{} {}",
            describe::amount(s.value, m.unit),
            describe::per(axis)
        ),
        _ => describe::metric(m, axis),
    }
}

pub fn index(
    env: &Environment,
    groups: &BTreeMap<String, Vec<&Analysis>>,
    pages: &BTreeMap<String, String>,
    runs: usize,
) -> Result<String, minijinja::Error> {
    let columns: Vec<Column> = METRICS.iter().map(|d| Column { title: d.short }).collect();
    let scenarios: Vec<IndexScenario> = groups
        .iter()
        .map(|(name, list)| IndexScenario {
            name: name.clone(),
            page: pages[name].clone(),
            rows: list
                .iter()
                .map(|a| IndexRow {
                    variant: a.variant(),
                    per: a.axis.per(),
                    cells: METRICS
                        .iter()
                        .map(|d| match a.metric(d.id.as_str()) {
                            Some(m) => Cell {
                                verdict: m.verdict().map(|v| v.to_string()),
                                text: short(m, a.axis),
                                alert: alert(m, a.axis),
                            },
                            None => Cell {
                                verdict: None,
                                text: "not recorded".into(),
                                alert: None,
                            },
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    env.get_template("index.html")?.render(context! {
        css => CSS,
        columns => Value::from(Serde(&columns)),
        scenarios => Value::from(Serde(&scenarios)),
        runs,
        version => env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize)]
struct Row {
    variant: String,
    verdict: Option<String>,
    text: String,
    reason: String,
    /// "judged per request over requests served".
    axis: String,
    alert: Option<String>,
}

#[derive(Serialize)]
struct MetricView {
    title: String,
    rows: Vec<Row>,
    charts: Vec<String>,
}

/// One line of a run's facts: "started", "2026-11-23T22:04:05Z".
#[derive(Serialize)]
struct Fact {
    name: &'static str,
    value: String,
}

/// What one source cost and whether it failed.
#[derive(Serialize)]
struct SourceRow {
    name: String,
    samples: u64,
    failed: u64,
    ms_per_sample: String,
    first_error: String,
}

/// A raw file of the run directory, relative to the report.
#[derive(Serialize)]
struct Link {
    text: String,
    href: String,
}

#[derive(Serialize)]
struct RunView {
    variant: String,
    badge: String,
    heading: String,
    notes: Vec<String>,
    facts: Vec<Fact>,
    sources: Vec<SourceRow>,
    links: Vec<Link>,
    tables: Vec<Table>,
}

fn color(variant: &str, i: usize) -> plotters::style::RGBColor {
    match variant {
        labels::LEAKY => charts::LEAKY,
        labels::FIXED => charts::FIXED,
        _ => charts::OTHER[i % charts::OTHER.len()],
    }
}

/// What was recorded and how, in the run directory's human forms: times
/// in RFC 3339 and the target's end in words.
fn facts(a: &Analysis) -> Vec<Fact> {
    let m: &Meta = &a.meta;
    let fact = |name, value| Fact { name, value };
    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let host = &m.host;
    let mut facts = vec![
        fact("command", m.command.join(" ")),
        fact("pid", m.pid.to_string()),
        fact("labels", labels.join(", ")),
        fact(
            "host",
            format!(
                "{} (Linux {}, {} CPUs)",
                host.hostname, host.kernel, host.cpus
            ),
        ),
        fact("interval", format!("{} ms", m.interval_ms)),
        fact(
            "git revision",
            m.git_revision.clone().unwrap_or_else(|| "unknown".into()),
        ),
        fact("started", UnixMs(m.started_unix_ms).to_string()),
        fact(
            "duration",
            m.recorded_secs()
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "unfinished".into()),
        ),
        fact("target ended", m.target_end_text()),
        fact("leakscope", m.leakscope_version.clone()),
    ];
    if let Some(r) = a.window_requests {
        facts.push(fact("requests in the window", format!("{r:.0}")));
    }
    facts
}

fn sources(m: &Meta) -> Vec<SourceRow> {
    m.sources
        .iter()
        .map(|(name, s)| SourceRow {
            name: name.to_string(),
            samples: s.samples,
            failed: s.failed,
            ms_per_sample: format!("{:.2}", s.mean_cost_ms),
            first_error: s.error.clone().unwrap_or_default(),
        })
        .collect()
}

/// What a relative link's path keeps as it is: the unreserved characters
/// and `/`. Everything else, `?`, `#`, `%`, spaces and bytes that are not
/// UTF-8 included, is percent-encoded, so a run directory of any name
/// links to its own files.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// The run's raw files, relative to the report in `out`.
fn links(a: &Analysis, out: &Path) -> Vec<Link> {
    let base = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let link = |text: &str, p: &Path| {
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let href = pathdiff::diff_paths(&abs, &base).unwrap_or(abs);
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(href.as_os_str());
        Link {
            text: text.to_string(),
            href: percent_encoding::percent_encode(bytes, PATH).to_string(),
        }
    };
    let file = |f: RunFile| link(f.name(), &f.path(&a.dir));
    let mut links = vec![file(RunFile::Meta), file(RunFile::Samples)];
    if let Some((first, last)) = &a.attribution.heap_profiles {
        links.push(link(first, &a.dir.join(first)));
        links.push(link(last, &a.dir.join(last)));
    }
    if RunFile::TargetLog.path(&a.dir).is_file() {
        links.push(file(RunFile::TargetLog));
    }
    links
}

fn run_view(a: &Analysis, out: &Path) -> RunView {
    let worst = a
        .metrics
        .iter()
        .filter_map(|m| m.verdict())
        .max_by_key(|v| match v {
            leakscope_analysis::Verdict::Exhausted => 4,
            leakscope_analysis::Verdict::Leak => 3,
            leakscope_analysis::Verdict::Inconclusive => 2,
            leakscope_analysis::Verdict::Bounded => 1,
            leakscope_analysis::Verdict::Stable => 0,
        });
    RunView {
        variant: a.variant(),
        badge: worst
            .map(|v| v.to_string())
            .unwrap_or_else(|| "INCONCLUSIVE".into()),
        heading: describe::heading(a),
        notes: a.notes.clone(),
        facts: facts(a),
        sources: sources(&a.meta),
        links: links(a, out),
        tables: tables(a),
    }
}

pub fn scenario(
    env: &Environment,
    name: &str,
    runs: &[&Analysis],
    out: &Path,
) -> Result<String, minijinja::Error> {
    // Metrics in the order of the first run that has them.
    let mut ids: Vec<String> = Vec::new();
    for a in runs {
        for m in &a.metrics {
            if !ids.contains(&m.id) {
                ids.push(m.id.clone());
            }
        }
    }
    let metrics: Vec<MetricView> = ids
        .iter()
        .map(|id| {
            let present: Vec<(&Analysis, &MetricAnalysis)> = runs
                .iter()
                .filter_map(|a| a.metric(id).map(|m| (*a, m)))
                .collect();
            let (title, unit) = (present[0].1.title.clone(), present[0].1.unit);
            let rows = present
                .iter()
                .map(|(a, m)| Row {
                    variant: a.variant(),
                    verdict: m.verdict().map(|v| v.to_string()),
                    text: describe::metric(m, a.axis),
                    reason: m
                        .judgement
                        .as_ref()
                        .map(|j| j.reason.clone())
                        .unwrap_or_default(),
                    axis: format!("judged {}, over {}", a.axis.per(), a.axis.name()),
                    alert: alert(m, a.axis),
                })
                .collect();
            let on = |axis: Axis| -> Vec<Vec<(f64, f64)>> {
                present
                    .iter()
                    .map(|(_, m)| {
                        m.points
                            .iter()
                            .filter_map(|p| Some((p.x(axis)?, p.y)))
                            .collect()
                    })
                    .collect()
            };
            let mut charts = Vec::new();
            // Over each axis some run was judged on, with its fitted line;
            // always over time, for the whole story.
            for (axis, what) in [
                (Axis::Requests, "requests"),
                (Axis::Syscalls, "read/write syscalls"),
                (Axis::Cpu, "CPU time"),
            ] {
                let data = on(axis);
                let judged = present.iter().any(|(a, _)| a.axis == axis);
                if judged && data.iter().any(|p| p.len() > 1) {
                    charts.extend(charts::chart(
                        &format!("{title} over {what}"),
                        unit,
                        axis,
                        &lines(&present, &data, axis),
                    ));
                }
            }
            let by_time = on(Axis::Seconds);
            charts.extend(charts::chart(
                &format!("{title} over time"),
                unit,
                Axis::Seconds,
                &lines(&present, &by_time, Axis::Seconds),
            ));
            MetricView {
                title,
                rows,
                charts,
            }
        })
        .collect();
    let runs: Vec<RunView> = runs.iter().map(|a| run_view(a, out)).collect();
    env.get_template("scenario.html")?.render(context! {
        css => CSS,
        name,
        metrics => Value::from(Serde(&metrics)),
        runs => Value::from(Serde(&runs)),
    })
}

fn lines<'a>(
    present: &[(&Analysis, &MetricAnalysis)],
    data: &'a [Vec<(f64, f64)>],
    axis: Axis,
) -> Vec<Line<'a>> {
    present
        .iter()
        .zip(data)
        .enumerate()
        .map(|(i, ((a, m), pts))| Line {
            label: a.variant(),
            color: color(&a.variant(), i),
            points: pts,
            fit: fit_segment(a, m, axis),
        })
        .collect()
}

/// The fitted line across the analysis window, on the chart of the axis
/// the run was judged on.
fn fit_segment(a: &Analysis, m: &MetricAnalysis, axis: Axis) -> Option<((f64, f64), (f64, f64))> {
    if a.axis != axis {
        return None;
    }
    let fit = m.judgement.as_ref().and_then(|j| j.fit)?;
    let (x0, x1) = a.window_x?;
    Some((
        (x0, fit.intercept + fit.slope * x0),
        (x1, fit.intercept + fit.slope * x1),
    ))
}

#[cfg(test)]
mod page_name_tests {
    use super::*;

    #[test]
    fn page_names_are_safe_unique_and_never_the_index() {
        let names: Vec<String> = ["index", "a/b", "a_b", "a?b", "A_B", "", "ünï", "ok-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pages = page_names(&names);
        let files: std::collections::BTreeSet<String> =
            pages.values().map(|f| f.to_lowercase()).collect();
        assert_eq!(files.len(), names.len(), "{pages:?}");
        assert!(!files.contains("index.html"), "{pages:?}");
        assert_eq!(pages["a/b"], "a_b.html");
        assert_eq!(pages["a_b"], "a_b-2.html");
        assert_eq!(pages["ok-1"], "ok-1.html");
        for f in pages.values() {
            assert!(
                f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{f}"
            );
        }
    }
}
