//! The pages: one per scenario (its variants on the same axes) and an index.
//! Everything is inline (CSS, SVG); links point only at the run
//! directories' own files, relative to the report.

use std::collections::BTreeMap;
use std::path::Path;

use leakscope_analysis::attribution::Growth;
use leakscope_analysis::{describe, Analysis, Axis, MetricAnalysis, Unit, METRICS};
use minijinja::value::{Serde, Value};
use minijinja::{context, Environment};
use serde::Serialize;

use crate::charts::{self, Line};

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

#[derive(Serialize)]
struct Table {
    title: String,
    note: Option<String>,
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    frames: bool,
}

#[derive(Serialize)]
struct RunView {
    variant: String,
    badge: String,
    heading: String,
    notes: Vec<String>,
    meta: Vec<(String, String)>,
    sources: Vec<(String, u64, u64, String, String)>,
    links: Vec<(String, String)>,
    tables: Vec<Table>,
}

fn color(variant: &str, i: usize) -> plotters::style::RGBColor {
    match variant {
        "leaky" => charts::LEAKY,
        "fixed" => charts::FIXED,
        _ => charts::OTHER[i % charts::OTHER.len()],
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn growth_table(title: &str, rows: &[Growth], per: Option<f64>, unit: Unit) -> Table {
    Table {
        title: title.into(),
        note: None,
        head: vec!["before", "after", "growth", "per request", "what"],
        rows: rows
            .iter()
            .map(|g| {
                vec![
                    describe::amount(g.before, unit),
                    describe::amount(g.after, unit),
                    format!("+{}", describe::amount(g.growth, unit)),
                    per.filter(|r| *r > 0.0)
                        .map(|r| describe::amount(g.growth / r, unit))
                        .unwrap_or_else(|| "-".into()),
                    g.key.clone(),
                ]
            })
            .collect(),
        frames: false,
    }
}

/// Where the tasks of each growing spawn site were parked at the end.
fn parked_table(sites: &[leakscope_analysis::attribution::ParkedSite]) -> Table {
    let mut rows = Vec::new();
    for site in sites {
        for g in &site.groups {
            let stack: String = g
                .stack
                .iter()
                .take(10)
                .map(|f| {
                    let class = if f.is_own_code() {
                        " class=\"own\""
                    } else {
                        ""
                    };
                    format!("<div{class}>{}</div>", escape(&f.short()))
                })
                .collect();
            rows.push(vec![
                // The template escapes every cell but the stack's.
                format!("{} of {}", g.count, site.tasks),
                site.spawned_at.clone(),
                g.parked_at(),
                stack,
            ]);
        }
    }
    Table {
        title: "tasks: where the growing sites' tasks were parked (task dump at the end)".into(),
        note: Some(
            "from the agent's task dump; the stack runs from the awaited leaf future out to the \
             task's own future, highlighted frame = the service's code"
                .into(),
        ),
        head: vec!["tasks", "spawned at", "parked at", "stack (leaf first)"],
        rows,
        frames: true,
    }
}

fn run_view(a: &Analysis, out: &Path) -> RunView {
    let m = &a.meta;
    let rel = |p: &Path| {
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let base = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
        pathdiff::diff_paths(&abs, &base)
            .unwrap_or(abs)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let ms = |t: u64| format!("{t} ms since the epoch");
    let mut meta = vec![
        ("command".to_string(), m.command.join(" ")),
        ("pid".into(), m.pid.to_string()),
        (
            "labels".into(),
            m.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "host".into(),
            format!(
                "{} (Linux {}, {} CPUs)",
                m.host.hostname, m.host.kernel, m.host.cpus
            ),
        ),
        ("interval".into(), format!("{} ms", m.interval_ms)),
        (
            "git revision".into(),
            m.git_revision.clone().unwrap_or_else(|| "unknown".into()),
        ),
        ("started".into(), ms(m.started_unix_ms)),
        (
            "duration".into(),
            m.ended_unix_ms
                .map(|e| {
                    format!(
                        "{:.1} s",
                        e.saturating_sub(m.started_unix_ms) as f64 / 1000.0
                    )
                })
                .unwrap_or_else(|| "unfinished".into()),
        ),
        ("target ended".into(), format!("{:?}", m.target_end)),
        ("leakscope".into(), m.leakscope_version.clone()),
    ];
    if let Some(r) = a.window_requests {
        meta.push(("requests in the window".into(), format!("{r:.0}")));
    }
    let sources = m
        .sources
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s.samples,
                s.failed,
                format!("{:.2}", s.mean_cost_ms),
                s.error.clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut links = vec![
        ("meta.json".to_string(), rel(&a.dir.join("meta.json"))),
        (
            "samples.jsonl".to_string(),
            rel(&a.dir.join("samples.jsonl")),
        ),
    ];
    if let Some((first, last)) = &a.attribution.heap_profiles {
        links.push((first.clone(), rel(&a.dir.join(first))));
        links.push((last.clone(), rel(&a.dir.join(last))));
    }
    if a.dir.join("target.log").is_file() {
        links.push(("target.log".into(), rel(&a.dir.join("target.log"))));
    }
    let per = a.window_requests;
    let at = &a.attribution;
    let mut tables = Vec::new();
    let mut heap = Table {
        title: "heap: allocation sites that grew (first vs last heap profile)".into(),
        note: at
            .heap_profiles
            .as_ref()
            .map(|(f, l)| {
                format!("{f} → {l}; sampled, highlighted frame = first in the target's own code")
            })
            .or_else(|| Some("no pair of heap profiles".into())),
        head: vec!["before", "after", "growth", "stack (leaf first)"],
        rows: Vec::new(),
        frames: true,
    };
    for s in &at.heap_sites {
        let frames: String = s
            .frames
            .iter()
            .take(14)
            .enumerate()
            .map(|(i, f)| {
                let text = escape(&format!(
                    "{} {}:{}",
                    f.function,
                    f.file
                        .rsplit('/')
                        .take(2)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("/"),
                    f.line
                ));
                if Some(i) == s.own {
                    format!("<div class=\"own\">{text}</div>")
                } else {
                    format!("<div>{text}</div>")
                }
            })
            .collect();
        heap.rows.push(vec![
            describe::amount(s.before, Unit::Bytes),
            describe::amount(s.after, Unit::Bytes),
            format!("+{}", describe::amount(s.growth, Unit::Bytes)),
            frames,
        ]);
    }
    tables.push(heap);
    if !at.dhat_sites.is_empty() {
        tables.push(Table {
            title: "dhat: sites by bytes live at exit".into(),
            note: None,
            head: vec!["bytes", "blocks", "stack"],
            rows: at
                .dhat_sites
                .iter()
                .map(|d| {
                    vec![
                        describe::amount(d.bytes_at_end as f64, Unit::Bytes),
                        d.blocks_at_end.to_string(),
                        d.frames
                            .iter()
                            .take(8)
                            .map(|f| format!("<div>{}</div>", escape(f)))
                            .collect(),
                    ]
                })
                .collect(),
            frames: true,
        });
    }
    tables.push(growth_table(
        "tasks: spawn locations whose live count grew",
        &at.task_locations,
        per,
        Unit::Count,
    ));
    tables.push(growth_table(
        "tasks: names whose live count grew",
        &at.task_names,
        per,
        Unit::Count,
    ));
    tables.push(parked_table(&at.parked));
    tables.push(growth_table(
        "fds: kinds that grew",
        &at.fd_kinds,
        per,
        Unit::Count,
    ));
    tables.push(growth_table(
        "fds: paths that grew",
        &at.fd_paths,
        per,
        Unit::Count,
    ));
    tables.push(growth_table(
        "sockets: TCP states that grew",
        &at.tcp_states,
        per,
        Unit::Count,
    ));
    tables.push(growth_table(
        "sockets: endpoints that grew",
        &at.sockets,
        per,
        Unit::Count,
    ));
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
        meta,
        sources,
        links,
        tables,
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
