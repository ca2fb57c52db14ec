//! The attribution tables of a run's section: what grew, by site, path,
//! state or endpoint, each row with its stack where it has one.

use leakscope_analysis::attribution::{DhatSite, Growth, HeapSite, ParkedSite};
use leakscope_analysis::pprof::Frame;
use leakscope_analysis::{describe, Analysis, Unit};
use leakscope_rundir::StackFrame;
use serde::Serialize;

/// An attribution table. Every field is text the template escapes: no
/// markup is built here, so a symbol name such as
/// `<alloc::vec::Vec<T> as Clone>::clone` reads as written.
#[derive(Serialize)]
pub(super) struct Table {
    title: String,
    note: Option<String>,
    head: Vec<&'static str>,
    rows: Vec<TableRow>,
}

#[derive(Serialize)]
struct TableRow {
    cells: Vec<String>,
    /// The stack of the last column, leaf first, when the table has one.
    stack: Option<Vec<FrameView>>,
}

/// One frame of a stack, drawn by the template.
#[derive(Serialize)]
struct FrameView {
    name: String,
    file: Option<String>,
    line: Option<i64>,
    /// Highlighted: the target's own code.
    own: bool,
    /// Whether the place is written in parentheses after the name, as
    /// parked stacks write it (`Interval::tick (interval.rs:420)`); heap
    /// frames write it after a space.
    parens: bool,
}

impl FrameView {
    /// A heap profile's frame: the function as symbolized and the last two
    /// segments of its file, enough to tell crates apart.
    fn heap(f: &Frame, own: bool) -> Self {
        let mut tail: Vec<&str> = f.file.rsplit('/').take(2).collect();
        tail.reverse();
        FrameView {
            name: f.function.clone(),
            file: Some(tail.join("/")),
            line: Some(f.line),
            own,
            parens: false,
        }
    }

    /// A parked task's frame, shortened as the task dump's summary is.
    fn parked(f: &StackFrame) -> Self {
        let place = f.short_location();
        // "file:line" is split so the template writes both; anything else
        // stays whole as the file.
        let split = place.as_deref().and_then(|p| {
            let (file, line) = p.rsplit_once(':')?;
            Some((file.to_string(), line.parse::<i64>().ok()?))
        });
        let (file, line) = match split {
            Some((file, line)) => (Some(file), Some(line)),
            None => (place, None),
        };
        FrameView {
            name: f.short_name(),
            file,
            line,
            own: f.is_own_code(),
            parens: true,
        }
    }

    /// A dhat frame: dhat's own line, which holds address, name and place.
    fn dhat(text: &str) -> Self {
        FrameView {
            name: text.to_string(),
            file: None,
            line: None,
            own: false,
            parens: false,
        }
    }
}

fn growth_table(title: &str, rows: &[Growth], per: Option<f64>, unit: Unit) -> Table {
    Table {
        title: title.into(),
        note: None,
        head: vec!["before", "after", "growth", "per request", "what"],
        rows: rows
            .iter()
            .map(|g| TableRow {
                cells: vec![
                    describe::amount(g.before, unit),
                    describe::amount(g.after, unit),
                    format!("+{}", describe::amount(g.growth, unit)),
                    per.filter(|r| *r > 0.0)
                        .map(|r| describe::amount(g.growth / r, unit))
                        .unwrap_or_else(|| "-".into()),
                    g.key.clone(),
                ],
                stack: None,
            })
            .collect(),
    }
}

/// fd paths that grew, grouped as `check` and its JSON group them: a
/// pattern row where one stands for many paths (a new file per request),
/// marked as such, the path otherwise.
fn fd_paths_table(rows: &[Growth], per: Option<f64>) -> Table {
    let mut t = growth_table(
        "fds: paths and path patterns that grew",
        rows,
        per,
        Unit::Count,
    );
    for (row, g) in t.rows.iter_mut().zip(rows) {
        if g.pattern {
            if let Some(what) = row.cells.last_mut() {
                what.push_str(if leakscope_rundir::fdpath::is_directory(&g.key) {
                    " (any file in it)"
                } else {
                    " (pattern)"
                });
            }
        }
    }
    if rows.iter().any(|g| g.pattern) {
        t.note = Some(
            "a pattern stands for every path it matches, each run of digits a *: files opened once each \
             (one per request) grow only as their pattern; a directory (ending in /) stands for every file in it, \
             for names with no digits to group by"
                .into(),
        );
    }
    t
}

/// Where the tasks of each growing spawn site were parked at the end.
fn parked_table(sites: &[ParkedSite]) -> Table {
    let mut rows = Vec::new();
    for site in sites {
        for g in &site.groups {
            rows.push(TableRow {
                cells: vec![
                    format!("{} of {}", g.count, site.tasks),
                    site.spawned_at.clone(),
                    g.parked_at(),
                ],
                stack: Some(g.stack.iter().take(10).map(FrameView::parked).collect()),
            });
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
    }
}

/// The heap profiles' growing allocation sites, stacks leaf first.
fn heap_table(a: &Analysis) -> Table {
    let row = |s: &HeapSite| TableRow {
        cells: vec![
            describe::amount(s.before, Unit::Bytes),
            describe::amount(s.after, Unit::Bytes),
            format!("+{}", describe::amount(s.growth, Unit::Bytes)),
        ],
        stack: Some(
            s.frames
                .iter()
                .take(14)
                .enumerate()
                .map(|(i, f)| FrameView::heap(f, Some(i) == s.own))
                .collect(),
        ),
    };
    Table {
        title: "heap: allocation sites that grew (first vs last heap profile)".into(),
        note: a
            .attribution
            .heap_profiles
            .as_ref()
            .map(|(f, l)| {
                format!("{f} → {l}; sampled, highlighted frame = first in the target's own code")
            })
            .or_else(|| Some("no pair of heap profiles".into())),
        head: vec!["before", "after", "growth", "stack (leaf first)"],
        rows: a.attribution.heap_sites.iter().map(row).collect(),
    }
}

/// dhat's sites still live at exit, when the run has a dhat file.
fn dhat_table(sites: &[DhatSite]) -> Table {
    let row = |d: &DhatSite| TableRow {
        cells: vec![
            describe::amount(d.bytes_at_end as f64, Unit::Bytes),
            d.blocks_at_end.to_string(),
        ],
        stack: Some(
            d.frames
                .iter()
                .take(8)
                .map(|f| FrameView::dhat(f))
                .collect(),
        ),
    };
    Table {
        title: "dhat: sites by bytes live at exit".into(),
        note: None,
        head: vec!["bytes", "blocks", "stack"],
        rows: sites.iter().map(row).collect(),
    }
}

/// Every attribution table of a run, in the page's order.
pub(super) fn tables(a: &Analysis) -> Vec<Table> {
    let (at, per) = (&a.attribution, a.window_requests);
    let counts = |title: &str, rows: &[Growth]| growth_table(title, rows, per, Unit::Count);
    let mut tables = vec![heap_table(a)];
    if !at.dhat_sites.is_empty() {
        tables.push(dhat_table(&at.dhat_sites));
    }
    tables.extend([
        counts(
            "tasks: spawn locations whose live count grew",
            &at.task_locations,
        ),
        counts("tasks: names whose live count grew", &at.task_names),
        parked_table(&at.parked),
        counts("fds: kinds that grew", &at.fd_kinds),
        fd_paths_table(&at.fd_paths, per),
        counts("sockets: TCP states that grew", &at.tcp_states),
        counts("sockets: endpoints that grew", &at.sockets),
    ]);
    tables
}
