//! What a guarded test left behind, and the message that says so.
//!
//! The message is modelled on the best of its kind: goleak names each
//! leaked goroutine with its stack, pytest-memray names each leaking
//! allocation site with its size, Lucene's thread-leak rule says how to
//! silence what is expected. Each item here carries the option that would
//! ignore it, and the message ends with the command that reruns the test
//! alone. `tests/golden.rs` pins it.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// Distinct fd targets listed before the rest are only counted.
const MAX_FD_LINES: usize = 10;

/// Tasks left running, from one spawn site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedTasks {
    /// `file:line:col`, or `None` when the runtime had no hooks.
    pub site: Option<String>,
    pub count: usize,
    /// Where they are parked: (tasks, leaf future, innermost own frame).
    pub parked: Vec<Parked>,
}

/// Tasks of one site parked at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub count: usize,
    /// The tokio future the task waits in (`tokio::time::sleep::Sleep`).
    pub leaf: String,
    /// The innermost frame of the test's own code, `function (path:line)`.
    pub own: Option<String>,
}

/// One fd left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFd {
    pub fd: i32,
    /// `tcp`, `udp`, `unix`, `pipe`, `file`, `anon_inode`, `socket`.
    pub kind: String,
    /// Path, endpoints or `anon_inode:[eventfd]`.
    pub target: String,
    /// What `/proc/self/fd` links to (`socket:[123]`): what an ignore
    /// pattern matches.
    pub link: String,
}

/// Heap still live that one site allocated during the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapSite {
    pub site: String,
    pub function: String,
    pub bytes_per_iteration: u64,
}

/// Everything a guarded test found, failing or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `module::test_name`.
    pub test: String,
    /// The command that runs this test alone.
    pub rerun: String,
    pub tasks: Vec<LeakedTasks>,
    /// fds the test's runtime registered and still held (exact).
    pub registered_fds: usize,
    /// fds opened since the baseline, process-wide.
    pub fds: Vec<OpenFd>,
    /// Whether the process-wide fds fail the test (no overlap).
    pub fds_fail: bool,
    /// Other guarded tests that ran meanwhile.
    pub overlapped: Vec<String>,
    pub heap: Vec<HeapSite>,
    /// Whether the heap fails the test (a warm-up was run).
    pub heap_fail: bool,
    pub heap_tolerance: u64,
    /// The most heap the test held at once in a measured run, above what
    /// the run began with, against `limit_peak` (when set).
    pub peak: Option<Budget>,
    /// Bytes the test allocated in a measured run, the most of any run,
    /// against `limit_allocated` (when set).
    pub allocated: Option<Budget>,
    pub iterations: u32,
    pub warmup: u32,
    /// What this test could not see, said once each.
    pub blind: Vec<String>,
    /// Bad options (a malformed pattern): they fail the test.
    pub errors: Vec<String>,
    pub checks: u32,
    pub waited: Duration,
}

impl Report {
    /// Whether anything here fails the test.
    pub fn fails(&self) -> bool {
        !self.tasks.is_empty()
            || self.registered_fds > 0
            || (self.fds_fail && !self.fds.is_empty())
            || (self.heap_fail && !self.heap.is_empty())
            || self.peak.is_some_and(|b| b.exceeded())
            || self.allocated.is_some_and(|b| b.exceeded())
            || !self.errors.is_empty()
    }

    /// Whether anything is worth a line on stderr even when passing.
    pub fn has_warnings(&self) -> bool {
        (!self.fds_fail && !self.fds.is_empty()) || (!self.heap_fail && !self.heap.is_empty())
    }

    fn heading(&self) -> String {
        let mut parts = Vec::new();
        let tasks: usize = self.tasks.iter().map(|t| t.count).sum();
        if tasks > 0 {
            parts.push(plural(tasks, "task"));
        }
        let fds = if self.fds_fail {
            self.fds.len().max(self.registered_fds)
        } else {
            self.registered_fds
        };
        if fds > 0 {
            parts.push(plural(fds, "fd"));
        }
        if self.heap_fail && !self.heap.is_empty() {
            let per: u64 = self.heap.iter().map(|h| h.bytes_per_iteration).sum();
            parts.push(format!("{} of heap per iteration", bytes(per)));
        }
        let mut over = Vec::new();
        if let Some(b) = self.peak.filter(Budget::exceeded) {
            over.push(format!(
                "held {} at its peak, over its {} limit",
                bytes(b.used),
                bytes(b.limit)
            ));
        }
        if let Some(b) = self.allocated.filter(Budget::exceeded) {
            over.push(format!(
                "allocated {} in a run, over its {} limit",
                bytes(b.used),
                bytes(b.limit)
            ));
        }
        if parts.is_empty() && over.is_empty() && !self.errors.is_empty() {
            return format!("leakscope: test {} has bad options", self.test);
        }
        let mut what = Vec::new();
        if !parts.is_empty() {
            what.push(format!("left {} behind", parts.join(", ")));
        }
        what.extend(over);
        if what.is_empty() {
            // Passing, with warnings: say so, or it reads as a failure.
            what.push("left nothing behind that fails it".to_string());
        }
        format!(
            "leakscope: test {} {} (checked {} times over {})",
            self.test,
            what.join(" and "),
            self.checks,
            millis(self.waited)
        )
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Bytes as people read them: `512 B`, `4.0 KiB`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / K / K)
    } else {
        format!("{:.1} GiB", f / K / K / K)
    }
}

fn millis(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A site's `path:line:col` → `path:line`, what an ignore option needs.
fn line_of(site: &str) -> &str {
    match site.rsplit_once(':') {
        Some((head, col)) if col.bytes().all(|b| b.is_ascii_digit()) && head.contains(':') => head,
        _ => site,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.heading())?;
        for e in &self.errors {
            writeln!(f, "\nbad option: {e}")?;
        }
        self.fmt_tasks(f)?;
        self.fmt_fds(f)?;
        self.fmt_heap(f)?;
        self.fmt_budgets(f)?;
        if !self.blind.is_empty() {
            writeln!(f, "\nnot seen:")?;
            for b in &self.blind {
                writeln!(f, "  - {b}")?;
            }
        }
        writeln!(f, "\nrerun alone: {}", self.rerun)
    }
}

impl Report {
    fn fmt_tasks(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let n: usize = self.tasks.iter().map(|t| t.count).sum();
        writeln!(f, "\ntasks: {} still running, spawned during the test", n)?;
        for t in &self.tasks {
            match &t.site {
                Some(site) => writeln!(f, "  {} x spawned at {site}", t.count)?,
                None => writeln!(f, "  {} x (spawn site unknown)", t.count)?,
            }
            for p in &t.parked {
                let mut line = format!("      {} parked in {}", p.count, closures(&p.leaf));
                if let Some(own) = &p.own {
                    let _ = write!(line, "\n        <- {}", closures(own));
                }
                writeln!(f, "{line}")?;
            }
            if let Some(site) = &t.site {
                writeln!(
                    f,
                    "      ignore: Config::new().ignore_site({:?})",
                    line_of(site)
                )?;
            }
        }
        Ok(())
    }

    fn fmt_fds(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.registered_fds == 0 && self.fds.is_empty() {
            return Ok(());
        }
        if self.registered_fds > 0 {
            writeln!(
                f,
                "\nfds: {} registered with the test's runtime and still open",
                self.registered_fds
            )?;
        }
        if self.fds.is_empty() {
            return Ok(());
        }
        if self.fds_fail {
            writeln!(
                f,
                "\nfds: {} opened during the test and still open",
                self.fds.len()
            )?;
        } else {
            writeln!(
                f,
                "\nfds: warning: {} opened in the process during the test and still open; \
                 not judged, since other guarded tests ran meanwhile",
                self.fds.len()
            )?;
        }
        if !self.fds_fail && !self.overlapped.is_empty() {
            let shown: Vec<&str> = self.overlapped.iter().take(5).map(String::as_str).collect();
            let more = self.overlapped.len().saturating_sub(shown.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            writeln!(f, "  overlapped: {}{tail}", shown.join(", "))?;
            writeln!(f, "  to judge them: Config::new().exclusive()")?;
        }
        self.fmt_fd_list(f)
    }

    /// The fds, one line per distinct target (`24 x file /srv/f.bin`), the
    /// first ten targets, then the rest counted by kind; one ignore option
    /// per kind of pattern shown.
    fn fmt_fd_list(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut groups: Vec<(&OpenFd, usize)> = Vec::new();
        for fd in &self.fds {
            match groups
                .iter_mut()
                .find(|(g, _)| g.kind == fd.kind && g.target == fd.target)
            {
                Some((_, n)) => *n += 1,
                None => groups.push((fd, 1)),
            }
        }
        groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.fd.cmp(&b.0.fd)));
        for (fd, n) in groups.iter().take(MAX_FD_LINES) {
            let count = if *n == 1 {
                format!("fd {}", fd.fd)
            } else {
                format!("{n} x")
            };
            writeln!(f, "  {count:<8} {:<10} {}", fd.kind, fd.target)?;
        }
        let rest = &groups[groups.len().min(MAX_FD_LINES)..];
        if !rest.is_empty() {
            let mut kinds: Vec<(&str, usize)> = Vec::new();
            for (fd, n) in rest {
                match kinds.iter_mut().find(|(k, _)| *k == fd.kind) {
                    Some((_, c)) => *c += n,
                    None => kinds.push((&fd.kind, *n)),
                }
            }
            let total: usize = kinds.iter().map(|(_, n)| n).sum();
            let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            writeln!(f, "  ... and {total} more: {}", by_kind.join(", "))?;
        }
        let mut patterns: Vec<String> = Vec::new();
        for (fd, _) in &groups {
            let p = ignore_pattern(&fd.link);
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        for p in patterns.iter().take(3) {
            writeln!(f, "  ignore: Config::new().ignore_path({p:?})")?;
        }
        Ok(())
    }

    fn fmt_heap(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.heap.is_empty() {
            return Ok(());
        }
        let per: u64 = self.heap.iter().map(|h| h.bytes_per_iteration).sum();
        let runs = if self.iterations == 1 {
            "1 run".to_string()
        } else {
            format!("{} runs", self.iterations)
        };
        if self.heap_fail {
            writeln!(
                f,
                "\nheap: {} per iteration still live, allocated during the test \
                 ({runs} after {} warm-up, tolerance {})",
                bytes(per),
                self.warmup,
                bytes(self.heap_tolerance)
            )?;
        } else {
            writeln!(
                f,
                "\nheap: warning: {} still live, allocated during the test; not judged \
                 without a warm-up, since one-time initialization looks the same",
                bytes(per)
            )?;
            writeln!(f, "  to judge it: Config::new().warmup(1)")?;
        }
        for h in self.heap.iter().take(10) {
            writeln!(
                f,
                "  {:>10} per iteration at {} in {}",
                bytes(h.bytes_per_iteration),
                h.site,
                closures(&h.function)
            )?;
            writeln!(f, "      ignore: Config::new().ignore_site({:?})", h.site)?;
        }
        if self.heap.len() > 10 {
            writeln!(f, "  ... and {} more sites", self.heap.len() - 10)?;
        }
        Ok(())
    }
}

impl Report {
    fn fmt_budgets(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.peak.filter(Budget::exceeded) {
            writeln!(
                f,
                "\nheap peak: {} held at once in a run, above what the run began with; \
                 the limit is {}",
                bytes(b.used),
                bytes(b.limit)
            )?;
            writeln!(f, "  to allow it: Config::new().limit_peak({})", b.used)?;
        }
        if let Some(b) = self.allocated.filter(Budget::exceeded) {
            writeln!(
                f,
                "\nheap allocated: {} in a run, freed or not; the limit is {}",
                bytes(b.used),
                bytes(b.limit)
            )?;
            writeln!(
                f,
                "  to allow it: Config::new().limit_allocated({})",
                b.used
            )?;
        }
        Ok(())
    }
}

/// A heap budget a test set, and the most a measured run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub used: u64,
}

impl Budget {
    pub fn exceeded(&self) -> bool {
        self.used > self.limit
    }
}

/// `f::{{closure}}::{{closure}}::{{closure}}` → `f::{{closure}}`: an async
/// fn's nested closures say nothing the line number does not.
fn closures(function: &str) -> String {
    const C: &str = "::{{closure}}";
    let mut out = function.to_string();
    let twice = format!("{C}{C}");
    while out.contains(&twice) {
        out = out.replace(&twice, C);
    }
    out
}

/// The pattern that would ignore fds like `target`: its directory for a
/// file, its kind for anything else.
fn ignore_pattern(target: &str) -> String {
    if target.starts_with('/') {
        match target.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => format!("{dir}/*"),
            _ => target.to_string(),
        }
    } else if let Some((kind, _)) = target.split_once(':') {
        format!("{kind}:*")
    } else {
        target.to_string()
    }
}
