//! What is behind a growing metric: allocation sites from the first and
//! last heap profiles, spawn locations and task names, fd kinds, paths,
//! TCP states and endpoints, and dhat's sites live at exit when a dhat file
//! sits in the run directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use leakscope_rundir::{fdpath, RunFile, Sample};
use serde::Serialize;

use crate::pprof::{self, Frame};

/// How many rows each table keeps.
pub const TOP: usize = 10;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Attribution {
    /// The profiles diffed, relative to the run directory.
    pub heap_profiles: Option<(String, String)>,
    pub heap_sites: Vec<HeapSite>,
    pub task_locations: Vec<Growth>,
    pub task_names: Vec<Growth>,
    /// For each spawn site whose live tasks grew, where its tasks were
    /// parked at the end (the agent's task dump).
    pub parked: Vec<ParkedSite>,
    pub fd_kinds: Vec<Growth>,
    /// Paths, or path patterns where one stands for many paths (see
    /// [`grouped_paths`]).
    pub fd_paths: Vec<Growth>,
    pub tcp_states: Vec<Growth>,
    pub sockets: Vec<Growth>,
    pub dhat_sites: Vec<DhatSite>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeapSite {
    /// Leaf first.
    pub frames: Vec<Frame>,
    /// The first frame in the target's own code, if any.
    pub own: Option<usize>,
    pub before: f64,
    pub after: f64,
    pub growth: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    pub key: String,
    pub before: f64,
    pub after: f64,
    pub growth: f64,
    /// fd paths only: `key` is a pattern (every run of digits `*`) that
    /// stands for more than one path, such as one log file per request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pattern: bool,
}

/// A growing spawn site and its top parked stacks.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedSite {
    pub spawned_at: String,
    /// Live tasks from the site in the dump.
    pub tasks: u64,
    /// Largest groups first, at most [`PARKED_STACKS`].
    pub groups: Vec<leakscope_rundir::ParkedGroup>,
}

/// Stacks kept per site: past three, a reader has what they need.
pub const PARKED_STACKS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct DhatSite {
    pub bytes_at_end: u64,
    pub blocks_at_end: u64,
    pub frames: Vec<String>,
}

/// Median of a keyed count over some samples; keys absent in a sample
/// count 0 there (a path outside the top 10 is not "gone", but it is small).
fn medians(
    samples: &[&Sample],
    get: &dyn Fn(&Sample) -> Vec<(String, f64)>,
) -> BTreeMap<String, f64> {
    let rows: Vec<BTreeMap<String, f64>> = samples
        .iter()
        .map(|s| get(s).into_iter().collect())
        .collect();
    let keys: BTreeSet<&String> = rows.iter().flat_map(|r| r.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let mut v: Vec<f64> = rows
                .iter()
                .map(|r| r.get(k).copied().unwrap_or(0.0))
                .collect();
            // One value per row, and a key exists only if some row has it.
            let med = crate::median(&mut v).unwrap_or(0.0);
            (k.clone(), med)
        })
        .collect()
}

/// Keys that grew between the head and the tail of the window, most first.
pub fn growth(
    head: &[&Sample],
    tail: &[&Sample],
    get: &dyn Fn(&Sample) -> Vec<(String, f64)>,
) -> Vec<Growth> {
    let mut rows = all_growth(head, tail, get);
    rows.truncate(TOP);
    rows
}

/// [`growth`] without the cut to [`TOP`].
fn all_growth(
    head: &[&Sample],
    tail: &[&Sample],
    get: &dyn Fn(&Sample) -> Vec<(String, f64)>,
) -> Vec<Growth> {
    let (b, a) = (medians(head, get), medians(tail, get));
    let mut rows: Vec<Growth> = a
        .iter()
        .map(|(k, after)| {
            let before = b.get(k).copied().unwrap_or(0.0);
            Growth {
                key: k.clone(),
                before,
                after: *after,
                growth: after - before,
                pattern: false,
            }
        })
        .filter(|g| g.growth > 0.0)
        .collect();
    sort(&mut rows);
    rows
}

/// Most growth first; ties by key, so the order is the same every time.
fn sort(rows: &mut [Growth]) {
    rows.sort_by(|x, y| {
        y.growth
            .total_cmp(&x.growth)
            .then_with(|| x.key.cmp(&y.key))
    });
}

/// fd paths that grew, grouped: a pattern row (digits made `*`) where it
/// stands for more than one path, the plain path where it is one path (the
/// pattern's figures equal that path's), and paths whose pattern the
/// samples did not rank. A leak of one fd per request to a new file each
/// time grows no path (each is open once) but grows its pattern.
/// `patterns` empty (runs written before the sampler counted them): the
/// paths alone. Directory keys (`/tmp/`) among `patterns` add a row when
/// the directory grew more than any row in it: files with random names
/// (`/tmp/.tmpAbCdEf`) that no digit pattern groups.
pub fn grouped_paths(files: Vec<Growth>, patterns: Vec<Growth>) -> Vec<Growth> {
    let (dirs, patterns): (Vec<Growth>, Vec<Growth>) = patterns
        .into_iter()
        .partition(|p| fdpath::is_directory(&p.key));
    let mut rows: Vec<Growth> = Vec::new();
    for p in patterns.iter().filter(|p| p.growth > 0.0) {
        let mut members = files
            .iter()
            .filter(|f| fdpath::pattern(&f.key) == p.key.as_str());
        let one = match (members.next(), members.next()) {
            (Some(f), None) => (f.before == p.before && f.after == p.after).then_some(f),
            _ => None,
        };
        rows.push(match one {
            Some(f) => f.clone(),
            None => Growth {
                pattern: true,
                ..p.clone()
            },
        });
    }
    let ranked: BTreeSet<&str> = patterns.iter().map(|p| p.key.as_str()).collect();
    rows.extend(
        files
            .iter()
            .filter(|f| f.growth > 0.0 && !ranked.contains(fdpath::pattern(&f.key).as_ref()))
            .cloned(),
    );
    let dir_rows: Vec<Growth> = dirs
        .into_iter()
        .filter(|d| {
            let inside = rows
                .iter()
                .filter(|r| fdpath::in_directory(&r.key, &d.key))
                .map(|r| r.growth)
                .fold(0.0, f64::max);
            d.growth > inside
        })
        .map(|d| Growth { pattern: true, ..d })
        .collect();
    rows.extend(dir_rows);
    sort(&mut rows);
    rows.truncate(TOP);
    rows
}

/// Diffs two heap profiles by stack; sites that grew, most first.
pub fn heap_sites(
    dir: &Path,
    first: &str,
    last: &str,
) -> Result<Vec<HeapSite>, pprof::ProfileError> {
    let before = pprof::read(&dir.join(first))?;
    let after = pprof::read(&dir.join(last))?;
    let mut sites: Vec<HeapSite> = after
        .iter()
        .map(|(stack, bytes)| {
            let b = before.get(stack).copied().unwrap_or(0.0);
            HeapSite {
                own: pprof::own_frame(stack),
                frames: stack.clone(),
                before: b,
                after: *bytes,
                growth: bytes - b,
            }
        })
        .filter(|s| s.growth > 0.0)
        .collect();
    sites.sort_by(|a, b| b.growth.total_cmp(&a.growth));
    sites.truncate(TOP);
    Ok(sites)
}

#[derive(serde::Deserialize)]
struct DhatFile {
    pps: Vec<DhatPp>,
    ftbl: Vec<String>,
}

#[derive(serde::Deserialize)]
struct DhatPp {
    #[serde(default)]
    eb: u64,
    #[serde(default)]
    ebk: u64,
    fs: Vec<usize>,
}

/// dhat's program points by bytes still live at exit.
pub fn dhat_sites(path: &Path) -> Result<Vec<DhatSite>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: DhatFile = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a dhat file: {e}", path.display()))?;
    let mut sites: Vec<DhatSite> = file
        .pps
        .iter()
        .filter(|p| p.eb > 0)
        .map(|p| DhatSite {
            bytes_at_end: p.eb,
            blocks_at_end: p.ebk,
            frames: p
                .fs
                .iter()
                .filter_map(|i| file.ftbl.get(*i).cloned())
                .collect(),
        })
        .collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.bytes_at_end));
    sites.truncate(TOP);
    Ok(sites)
}

fn map(m: &std::collections::BTreeMap<String, u64>) -> Vec<(String, f64)> {
    m.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

fn list(m: &[(String, u64)]) -> Vec<(String, f64)> {
    m.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

/// Everything attributable in the run: what grew across the analysis
/// window, the heap-profile diff and dhat's sites.
pub fn attribute(
    dir: &Path,
    samples: &[Sample],
    layout: &crate::series::Layout,
    notes: &mut Vec<String>,
) -> Attribution {
    let mut a = Attribution::default();
    let window: Vec<&Sample> = samples[layout.window.clone()].iter().collect();
    if !window.is_empty() {
        let k = window.len().div_ceil(10);
        let (head, tail) = (&window[..k], &window[window.len() - k..]);
        let g = |get: &dyn Fn(&Sample) -> Vec<(String, f64)>| growth(head, tail, get);
        a.task_locations = g(&|s| {
            s.tasks
                .as_ref()
                .map(|c| map(&c.by_location))
                .unwrap_or_default()
        });
        a.task_names = g(&|s| {
            s.tasks
                .as_ref()
                .map(|c| map(&c.by_name))
                .unwrap_or_default()
        });
        a.fd_kinds = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| map(&p.fds_by_kind))
                .unwrap_or_default()
        });
        let all = |get: &dyn Fn(&Sample) -> Vec<(String, f64)>| all_growth(head, tail, get);
        a.fd_paths = grouped_paths(
            all(&|s| {
                s.proc
                    .as_ref()
                    .map(|p| list(&p.top_files))
                    .unwrap_or_default()
            }),
            all(&|s| {
                s.proc
                    .as_ref()
                    .map(|p| list(&p.top_file_patterns))
                    .unwrap_or_default()
            }),
        );
        a.tcp_states = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| map(&p.tcp_states))
                .unwrap_or_default()
        });
        a.sockets = g(&|s| {
            s.proc
                .as_ref()
                .map(|p| list(&p.top_sockets))
                .unwrap_or_default()
        });
    }
    // Heap: the first and the last profile that exist on disk, under the
    // run directory's profiles/ (a name pointing elsewhere is not opened).
    let named: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.heap_profile.as_ref())
        .collect();
    let mut present: Vec<&String> = Vec::new();
    for name in named {
        if leakscope_rundir::profile_file(dir, name).is_some() {
            present.push(name);
        } else {
            notes.push(format!(
                "heap profile {name:?} in {} is missing, or not a regular file under {}/; not opened",
                RunFile::Samples,
                RunFile::Profiles
            ));
        }
    }
    if let (Some(first), Some(last)) = (present.first(), present.last()) {
        if first != last {
            match heap_sites(dir, first, last) {
                Ok(sites) => {
                    a.heap_sites = sites;
                    a.heap_profiles = Some(((*first).clone(), (*last).clone()));
                }
                Err(e) => notes.push(format!("heap attribution skipped: {e}")),
            }
        } else {
            notes.push("one heap profile only: no allocation sites to diff".into());
        }
    }
    match leakscope_rundir::read_task_dump(dir) {
        Ok(Some(dump)) => a.parked = parked_sites(&dump, &a.task_locations),
        Ok(None) => {}
        Err(e) => notes.push(format!("task dump skipped: {e}")),
    }
    let dhat = RunFile::DhatHeap.path(dir);
    if dhat.is_file() {
        match dhat_sites(&dhat) {
            Ok(sites) => a.dhat_sites = sites,
            Err(e) => notes.push(e),
        }
    }
    a
}

/// The dump's groups for each site that grew, most tasks first. A dump
/// whose tasks have no site (no hooks) is joined to nothing: stacks
/// without a site would be guesswork.
fn parked_sites(dump: &leakscope_rundir::TaskDump, grew: &[Growth]) -> Vec<ParkedSite> {
    let mut out: Vec<ParkedSite> = grew
        .iter()
        .filter(|g| g.growth > 0.0)
        .filter_map(|g| {
            let mine: Vec<_> = dump
                .groups
                .iter()
                .filter(|p| p.spawned_at.as_deref() == Some(g.key.as_str()))
                .collect();
            (!mine.is_empty()).then(|| ParkedSite {
                spawned_at: g.key.clone(),
                tasks: mine.iter().map(|p| p.count).sum(),
                groups: mine.into_iter().take(PARKED_STACKS).cloned().collect(),
            })
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.tasks));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, before: f64, after: f64) -> Growth {
        Growth {
            key: key.into(),
            before,
            after,
            growth: after - before,
            pattern: false,
        }
    }

    /// Temporary files with random names: no digit pattern groups them,
    /// their directory does; a directory whose growth one row explains
    /// adds nothing.
    #[test]
    fn a_directory_row_groups_names_without_digits() {
        let files = vec![
            row("/tmp/.tmpAbCdEf", 0.0, 1.0),
            row("/tmp/.tmpQwErTy", 0.0, 1.0),
            row("/srv/big.bin", 0.0, 600.0),
        ];
        let patterns = vec![
            row("/tmp/.tmpAbCdEf", 0.0, 1.0),
            row("/srv/big.bin", 0.0, 600.0),
            row("/tmp/", 2.0, 5_002.0),
            row("/srv/", 0.0, 600.0),
        ];
        let rows = grouped_paths(files, patterns);
        let keys: Vec<(&str, f64, bool)> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.growth, r.pattern))
            .collect();
        assert_eq!(
            keys,
            [
                ("/tmp/", 5_000.0, true),
                ("/srv/big.bin", 600.0, false),
                ("/tmp/.tmpAbCdEf", 1.0, false),
                ("/tmp/.tmpQwErTy", 1.0, false),
            ]
        );
    }

    /// One log file per request: no path grows (each is open once), the
    /// pattern does, and it is what the row names.
    #[test]
    fn a_pattern_that_stands_for_many_paths_is_the_row() {
        let files = vec![
            row("/tmp/app-logs-7/req-1.log", 0.0, 1.0),
            row("/tmp/app-logs-7/req-2.log", 0.0, 1.0),
            row("/srv/big.bin", 1.0, 1.0),
        ];
        let patterns = vec![
            row("/tmp/app-logs-*/req-*.log", 3.0, 19_953.0),
            row("/srv/big.bin", 1.0, 1.0),
        ];
        let rows = grouped_paths(files, patterns);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].key, "/tmp/app-logs-*/req-*.log");
        assert_eq!(rows[0].growth, 19_950.0);
        assert!(rows[0].pattern);
    }

    /// A pattern whose figures are one path's is that path: a file with
    /// digits in its name, or with none (the pattern is the path).
    #[test]
    fn a_pattern_of_one_path_keeps_the_plain_path() {
        let files = vec![
            row("/data/v2/big.bin", 1.0, 600.0),
            row("/srv/index.html", 0.0, 40.0),
        ];
        let patterns = vec![
            row("/data/v*/big.bin", 1.0, 600.0),
            row("/srv/index.html", 0.0, 40.0),
        ];
        let rows = grouped_paths(files, patterns);
        let keys: Vec<(&str, bool)> = rows.iter().map(|r| (r.key.as_str(), r.pattern)).collect();
        assert_eq!(
            keys,
            [("/data/v2/big.bin", false), ("/srv/index.html", false)]
        );
    }

    /// Two paths under one pattern are the pattern, even when one of them
    /// did not grow: its figures are both paths'.
    #[test]
    fn two_paths_under_one_pattern_are_the_pattern() {
        let files = vec![
            row("/var/a-1.log", 0.0, 50.0),
            row("/var/a-2.log", 5.0, 5.0),
        ];
        let patterns = vec![row("/var/a-*.log", 5.0, 55.0)];
        let rows = grouped_paths(files, patterns);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].key.as_str(), rows[0].pattern),
            ("/var/a-*.log", true)
        );
    }

    /// Runs recorded before the sampler counted patterns: the paths, as
    /// they were.
    #[test]
    fn without_patterns_the_paths_stand() {
        let files = vec![row("/srv/big.bin", 1.0, 600.0), row("/srv/x", 3.0, 2.0)];
        let rows = grouped_paths(files, Vec::new());
        assert_eq!(rows, [row("/srv/big.bin", 1.0, 600.0)]);
    }
}
