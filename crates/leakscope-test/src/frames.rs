//! Stack frames by name and place, and which of them are the test's own
//! code rather than the standard library, a dependency or leakscope.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use leakscope_wire::code;

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Frame {
    /// The function, without its hash.
    pub(crate) function: String,
    /// `path:line`, relative to the workspace when under it.
    pub(crate) place: Option<String>,
    own: bool,
}

impl Frame {
    fn new(function: String, file: Option<&Path>, line: Option<u32>) -> Self {
        let own = file.is_some_and(is_own) && !is_machinery(&function);
        let place = file.map(|f| format!("{}:{}", relative(f), line.unwrap_or(0)));
        Frame {
            function,
            place,
            own,
        }
    }

    /// Whether this frame is the service's or the test's code.
    pub(crate) fn is_own(&self) -> bool {
        self.own
    }
}

/// Frames of what the allocator and its wrappers run on the way from a
/// caller to memory: never the site of an allocation.
fn is_machinery(function: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "leakscope_allocgroup::",
        "leakscope_agent::allocator::",
        "leakscope_test::",
        "__rust",
        "__rdl",
        "__rg_",
        "backtrace::",
    ];
    // `<leakscope_allocgroup::Tracking<A> as GlobalAlloc>::alloc` is the
    // type's frame.
    let f = function.trim_start_matches('<');
    PREFIXES.iter().any(|p| f.starts_with(p))
}

/// The project's own code by the one rule (`leakscope_wire::code`), and
/// inside this workspace: a test's own code is its workspace's, so a path
/// crate outside it is a dependency here.
fn is_own(file: &Path) -> bool {
    leakscope_wire::code::is_own_path(&file.to_string_lossy())
        && (file.is_relative() || file.starts_with(workspace()))
}

/// The workspace root: the nearest ancestor of the package with a
/// Cargo.lock, else the package itself. Cargo runs a test binary from its
/// package directory and says which in CARGO_MANIFEST_DIR.
fn workspace() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let pkg = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default();
        pkg.ancestors()
            .find(|a| a.join("Cargo.lock").is_file())
            .map(Path::to_path_buf)
            .unwrap_or(pkg)
    })
}

fn relative(file: &Path) -> String {
    file.strip_prefix(workspace())
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Symbolizes raw instruction pointers, innermost first, inlined frames
/// included.
pub(crate) fn resolve(ips: &[usize]) -> Vec<Frame> {
    let mut out = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        // A return address points after the call; step back into it for
        // every frame but the innermost, as unwinders do.
        let addr = if i == 0 { *ip } else { ip.saturating_sub(1) };
        backtrace::resolve(addr as *mut std::ffi::c_void, |s| {
            let function = s
                .name()
                .map(|n| code::strip_hash(&n.to_string()).to_string())
                .unwrap_or_else(|| "??".into());
            out.push(Frame::new(function, s.filename(), s.lineno()));
        });
    }
    out
}

/// The frames of a parked task from tokio's dump, from the leaf future to
/// the task's root.
#[cfg(all(tokio_unstable, feature = "taskdump"))]
pub(crate) fn of_dump(bt: &tokio::runtime::dump::Backtrace) -> Vec<Frame> {
    let frames: Vec<Frame> = bt
        .frames()
        .flat_map(|f| f.symbols())
        .map(|s| {
            let function = s
                .name_demangled()
                .map(|n| code::strip_hash(n).to_string())
                .unwrap_or_else(|| "??".into());
            Frame::new(function, s.filename(), s.lineno())
        })
        .collect();
    let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
    frames[code::task_chain(&names)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_code_is_the_workspace_wherever_it_lives() {
        let cases = [
            ("crates/app/src/lib.rs", true),
            ("/rustc/abc/library/std/src/io/mod.rs", false),
            (
                "/root/.cargo/registry/src/index/tokio-1.54.0/src/lib.rs",
                false,
            ),
            (
                "/home/u/.rustup/toolchains/stable/lib/rustlib/src/rust/library/alloc/src/vec.rs",
                false,
            ),
        ];
        for (path, own) in cases {
            assert_eq!(is_own(Path::new(path)), own, "{path}");
        }
        // The workspace is own code even under a directory named build.
        let under_build = workspace().join("build/src/main.rs");
        assert!(is_own(&under_build));
        assert!(!is_own(Path::new("/elsewhere/src/main.rs")) || workspace() == Path::new(""));
    }
}
