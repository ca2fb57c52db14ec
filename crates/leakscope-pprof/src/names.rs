//! What a frame's function is called, and whether it is allocation
//! machinery that a heap profile should not charge bytes to.

/// Why a frame is cut from the leaf end of an allocation's stack.
///
/// Go's pprof drops its runtime's allocator frames (`runtime.mallocgc`,
/// `runtime.growslice`, …) and jeprof drops malloc's; the Rust equivalents
/// are jemalloc, the global-allocator shims and the standard library's
/// allocating containers. What is left at the leaf is the function that
/// asked for the memory, which is what `-top` should name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machinery {
    /// jemalloc itself, sampling included (`prof_backtrace_impl`,
    /// `imalloc_body`, `je_malloc_default`, `_rjem_mallocx`, …).
    Allocator,
    /// The global-allocator shims: `__rust_alloc`, `__rdl_alloc`,
    /// tikv-jemallocator's `GlobalAlloc`, leakscope-agent's counting wrapper.
    Shim,
    /// The standard library's allocation paths and the generic glue on the
    /// way to them: `alloc::` (Vec, Box, String, Arc …), `core::` (which never
    /// allocates by itself, so a `core` frame next to an allocation is
    /// iterator or conversion glue), `std::collections`, and hashbrown (std's
    /// HashMap).
    Library,
}

/// jemalloc's function names: its exported API is prefixed (`_rjem_`,
/// `je_`); its internal and inline functions are not, so they are listed.
const ALLOCATOR_PREFIXES: &[&str] = &[
    "_rjem_",
    "je_",
    "prof_",
    "imalloc",
    "ialloc",
    "iralloc",
    "irallocx",
    "isalloc",
    "malloc_default",
    "do_rallocx",
    "arena_",
    "tcache_",
    "te_",
    "malloc",
    "calloc",
    "realloc",
    "mallocx",
    "rallocx",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
];

/// jemalloc's sources, for frames whose names a build renamed.
const ALLOCATOR_FILES: &[&str] = &["/jemalloc/src/", "/jemalloc/include/", "tikv-jemalloc-sys"];

const SHIM_PREFIXES: &[&str] = &[
    "__rust_alloc",
    "__rust_realloc",
    "__rust_dealloc",
    "__rust_alloc_zeroed",
    "__rdl_",
    "__rg_",
    "tikv_jemallocator::",
    "leakscope_agent::allocator::",
];

const LIBRARY_PREFIXES: &[&str] = &[
    "alloc::",
    "core::",
    "std::alloc::",
    "std::collections::",
    "hashbrown::",
];

/// Classifies a frame by its qualified function name and source file.
pub fn machinery(function: &str, file: &str) -> Option<Machinery> {
    // v0 mangling puts the shims under a `__rustc` crate.
    let function = function.strip_prefix("__rustc::").unwrap_or(function);
    let starts = |prefixes: &[&str], name: &str| prefixes.iter().any(|p| name.starts_with(p));
    // `<T as Trait>::f` belongs to T, unless T is a bare type parameter,
    // slice or str, which is the trait's code (`<[u8] as
    // alloc::borrow::ToOwned>::to_owned`).
    let (self_ty, trait_path) = split_impl(function);
    if starts(SHIM_PREFIXES, self_ty) || starts(SHIM_PREFIXES, function) {
        return Some(Machinery::Shim);
    }
    // jemalloc is C: its names have no `::`, which keeps a Rust crate that
    // happens to be called `malloc_…` out of this.
    let c_name = !function.contains("::");
    if (c_name && starts(ALLOCATOR_PREFIXES, function))
        || ALLOCATOR_FILES.iter().any(|f| file.contains(f))
    {
        return Some(Machinery::Allocator);
    }
    let generic_self = !self_ty.contains("::");
    let library = starts(LIBRARY_PREFIXES, self_ty)
        || (generic_self && trait_path.is_some_and(|t| starts(LIBRARY_PREFIXES, t)));
    library.then_some(Machinery::Library)
}

/// `<A as B>::f` → ("A", Some("B")); `<A>::f` → ("A", None); a plain path is
/// its own self type.
fn split_impl(function: &str) -> (&str, Option<&str>) {
    let Some(rest) = function.strip_prefix('<') else {
        return (function, None);
    };
    // The `>` that closes the leading `<`.
    let mut depth = 1usize;
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &rest[..end];
    match find_top_level(inner, " as ") {
        Some(i) => (inner[..i].trim_start_matches('&'), Some(&inner[i + 4..])),
        None => (inner.trim_start_matches('&'), None),
    }
}

/// Whether a name is a path (`a::b`, `<T as a::B>::f`) rather than a bare
/// name whose generic arguments happen to hold paths
/// (`try_allocate_in<alloc::alloc::Global>`).
pub fn is_qualified(name: &str) -> bool {
    find_top_level(name, "::").is_some()
}

/// The first `needle` in `s` outside any `<…>`.
fn find_top_level(s: &str, needle: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(needle) => return Some(i),
            _ => {}
        }
    }
    None
}

/// The Rust module a source file implements, from its path: the crate from
/// the directory that holds `src/` (a registry checkout's `tokio-1.54.1`, a
/// workspace's `crates/download-server`, the toolchain's `library/core`),
/// then the path under `src/` with `mod.rs`, `lib.rs` and `main.rs` dropped.
///
/// Why: with `debug = "line-tables-only"` rustc gives an inlined function
/// only its bare name (`poll_tick`, `{async_fn#0}`) and no namespace, so
/// this is all that says whose it is. It names the module, not the type of
/// a method; a build with `debug = "limited"` carries the exact path.
pub fn module_of(file: &str) -> Option<String> {
    let file = file.replace('\\', "/");
    let (root, under) = file.rsplit_once("/src/").or_else(|| {
        file.strip_prefix("src/")
            .map(|rest| ("", rest))
            .filter(|_| !file.is_empty())
    })?;
    let dir = root.rsplit('/').next().filter(|d| !d.is_empty())?;
    let krate = crate_of_dir(dir);
    let stem = under.strip_suffix(".rs")?;
    let mut path = vec![krate];
    let parts: Vec<&str> = stem.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last && matches!(*part, "mod" | "lib" | "main") {
            continue;
        }
        if part.is_empty() || part.contains('.') {
            return None;
        }
        path.push(part.replace('-', "_"));
    }
    Some(path.join("::"))
}

/// `tokio-1.54.1` → `tokio`, `download-server` → `download_server`.
fn crate_of_dir(dir: &str) -> String {
    let name = match dir.rsplit_once('-') {
        Some((name, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => name,
        _ => dir,
    };
    name.replace('-', "_")
}

/// Demangles a symbol-table or linkage name (legacy or v0), without the
/// hash; a name that is not mangled Rust comes back as it is.
pub fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_frames_are_machinery() {
        for name in [
            "prof_backtrace_impl",
            "je_prof_backtrace",
            "imalloc_body",
            "_rjem_mallocx",
        ] {
            assert_eq!(machinery(name, ""), Some(Machinery::Allocator), "{name}");
        }
        assert_eq!(
            machinery("anything", "/x/jemalloc/src/prof.c"),
            Some(Machinery::Allocator)
        );
        for name in [
            "__rust_alloc",
            "__rustc::__rust_alloc",
            "__rustc::__rdl_alloc",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
            "<leakscope_agent::allocator::Counting<A> as core::alloc::global::GlobalAlloc>::alloc",
        ] {
            assert_eq!(machinery(name, ""), Some(Machinery::Shim), "{name}");
        }
    }

    #[test]
    fn the_library_is_machinery_and_its_callers_are_not() {
        for name in [
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<alloc::raw_vec::RawVecInner>::try_allocate_in",
            "<core::iter::adapters::map::Map<I,F> as core::iter::traits::iterator::Iterator>::fold",
            "<T as alloc::slice::hack::ConvertVec>::to_vec",
            "<[u8] as alloc::borrow::ToOwned>::to_owned",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "core::iter::traits::iterator::Iterator::collect",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
        ] {
            assert_eq!(machinery(name, ""), Some(Machinery::Library), "{name}");
        }
        for name in [
            "download_server::scenarios::session_map::handle::{{closure}}",
            "<download_server::Session as core::clone::Clone>::clone",
            "std::fs::read",
            "tokio::runtime::task::core::Cell<T,S>::new",
            "main",
            "malloc_trim_helper_in_user_code::x",
        ] {
            assert_eq!(machinery(name, "src/x.rs"), None, "{name}");
        }
    }

    #[test]
    fn a_bare_name_with_paths_in_its_generics_is_not_qualified() {
        assert!(!is_qualified("try_allocate_in<alloc::alloc::Global>"));
        assert!(!is_qualified("alloc<tikv_jemallocator::Jemalloc>"));
        assert!(!is_qualified("{async_fn#0}"));
        assert!(is_qualified("alloc::slice::to_vec<u8>"));
        assert!(is_qualified(
            "<T as alloc::slice::hack::ConvertVec>::to_vec"
        ));
        assert!(is_qualified(
            "<alloc::raw_vec::RawVecInner>::try_allocate_in"
        ));
    }

    #[test]
    fn modules_come_from_the_source_path() {
        let cases = [
            (
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/time/interval.rs",
                Some("tokio::time::interval"),
            ),
            (
                "crates/download-server/src/scenarios/session_map.rs",
                Some("download_server::scenarios::session_map"),
            ),
            ("/rustc/59807616e/library/core/src/ptr/mod.rs", Some("core::ptr")),
            ("/work/app/src/main.rs", Some("app")),
            ("src/lib.rs", None),
            ("src/prof.c", None),
            ("", None),
        ];
        for (file, want) in cases {
            assert_eq!(module_of(file).as_deref(), want, "{file}");
        }
    }

    #[test]
    fn demangles_without_the_hash() {
        assert_eq!(
            demangle("_ZN15download_server9scenarios11session_map6handle28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE"),
            "download_server::scenarios::session_map::handle::{{closure}}"
        );
        assert_eq!(demangle("prof_backtrace_impl"), "prof_backtrace_impl");
    }
}
