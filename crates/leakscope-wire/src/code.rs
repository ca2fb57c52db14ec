//! Which frames of a stack are the service's own code: one rule, read by
//! the agent's task dumps, the analysis of heap profiles and leakscope-test,
//! so a frame is never the service's in one report and a library's in
//! another.
//!
//! The rule is by source path, because names cannot say it: a service's
//! crate may be called anything. Foreign code is the toolchain's, a
//! downloaded dependency's, or what a build script generated (jemalloc's
//! C, compiled in cargo's `OUT_DIR`). Everything else is the service's:
//! a project checked out under `/build/` or `/src/` is still a project.

/// The toolchain's sources: `/rustc/HASH/library/…` as rustc records them,
/// a rustup toolchain's `rust-src`, or a path that kept only
/// `library/std/` and its siblings.
pub fn is_toolchain(path: &str) -> bool {
    const MARKS: &[&str] = &[
        "/rustc/",
        "/rustlib/src/",
        "/.rustup/toolchains/",
        "/library/std/",
        "/library/core/",
        "/library/alloc/",
    ];
    path.starts_with("/rustc/") || MARKS.iter().any(|m| path.contains(m))
}

/// A dependency cargo downloaded: its registry or its git checkouts.
pub fn is_dependency(path: &str) -> bool {
    path.contains("/.cargo/registry/") || path.contains("/.cargo/git/")
}

/// Generated or compiled by a build script: a file under cargo's
/// `target/<profile>/build/<package>-<16 hex digits>/`. Only that shape:
/// any path with `/build/` in it would hide a project built under `/build/`.
pub fn is_build_output(path: &str) -> bool {
    path.match_indices("/build/").any(|(i, m)| {
        let rest = &path[i + m.len()..];
        let segment = rest.split('/').next().unwrap_or("");
        let has_more = rest.len() > segment.len();
        has_more
            && segment.rsplit_once('-').is_some_and(|(name, hash)| {
                !name.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
            })
    })
}

/// The service's own code: none of the above.
pub fn is_own_path(path: &str) -> bool {
    !(path.is_empty() || is_toolchain(path) || is_dependency(path) || is_build_output(path))
}

/// `path::to::f::h0123456789abcdef` → `path::to::f`: the legacy mangling's
/// hash, which differs per build and says nothing to a reader.
pub fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

/// In a tokio task dump's backtrace (innermost first, as function names),
/// the frames that are the task's await chain: after the unwinder and
/// tokio's last `trace_leaf`, before the task machinery that polls the
/// task's root future.
pub fn task_chain(functions: &[&str]) -> std::ops::Range<usize> {
    let start = functions
        .iter()
        .rposition(|f| f.contains("trace_leaf"))
        .map_or(0, |i| i + 1);
    let end = functions[start..]
        .iter()
        .position(|f| is_task_root(f))
        .map_or(functions.len(), |i| start + i);
    start..end
}

/// Where the task's own future stops and tokio's task machinery begins.
fn is_task_root(f: &str) -> bool {
    f.contains("tokio::runtime::task::trace::Root")
        || f.starts_with("tokio::runtime::task::core::")
        || f.starts_with("tokio::runtime::task::harness::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stripped_and_only_hashes() {
        assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_hash("a::b::hello"), "a::b::hello");
        assert_eq!(strip_hash("a::b::h0123"), "a::b::h0123");
    }

    #[test]
    fn the_task_chain_is_between_the_leaf_hook_and_the_task_machinery() {
        let f = [
            "backtrace::trace",
            "tokio::runtime::task::trace::trace_leaf",
            "tokio::time::sleep::Sleep::poll_elapsed",
            "svc::report::{{closure}}",
            "tokio::runtime::task::core::Core<T,S>::poll",
            "tokio::runtime::task::harness::Harness<T,S>::poll",
        ];
        assert_eq!(task_chain(&f), 2..4);
        assert_eq!(task_chain(&f[2..4]), 0..2);
    }

    #[test]
    fn one_table_for_every_kind_of_path() {
        let table: &[(&str, bool)] = &[
            ("/home/me/svc/src/main.rs", true),
            ("src/handlers.rs", true),
            ("crates/download-server/src/scenarios/task_leak.rs", true),
            // A project that lives under /build/ (CI images, Bazel, Nix).
            ("/build/svc/src/main.rs", true),
            ("/build/src/main.rs", true),
            ("/src/svc/src/scenarios/task_leak.rs", true),
            ("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/future/future.rs", false),
            ("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/thread/mod.rs", false),
            ("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/time/sleep.rs", false),
            ("/root/.cargo/git/checkouts/hyper-0123/abcdef/src/proto/h1/dispatch.rs", false),
            ("/build/svc/target/release/build/tikv-jemalloc-sys-0123456789abcdef/out/build/src/jemalloc.c", false),
            ("/work/target/debug/build/ring-fedcba9876543210/out/x.c", false),
            // `build` as an ordinary directory name, with a hyphen.
            ("/build/my-project/src/lib.rs", true),
            ("", false),
        ];
        for (path, own) in table {
            assert_eq!(is_own_path(path), *own, "{path}");
        }
    }
}
