//! Sampled stacks of addresses → a symbolized pprof `Profile`, with the
//! allocation machinery cut from each stack's leaf end.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pprof_util::StackProfile;

use crate::names;
use crate::proto;
use crate::symbolize::{Frame, Naming, Symbolizer};

/// What symbolizing one profile took, for the profile's comments and the
/// caller's logs.
#[derive(Debug, Clone, Default)]
pub struct BuildStats {
    pub samples: usize,
    /// Distinct addresses symbolized.
    pub addresses: usize,
    /// Functions over all addresses' inline chains, by how each was named.
    pub frames_by_naming: Vec<(Naming, usize)>,
    /// Machinery frames cut from leaf ends, over all samples.
    pub trimmed: usize,
    pub elapsed: Duration,
}

/// The heap profile `go tool pprof` reads: one `inuse_space` value per
/// sample, `period` the sampling interval in bytes.
pub fn heap_profile(stacks: &StackProfile, period: Option<u64>) -> (proto::Profile, BuildStats) {
    let started = Instant::now();
    let mut b = Builder::new(stacks);
    let space = b.value_type("inuse_space", "bytes");
    b.profile.sample_type = vec![space];
    b.profile.default_sample_type = space.r#type;
    b.profile.period_type = Some(b.value_type("space", "bytes"));
    b.profile.period = period.and_then(|p| i64::try_from(p).ok()).unwrap_or(0);
    b.profile.time_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    for (stack, _annotation) in stacks.iter() {
        let value = stack.weight.trunc();
        // Weights are unbiased byte counts: finite and far below 2^63.
        let value = if value.is_finite() { value as i64 } else { 0 };
        let location_id = b.locations_of(&stack.addrs);
        b.profile.sample.push(proto::Sample {
            location_id,
            value: vec![value],
            label: Vec::new(),
        });
    }
    let mut stats = b.stats();
    stats.elapsed = started.elapsed();
    b.comment(&stats);
    (b.finish(), stats)
}

struct Builder<'a> {
    stacks: &'a StackProfile,
    symbolizer: Symbolizer,
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    /// Runtime address (return address − 1) → (mapping index, inline chain).
    resolved: HashMap<u64, (Option<usize>, Vec<Frame>)>,
    /// (address, frames skipped from the inner end) → location id.
    locations: HashMap<(u64, usize), u64>,
    functions: HashMap<(String, String, String), u64>,
    trimmed: usize,
}

impl<'a> Builder<'a> {
    fn new(stacks: &'a StackProfile) -> Self {
        let mut b = Builder {
            stacks,
            symbolizer: Symbolizer::new(),
            profile: proto::Profile::default(),
            strings: HashMap::new(),
            resolved: HashMap::new(),
            locations: HashMap::new(),
            functions: HashMap::new(),
            trimmed: 0,
        };
        b.string("");
        b.mappings();
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(ty),
            unit: self.string(unit),
        }
    }

    fn mappings(&mut self) {
        for (i, m) in self.stacks.mappings.iter().enumerate() {
            let filename = self.string(&m.pathname.to_string_lossy());
            let build_id = match &m.build_id {
                Some(id) => self.string(&id.to_string()),
                None => 0,
            };
            self.profile.mapping.push(proto::Mapping {
                id: i as u64 + 1,
                memory_start: m.memory_start as u64,
                memory_limit: m.memory_end as u64,
                file_offset: m.file_offset,
                filename,
                build_id,
                ..Default::default()
            });
        }
    }

    /// The sample's location ids, leaf first, after the leaf-end cut.
    /// `addrs` is root first, as jemalloc_pprof parses it.
    fn locations_of(&mut self, addrs: &[usize]) -> Vec<u64> {
        // (stack entry, address, index in its inline chain), leaf first.
        let mut chain: Vec<(usize, u64, usize)> = Vec::new();
        for (entry, &addr) in addrs.iter().rev().enumerate() {
            // A return address is one past its call; the call is what
            // belongs to the caller's line.
            let pc = (addr as u64).saturating_sub(1);
            let depth = self.resolve(pc).1.len();
            chain.extend((0..depth).map(|i| (entry, pc, i)));
        }
        let cut = chain
            .iter()
            .take_while(|(_, pc, i)| {
                let f = &self.resolved[pc].1[*i];
                names::machinery(&f.function, &f.file).is_some()
            })
            .count();
        // A stack that is machinery through and through (jemalloc's own
        // threads) keeps every frame rather than vanish.
        let cut = if cut == chain.len() { 0 } else { cut };
        self.trimmed += cut;
        let mut ids = Vec::new();
        let mut j = cut;
        while j < chain.len() {
            let (entry, pc, first) = chain[j];
            let len = chain[j..].iter().take_while(|c| c.0 == entry).count();
            ids.push(self.location(pc, first));
            j += len;
        }
        ids
    }

    fn resolve(&mut self, pc: u64) -> &(Option<usize>, Vec<Frame>) {
        if !self.resolved.contains_key(&pc) {
            let mapping = self
                .stacks
                .mappings
                .iter()
                .position(|m| m.memory_start as u64 <= pc && pc < m.memory_end as u64);
            let frames = match mapping.map(|i| &self.stacks.mappings[i]) {
                Some(m) => {
                    // memory_offset is the segment's virtual address in the
                    // file, so this is the address DWARF speaks of.
                    let svma = pc - m.memory_start as u64 + m.memory_offset as u64;
                    self.symbolizer.frames(&m.pathname, svma)
                }
                None => self.symbolizer.frames(std::path::Path::new(""), pc),
            };
            self.resolved.insert(pc, (mapping, frames));
        }
        &self.resolved[&pc]
    }

    /// The location for `pc` with its inline chain from `first` outwards.
    fn location(&mut self, pc: u64, first: usize) -> u64 {
        if let Some(&id) = self.locations.get(&(pc, first)) {
            return id;
        }
        let (mapping, frames) = self.resolved[&pc].clone();
        let frames = &frames[first..];
        let mut line = Vec::with_capacity(frames.len());
        // An address nothing could name gets no line: pprof then shows it
        // by its mapping, or symbolizes it from the file when it can (a
        // stripped libc's internal functions).
        for f in frames.iter().filter(|f| f.naming != Naming::Address) {
            line.push(proto::Line {
                function_id: self.function(f),
                line: i64::from(f.line),
                column: 0,
            });
        }
        if let Some(m) = mapping.and_then(|i| self.profile.mapping.get_mut(i)) {
            let named = frames.iter().any(|f| f.naming != Naming::Address);
            m.has_functions |= named;
            m.has_filenames |= frames.iter().any(|f| !f.file.is_empty());
            m.has_line_numbers |= frames.iter().any(|f| f.line > 0);
            m.has_inline_frames |= frames.len() > 1;
        }
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(proto::Location {
            id,
            mapping_id: mapping.map_or(0, |i| i as u64 + 1),
            address: pc,
            line,
            is_folded: false,
        });
        self.locations.insert((pc, first), id);
        id
    }

    fn function(&mut self, f: &Frame) -> u64 {
        let key = (f.function.clone(), f.system_name.clone(), f.file.clone());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(&f.function),
            system_name: self.string(&f.system_name),
            filename: self.string(&f.file),
            start_line: 0,
        };
        self.profile.function.push(function);
        self.functions.insert(key, id);
        id
    }

    fn stats(&self) -> BuildStats {
        let frames_by_naming = Naming::ALL
            .iter()
            .map(|n| {
                let count = self
                    .resolved
                    .values()
                    .flat_map(|(_, f)| f)
                    .filter(|f| f.naming == *n)
                    .count();
                (*n, count)
            })
            .filter(|(_, c)| *c > 0)
            .collect();
        BuildStats {
            samples: self.profile.sample.len(),
            addresses: self.resolved.len(),
            frames_by_naming,
            trimmed: self.trimmed,
            elapsed: Duration::ZERO,
        }
    }

    /// Says in the profile itself how it was symbolized (`go tool pprof
    /// -comments`), and what a reader can do about approximate names.
    fn comment(&mut self, s: &BuildStats) {
        let mut lines = vec![format!(
            "symbolized in-process by leakscope: {} addresses, {} samples, in {} ms",
            s.addresses,
            s.samples,
            s.elapsed.as_millis()
        )];
        lines.push(
            "allocator, allocator-shim and std allocation frames are cut from each stack's leaf \
             end, so flat bytes belong to the function that asked for the memory"
                .to_string(),
        );
        let from_path = s
            .frames_by_naming
            .iter()
            .find(|(n, _)| *n == Naming::SourcePath)
            .map_or(0, |(_, c)| *c);
        if from_path > 0 {
            lines.push(format!(
                "{from_path} inlined frames had only a bare name in DWARF (debug = \
                 \"line-tables-only\"); their module comes from their source path. Build with \
                 debug = \"limited\" for exact paths"
            ));
        }
        for l in lines {
            let i = self.string(&l);
            self.profile.comment.push(i);
        }
    }

    fn finish(self) -> proto::Profile {
        self.profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pprof_util::{Mapping, WeightedStack};

    #[inline(never)]
    fn asks_for_memory() -> Vec<u8> {
        std::hint::black_box(vec![1u8; 64])
    }

    /// This test binary's mappings from /proc/self/maps, as jemalloc_pprof
    /// builds them (memory_offset = the segment's address in the file's
    /// own address space).
    fn own_mappings() -> Vec<Mapping> {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let rows: Vec<(usize, usize, usize)> = maps
            .lines()
            .filter(|l| l.ends_with(exe.to_str().unwrap()))
            .map(|l| {
                let mut f = l.split_whitespace();
                let (s, e) = f.next().unwrap().split_once('-').unwrap();
                let _perms = f.next();
                let off = usize::from_str_radix(f.next().unwrap(), 16).unwrap();
                let hex = |x| usize::from_str_radix(x, 16).unwrap();
                (hex(s), hex(e), off)
            })
            .collect();
        let bias = rows.iter().map(|(s, _, o)| s - o).min().unwrap();
        rows.iter()
            .map(|&(s, e, o)| Mapping {
                memory_start: s,
                memory_end: e,
                memory_offset: s - bias,
                file_offset: o as u64,
                pathname: exe.clone(),
                build_id: None,
            })
            .collect()
    }

    #[test]
    fn a_stack_of_real_addresses_reads_back_with_qualified_names_leaf_first() {
        assert_eq!(asks_for_memory().len(), 64);
        let leaf = asks_for_memory as fn() -> Vec<u8> as usize;
        let root = names::demangle as fn(&str) -> String as usize;
        let mut stacks = StackProfile::default();
        for m in own_mappings() {
            stacks.push_mapping(m);
        }
        // Root first, return addresses (one past a call).
        stacks.push_stack(
            WeightedStack {
                addrs: vec![root + 1, leaf + 1],
                weight: 4096.0,
            },
            None,
        );
        let (profile, stats) = heap_profile(&stacks, Some(512 << 10));
        assert_eq!(stats.samples, 1);
        assert_eq!(profile.period, 512 << 10);
        let back = crate::decode(&crate::encode_gzip(&profile), 1 << 20).unwrap();
        let got = crate::stacks(&back, "inuse_space");
        let names: Vec<&str> = got[0].0.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "leakscope_pprof::build::tests::asks_for_memory",
                "leakscope_pprof::names::demangle"
            ],
            "{got:?}"
        );
        assert_eq!(got[0].1, 4096);
        assert!(got[0].0[0].file.ends_with("build.rs"), "{got:?}");
        assert_eq!(
            crate::folded(&back, "inuse_space"),
            ["leakscope_pprof::names::demangle;leakscope_pprof::build::tests::asks_for_memory 4096"]
        );
    }
}
