//! Address → inline chain of qualified function names, from the object
//! file's DWARF and symbol table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use addr2line::gimli;

use crate::names;

/// One function of an address's inline chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Qualified and demangled, without the hash:
    /// `download_server::scenarios::session_map::handle::{{closure}}`.
    pub function: String,
    /// What the object file calls it: the mangled linkage or symbol name,
    /// or DWARF's bare name.
    pub system_name: String,
    /// Source file as DWARF has it; empty when unknown.
    pub file: String,
    /// 0 when unknown.
    pub line: u32,
    pub naming: Naming,
}

/// Where a frame's qualified name came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Naming {
    /// DWARF's linkage name (a build with `debug = "limited"` or more).
    Linkage,
    /// The symbol table: exact, but only for the function the address's
    /// code belongs to, not the ones inlined into it.
    Symbol,
    /// DWARF's bare name under the module its source file implements
    /// ([`names::module_of`]): `debug = "line-tables-only"` builds.
    SourcePath,
    /// A name with no path to add (C, or a file outside any `src/`).
    Bare,
    /// Nothing knows the address: its hex value.
    Address,
}

impl Naming {
    pub const ALL: [Naming; 5] = [
        Naming::Linkage,
        Naming::Symbol,
        Naming::SourcePath,
        Naming::Bare,
        Naming::Address,
    ];
}

/// Loads each object file once and answers addresses in it. Dropping it
/// frees every parsed table: nothing is cached process-wide.
pub struct Symbolizer {
    objects: HashMap<PathBuf, Option<addr2line::Loader>>,
    /// The running executable's path as the process sees it. It is read
    /// through `/proc/self/exe`, which stays the image that runs even when
    /// a rebuild replaced the file on disk.
    current_exe: Option<PathBuf>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            objects: HashMap::new(),
            current_exe: std::env::current_exe().ok(),
        }
    }

    /// The inline chain at `svma` (an address in the object's own virtual
    /// address space), innermost function first. Never empty.
    pub fn frames(&mut self, object: &Path, svma: u64) -> Vec<Frame> {
        let Some(loader) = self.loader(object) else {
            return vec![address_frame(svma)];
        };
        let mut raw = raw_frames(loader, svma);
        let symbol = loader.find_symbol(svma).map(str::to_owned);
        if raw.is_empty() {
            raw.push(RawFrame::default());
        }
        let outermost = raw.len() - 1;
        raw.into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.named(
                    if i == outermost {
                        symbol.as_deref()
                    } else {
                        None
                    },
                    svma,
                )
            })
            .collect()
    }

    fn loader(&mut self, object: &Path) -> Option<&addr2line::Loader> {
        let current_exe = self.current_exe.as_deref();
        self.objects
            .entry(object.to_path_buf())
            .or_insert_with(|| {
                let open = if same_file(Some(object), current_exe) {
                    Path::new("/proc/self/exe")
                } else {
                    object
                };
                addr2line::Loader::new(open)
                    .map_err(|e| tracing::debug!(object = %object.display(), "no symbols: {e}"))
                    .ok()
            })
            .as_ref()
    }
}

fn same_file(a: Option<&Path>, b: Option<&Path>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a == b
                || matches!(
                    (a.canonicalize(), b.canonicalize()),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        _ => false,
    }
}

#[derive(Default)]
struct RawFrame {
    name: Option<String>,
    rust: bool,
    file: String,
    line: u32,
}

fn raw_frames(loader: &addr2line::Loader, svma: u64) -> Vec<RawFrame> {
    let mut out = Vec::new();
    let Ok(mut iter) = loader.find_frames(svma) else {
        return out;
    };
    while let Ok(Some(f)) = iter.next() {
        let (file, line) = f
            .location
            .map(|l| (l.file.unwrap_or("").to_string(), l.line.unwrap_or(0)))
            .unwrap_or_default();
        let name = f
            .function
            .as_ref()
            .and_then(|n| n.raw_name().ok())
            .map(|n| n.into_owned());
        let rust = f
            .function
            .as_ref()
            .is_some_and(|n| n.language == Some(gimli::DW_LANG_Rust));
        out.push(RawFrame {
            name,
            rust,
            file,
            line,
        });
    }
    out
}

impl RawFrame {
    /// Picks the best name: a DWARF linkage name demangles to a path; the
    /// outermost frame's symbol is exact; a bare Rust name gets its
    /// source file's module.
    fn named(self, symbol: Option<&str>, svma: u64) -> Frame {
        let frame = |function: String, system_name: String, naming| Frame {
            function,
            system_name,
            file: self.file.clone(),
            line: self.line,
            naming,
        };
        if let Some(raw) = &self.name {
            let demangled = names::demangle(raw);
            if names::is_qualified(&demangled) {
                return frame(demangled, raw.clone(), Naming::Linkage);
            }
        }
        if let Some(sym) = symbol {
            return frame(names::demangle(sym), sym.to_string(), Naming::Symbol);
        }
        match &self.name {
            Some(raw) if self.rust => match names::module_of(&self.file) {
                Some(module) => frame(format!("{module}::{raw}"), raw.clone(), Naming::SourcePath),
                None => frame(raw.clone(), raw.clone(), Naming::Bare),
            },
            Some(raw) => frame(raw.clone(), raw.clone(), Naming::Bare),
            None => {
                let hex = format!("{svma:#x}");
                frame(hex.clone(), hex, Naming::Address)
            }
        }
    }
}

fn address_frame(svma: u64) -> Frame {
    let hex = format!("{svma:#x}");
    Frame {
        function: hex.clone(),
        system_name: hex,
        file: String::new(),
        line: 0,
        naming: Naming::Address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_known_path() -> usize {
        std::hint::black_box(7)
    }

    /// The address of a function in this test binary, in the binary's own
    /// address space (what DWARF uses): the runtime address minus where the
    /// executable was loaded, found from /proc/self/maps.
    fn svma_of(addr: u64) -> (PathBuf, u64) {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let base = maps
            .lines()
            .filter(|l| l.ends_with(exe.to_str().unwrap()))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let range = f.next()?;
                let _perms = f.next()?;
                let offset = u64::from_str_radix(f.next()?, 16).ok()?;
                let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
                Some(start - offset)
            })
            .min()
            .unwrap();
        (exe, addr - base)
    }

    #[test]
    fn a_function_resolves_to_its_qualified_name_and_file() {
        let f: fn() -> usize = a_function_with_a_known_path;
        assert_eq!(f(), 7);
        let (exe, svma) = svma_of(f as usize as u64);
        let mut s = Symbolizer::new();
        let frames = s.frames(&exe, svma);
        let outer = frames.last().unwrap();
        assert_eq!(
            outer.function, "leakscope_pprof::symbolize::tests::a_function_with_a_known_path",
            "{frames:?}"
        );
        assert!(outer.file.ends_with("symbolize.rs"), "{outer:?}");
        assert!(outer.line > 0, "{outer:?}");
    }

    #[test]
    fn an_unreadable_object_gives_the_address() {
        let mut s = Symbolizer::new();
        let frames = s.frames(Path::new("/nonexistent/object"), 0x1234);
        assert_eq!(frames, vec![address_frame(0x1234)]);
    }
}
