//! Heap profiles that read right in `go tool pprof`.
//!
//! jemalloc samples allocations as stacks of return addresses. This crate
//! turns them into a pprof profile whose every frame, inlined ones
//! included, is a qualified Rust path with file and line, and whose stacks
//! start at the function that asked for the memory: jemalloc's sampler, the
//! allocator shims and the standard library's allocation paths are cut from
//! the leaf end, as jeprof and Go's pprof cut their allocators. It also
//! reads profiles back (bounded), for the sidecar's diff.

mod build;
pub(crate) mod names;
pub mod proto;
pub(crate) mod symbolize;

use std::io::{Read, Write};

use prost::Message;

pub use build::{heap_profile, BuildStats};
pub use names::{machinery, Machinery};
pub use symbolize::{Frame, Naming, Symbolizer};

#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    #[error("more than {limit} bytes once decompressed")]
    TooLarge { limit: u64 },
    #[error("not a pprof profile: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The gzipped protobuf `go tool pprof` reads.
pub fn encode_gzip(profile: &Profile) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&profile.encode_to_vec());
    gz.finish().unwrap_or_default()
}

/// Reads a profile, gzipped or not, refusing one that decompresses past
/// `limit` bytes: a small file must not be able to take the reader's memory.
pub fn decode(bytes: &[u8], limit: u64) -> Result<Profile, PprofError> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(PprofError::Gzip)?;
        if out.len() as u64 > limit {
            return Err(PprofError::TooLarge { limit });
        }
        out
    } else if bytes.len() as u64 > limit {
        return Err(PprofError::TooLarge { limit });
    } else {
        bytes.to_vec()
    };
    Ok(Profile::decode(&raw[..])?)
}

pub use proto::Profile;

/// One frame of a decoded profile's stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct StackFrame {
    pub function: String,
    pub file: String,
    pub line: i64,
}

/// Each sample's stack (leaf first, inlined frames expanded) and its value
/// of the sample type named `sample_type` (the last one if absent).
pub fn stacks(p: &Profile, sample_type: &str) -> Vec<(Vec<StackFrame>, i64)> {
    let s = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .cloned()
            .unwrap_or_default()
    };
    let index = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == sample_type)
        .unwrap_or(p.sample_type.len().saturating_sub(1));
    let functions: std::collections::HashMap<u64, &proto::Function> =
        p.function.iter().map(|f| (f.id, f)).collect();
    let locations: std::collections::HashMap<u64, Vec<StackFrame>> = p
        .location
        .iter()
        .map(|l| {
            let mut frames: Vec<StackFrame> = l
                .line
                .iter()
                .map(|line| match functions.get(&line.function_id) {
                    Some(f) => StackFrame {
                        function: s(f.name),
                        file: s(f.filename),
                        line: line.line,
                    },
                    None => hex_frame(l.address),
                })
                .collect();
            if frames.is_empty() {
                frames.push(hex_frame(l.address));
            }
            (l.id, frames)
        })
        .collect();
    p.sample
        .iter()
        .filter_map(|sample| {
            let v = *sample.value.get(index)?;
            let stack = sample
                .location_id
                .iter()
                .flat_map(|id| locations.get(id).cloned().unwrap_or_default())
                .collect();
            Some((stack, v))
        })
        .collect()
}

fn hex_frame(address: u64) -> StackFrame {
    StackFrame {
        function: format!("{address:#x}"),
        file: String::new(),
        line: 0,
    }
}

/// Folded stacks (`root;…;leaf value`, one line per distinct stack, sorted)
/// for inferno's flamegraph: the same names `-top` shows.
pub fn folded(p: &Profile, sample_type: &str) -> Vec<String> {
    let mut sums: std::collections::BTreeMap<String, i64> = Default::default();
    for (stack, v) in stacks(p, sample_type) {
        let key = stack
            .iter()
            .rev()
            .map(|f| f.function.replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        // Values come from a file: a crafted one must not overflow the sum.
        let sum = sums.entry(key).or_default();
        *sum = sum.saturating_add(v);
    }
    sums.into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_a_bomb_and_reads_what_it_wrote() {
        let p = Profile {
            string_table: vec![String::new(), "x".repeat(1 << 20)],
            ..Default::default()
        };
        let gz = encode_gzip(&p);
        assert!(gz.len() < 10_000, "{}", gz.len());
        assert!(matches!(
            decode(&gz, 1 << 16),
            Err(PprofError::TooLarge { limit: 65536 })
        ));
        assert_eq!(decode(&gz, 1 << 21).unwrap(), p);
        assert!(matches!(
            decode(b"\x08\xff", 100),
            Err(PprofError::Decode(_))
        ));
    }
}
