//! What leakscope-agent says about tasks (`/debug/tasks`' hooks and
//! `/debug/tasks/dump`), as it serves it and as the run directory keeps
//! it: one set of types for the agent, the sidecar and the report, so the
//! three cannot drift apart.

use serde::{Deserialize, Serialize};

/// Live tasks by spawn location, from tokio's task hooks (the `hooks`
/// section of the agent's `/debug/tasks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSites {
    /// Tasks spawned and not yet terminated, over every site.
    pub live: u64,
    /// Tasks spawned since the hooks were installed.
    pub spawned_total: u64,
    /// Every site that ever spawned, most live first.
    pub sites: Vec<TaskSite>,
}

/// One spawn location (`file:line:col` of the `tokio::spawn` call).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSite {
    pub location: String,
    pub live: u64,
    pub spawned_total: u64,
}

/// A task dump: every task the runtime held, grouped by where it was
/// spawned and where it is parked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskDump {
    /// Milliseconds since the Unix epoch when the dump was asked for.
    pub taken_unix_ms: u64,
    /// How long the runtime took to trace its tasks, and how long
    /// symbolizing their backtraces took.
    pub trace_ms: u64,
    pub symbolize_ms: u64,
    /// Tasks traced. Tasks that were running at that instant are not in a
    /// dump (tokio traces only idle ones).
    pub tasks: u64,
    /// Groups, largest first.
    pub groups: Vec<ParkedGroup>,
}

/// Tasks that share a spawn site and a parked stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParkedGroup {
    /// `file:line:col` of the spawn; `None` when the hooks were not
    /// installed (or the task was spawned before they were).
    pub spawned_at: Option<String>,
    pub count: u64,
    /// The await chain, the leaf future (where the task is parked) first,
    /// then each async fn that awaits it, out to the task's own future.
    /// A task awaiting several futures at once (`join!`, `select!`) has
    /// one chain per leaf; this is the first.
    pub stack: Vec<StackFrame>,
}

impl ParkedGroup {
    /// "`tokio::time::interval::Interval::tick` ← task_leak::report
    /// (task_leak.rs:53)": the first frame in the service's own code, and
    /// the library call it awaits there (the last frame before it that is
    /// not the standard library's glue). That pair is what a reader acts on.
    pub fn parked_at(&self) -> String {
        let own = self.stack.iter().position(StackFrame::is_own_code);
        let before = &self.stack[..own.unwrap_or(self.stack.len())];
        let awaited = before
            .iter()
            .rev()
            .find(|f| !f.is_std())
            .or(self.stack.first());
        match (awaited, own.map(|i| &self.stack[i])) {
            (Some(a), Some(o)) if !std::ptr::eq(a, o) => format!("{} ← {}", a.called(), o.short()),
            (_, Some(o)) => o.short(),
            (Some(a), None) => a.called(),
            (None, None) => "unknown (no tokio leaf future, e.g. std::future::pending)".to_string(),
        }
    }
}

/// One frame of a parked stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StackFrame {
    /// Demangled, without the hash suffix.
    pub function: String,
    /// `file:line` when debuginfo has it.
    #[serde(default)]
    pub location: Option<String>,
}

impl StackFrame {
    /// The function's path without generic arguments, closure segments or
    /// the `<T as Trait>` wrapping: `tokio::time::sleep::Sleep::poll`.
    /// Inlined frames carry only DWARF's short name (`poll_tick`).
    pub fn name(&self) -> String {
        clean_function(&self.function).join("::")
    }

    /// The name when it is a path; with where it is when DWARF gave only a
    /// bare name, which alone says little.
    fn called(&self) -> String {
        let name = self.name();
        if name.contains("::") {
            name
        } else {
            self.short()
        }
    }

    /// The standard library or compiler glue (`Future::poll` of `core`).
    pub fn is_std(&self) -> bool {
        self.location
            .as_deref()
            .is_some_and(crate::code::is_toolchain)
    }

    /// Whether the frame is the service's code rather than a dependency's,
    /// the standard library's or a build script's ([`crate::code`]).
    pub fn is_own_code(&self) -> bool {
        self.location
            .as_deref()
            .is_some_and(crate::code::is_own_path)
    }

    /// The last two path segments and where: `interval::Interval::poll_tick`
    /// becomes `Interval::poll_tick (tokio-1.54.1 src/time/interval.rs:459)`
    /// for a dependency, `task_leak::report (task_leak.rs:53)` for own code.
    pub fn short(&self) -> String {
        match self.short_location() {
            Some(l) => format!("{} ({l})", self.short_name()),
            None => self.short_name(),
        }
    }

    /// The last two path segments of the name: `Interval::poll_tick`.
    pub fn short_name(&self) -> String {
        let segs = clean_function(&self.function);
        segs[segs.len().saturating_sub(2)..].join("::")
    }

    /// Where, shortened: `tokio-1.54.1 src/time/interval.rs:459` for a
    /// dependency, `task_leak.rs:53` for any other file.
    pub fn short_location(&self) -> Option<String> {
        self.location.as_deref().map(short_location)
    }
}

/// `…/.cargo/registry/src/INDEX/tokio-1.54.1/src/time/interval.rs:459` →
/// `tokio-1.54.1 src/time/interval.rs:459`; anything else → the file name.
fn short_location(l: &str) -> String {
    if let Some((_, after)) = l.split_once("/.cargo/registry/src/") {
        let mut parts = after.splitn(3, '/');
        let (_index, krate, rest) = (parts.next(), parts.next(), parts.next());
        if let (Some(k), Some(r)) = (krate, rest) {
            return format!("{k} {r}");
        }
    }
    l.rsplit('/').next().unwrap_or(l).to_string()
}

/// Path segments of a demangled name, generics and closures removed.
fn clean_function(f: &str) -> Vec<String> {
    let mut f = f.to_string();
    // `<Type as Trait>::method` → `Type::method`.
    if f.starts_with('<') {
        if let Some(end) = matching_angle(&f) {
            let inner = &f[1..end];
            let ty = inner.split(" as ").next().unwrap_or(inner).to_string();
            f = format!("{ty}{}", &f[end + 1..]);
        }
    }
    let mut plain = String::with_capacity(f.len());
    let mut depth = 0usize;
    for c in f.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let segs: Vec<String> = plain
        .split("::")
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .map(str::to_string)
        .collect();
    if segs.is_empty() {
        vec![f]
    } else {
        segs
    }
}

/// Index of the `>` closing the `<` at position 0.
fn matching_angle(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_generics_closures_and_trait_wrapping() {
        let f = |s: &str| frame(s, None).name();
        assert_eq!(
            f("<tokio::time::sleep::Sleep as core::future::future::Future>::poll"),
            "tokio::time::sleep::Sleep::poll"
        );
        assert_eq!(
            f("poll<core::future::poll_fn::PollFn<tokio::time::interval::{impl#2}::tick::{async_fn#0}>>"),
            "poll"
        );
        assert_eq!(f("svc::report::{{closure}}"), "svc::report");
        assert_eq!(f("{async_fn#0}<()>"), "{async_fn#0}<()>");
    }

    fn frame(f: &str, l: Option<&str>) -> StackFrame {
        StackFrame {
            function: f.into(),
            location: l.map(String::from),
        }
    }

    #[test]
    fn parked_at_names_the_leaf_and_the_first_own_frame() {
        let g = ParkedGroup {
            spawned_at: Some("src/a.rs:3:5".into()),
            count: 2,
            stack: vec![
                frame(
                    "tokio::time::sleep::Sleep::poll_elapsed",
                    Some("/root/.cargo/registry/src/x/tokio-1.54.1/src/time/sleep.rs:384"),
                ),
                frame(
                    "tokio::time::interval::Interval::tick::{{closure}}",
                    Some("/root/.cargo/registry/src/x/tokio-1.54.1/src/time/interval.rs:420"),
                ),
                frame(
                    "core::future::future::Future::poll",
                    Some("/rustc/abc/library/core/src/future/future.rs:124"),
                ),
                frame(
                    "svc::scenarios::task_leak::report::{{closure}}",
                    Some("/src/svc/src/scenarios/task_leak.rs:53"),
                ),
            ],
        };
        assert_eq!(
            g.parked_at(),
            "tokio::time::interval::Interval::tick ← task_leak::report (task_leak.rs:53)"
        );
        let inlined = ParkedGroup {
            stack: vec![frame(
                "poll_tick",
                Some("/root/.cargo/registry/src/index.crates.io-1949/tokio-1.54.1/src/time/interval.rs:459"),
            )],
            ..ParkedGroup::default()
        };
        assert_eq!(
            inlined.parked_at(),
            "poll_tick (tokio-1.54.1 src/time/interval.rs:459)"
        );
        assert_eq!(
            ParkedGroup::default().parked_at(),
            "unknown (no tokio leaf future, e.g. std::future::pending)"
        );
    }
}
