//! `Range: bytes=…` parsing and evaluation (RFC 9110 §14.1.2, §14.2).
//!
//! Hand-written rather than taken from the `headers` crate because its
//! `Range::satisfiable_ranges` drops a suffix range longer than the
//! representation (RFC 9110 §14.1.3 says the whole representation is
//! selected), accepts `first > last`, and matches the unit case-sensitively.
//! The distinctions below decide the status code, so they must be exact:
//!
//! * syntactically invalid  → the header is ignored and the client gets 200;
//! * valid but unsatisfiable → 416 with `Content-Range: bytes */LEN`;
//! * satisfiable            → 206, one part or `multipart/byteranges`.

use std::ops::Range;

/// Most ranges accepted in one header. More than this is a known
/// denial-of-service shape (RFC 9110 §17.15), so the header is ignored and the
/// whole representation is sent, as nginx does past `max_ranges`.
pub const MAX_RANGES: usize = 64;

/// What a `Range` header asks for, once checked against the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// No usable `Range` header: send the whole representation (200).
    Full,
    /// One or more satisfiable byte ranges, in the order the client gave
    /// after overlapping or adjacent ranges were coalesced.
    Partial(Vec<Range<u64>>),
    /// Valid syntax, but nothing in it overlaps the representation (416).
    Unsatisfiable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`
    From { first: u64, last: Option<u64> },
    /// `-suffix`
    Suffix(u64),
}

/// Evaluates a raw `Range` header value against a representation of `len`
/// bytes.
pub fn evaluate(header: &[u8], len: u64) -> RangeDecision {
    let Some(specs) = parse(header) else {
        return RangeDecision::Full;
    };
    let mut ranges: Vec<Range<u64>> = specs
        .into_iter()
        .filter_map(|spec| resolve(spec, len))
        .collect();
    if ranges.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    coalesce(&mut ranges);
    RangeDecision::Partial(ranges)
}

/// Parses `bytes=spec, spec, …`; `None` when the header is not valid syntax
/// (or has too many ranges), which callers must treat as "no Range header".
fn parse(header: &[u8]) -> Option<Vec<Spec>> {
    let text = std::str::from_utf8(header).ok()?;
    let (unit, set) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // RFC 9110 §5.6.1: empty list elements are allowed and ignored.
    for raw in set.split(',') {
        let raw = raw.trim_matches(|c| c == ' ' || c == '\t');
        if raw.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        let (first, last) = raw.split_once('-')?;
        let spec = if first.is_empty() {
            Spec::Suffix(digits(last)?)
        } else {
            let first = digits(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(digits(last)?)
            };
            if matches!(last, Some(last) if last < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return None;
    }
    Some(specs)
}

/// `1*DIGIT`, rejecting signs and whitespace that `str::parse` would allow or
/// that would overflow.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn resolve(spec: Spec, len: u64) -> Option<Range<u64>> {
    match spec {
        Spec::From { first, .. } if first >= len => None,
        Spec::From { first, last } => {
            let end = last.map_or(len, |last| last.saturating_add(1).min(len));
            Some(first..end)
        }
        // A zero-length suffix, or any suffix of an empty representation,
        // selects nothing (RFC 9110 §14.1.1).
        Spec::Suffix(0) => None,
        Spec::Suffix(_) if len == 0 => None,
        Spec::Suffix(n) => Some(len.saturating_sub(n)..len),
    }
}

/// Merges overlapping and adjacent ranges so a client cannot make us send the
/// same bytes many times (RFC 9110 §17.15). Order follows the first byte, which
/// is also what a client asking for disjoint ranges in ascending order expects.
fn coalesce(ranges: &mut Vec<Range<u64>>) {
    if ranges.len() < 2 {
        return;
    }
    let overlapping = {
        let mut sorted = ranges.clone();
        sorted.sort_by_key(|r| r.start);
        sorted.windows(2).any(|w| w[1].start <= w[0].end)
    };
    if !overlapping {
        // Disjoint ranges keep the client's order, as RFC 9110 §14.6 suggests.
        return;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    *ranges = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(h: &str, len: u64) -> RangeDecision {
        evaluate(h.as_bytes(), len)
    }

    fn partial(r: &[Range<u64>]) -> RangeDecision {
        RangeDecision::Partial(r.to_vec())
    }

    fn one(r: Range<u64>) -> RangeDecision {
        RangeDecision::Partial(vec![r])
    }

    #[test]
    fn single_ranges() {
        assert_eq!(eval("bytes=0-499", 1000), one(0..500));
        assert_eq!(eval("bytes=500-999", 1000), one(500..1000));
        assert_eq!(eval("bytes=500-", 1000), one(500..1000));
        assert_eq!(eval("bytes=-100", 1000), one(900..1000));
        assert_eq!(eval("bytes=0-0", 1000), one(0..1));
        assert_eq!(eval("BYTES=0-0", 1000), one(0..1));
    }

    #[test]
    fn clamps_to_length() {
        assert_eq!(eval("bytes=900-5000", 1000), one(900..1000));
        assert_eq!(eval("bytes=-5000", 1000), one(0..1000));
        assert_eq!(eval("bytes=0-18446744073709551615", 10), one(0..10));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(eval("bytes=1000-", 1000), RangeDecision::Unsatisfiable);
        assert_eq!(eval("bytes=1000-2000", 1000), RangeDecision::Unsatisfiable);
        assert_eq!(eval("bytes=-0", 1000), RangeDecision::Unsatisfiable);
        assert_eq!(eval("bytes=0-", 0), RangeDecision::Unsatisfiable);
        assert_eq!(eval("bytes=-5", 0), RangeDecision::Unsatisfiable);
        // One satisfiable member is enough.
        assert_eq!(eval("bytes=5000-,0-1", 1000), one(0..2));
    }

    #[test]
    fn invalid_syntax_is_ignored() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=abc",
            "bytes=5-1",
            "bytes=--5",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes= 1 - 2",
            "bytes=0x10-",
            "items=0-1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(eval(h, 1000), RangeDecision::Full, "{h:?}");
        }
        assert_eq!(evaluate(b"bytes=\xff-1", 1000), RangeDecision::Full);
    }

    #[test]
    fn multiple_ranges_and_coalescing() {
        assert_eq!(
            eval("bytes=0-9, 20-29,-5", 100),
            partial(&[0..10, 20..30, 95..100])
        );
        // Descending disjoint ranges keep the client's order.
        assert_eq!(eval("bytes=50-59,0-9", 100), partial(&[50..60, 0..10]));
        // Overlapping and adjacent ranges merge.
        assert_eq!(eval("bytes=0-9,5-14,15-19", 100), one(0..20));
        assert_eq!(eval("bytes=0-9,0-9,0-9", 100), one(0..10));
        // Empty list elements are allowed.
        assert_eq!(eval("bytes=,0-1,,", 100), one(0..2));
    }

    #[test]
    fn too_many_ranges_are_ignored() {
        let many = (0..=MAX_RANGES)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(eval(&format!("bytes={many}"), 10_000), RangeDecision::Full);
    }
}
