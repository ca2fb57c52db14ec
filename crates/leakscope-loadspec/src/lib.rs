//! The load patterns and their one-word command-line spellings.
//!
//! Each pattern is one way real clients make a download service leak: they
//! read everything, give up half way, read slowly, ask for a slice, or fetch
//! an archive. Spellings are short so a scenario's load fits on one line:
//! `full`, `abort:64KiB`, `slow:512KiB/s`, `range:0-1023`, `zip`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;

/// What each request does with the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Read the whole body; a short body (against Content-Length) fails.
    Full,
    /// Drop the connection after `after_bytes` of body: the client that
    /// gives up, which is what leaks fds and tasks in careless handlers.
    Abort { after_bytes: u64 },
    /// Read at most `bytes_per_sec` per connection, so the server's writes
    /// block on a full socket: what exposes unbounded buffering.
    Slow { bytes_per_sec: u64 },
    /// Ask for a byte range; anything but a 206 with exactly that many
    /// bytes fails.
    Range(ByteRange),
    /// Read a whole ZIP archive; one without its end-of-central-directory
    /// record (a truncated stream) fails.
    Zip,
}

/// An RFC 9110 byte range as a client asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, inclusive.
    Closed { first: u64, last: u64 },
    /// `first-`: to the end.
    From { first: u64 },
    /// `-n`: the last n bytes.
    Suffix { len: u64 },
}

impl ByteRange {
    pub fn header_value(&self) -> String {
        match *self {
            ByteRange::Closed { first, last } => format!("bytes={first}-{last}"),
            ByteRange::From { first } => format!("bytes={first}-"),
            ByteRange::Suffix { len } => format!("bytes=-{len}"),
        }
    }
}

/// How many requests run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Fixed(u32),
    /// Linearly from `from` to `to` over the load's duration: shows whether
    /// a resource follows concurrency (bounded) or requests (leaked).
    Ramp {
        from: u32,
        to: u32,
    },
}

impl Concurrency {
    /// The most workers this will ever need.
    pub fn max(&self) -> u32 {
        match *self {
            Concurrency::Fixed(n) => n,
            Concurrency::Ramp { from, to } => from.max(to),
        }
    }

    /// Workers wanted `elapsed` into a load of `total` length.
    pub fn at(&self, elapsed: Duration, total: Duration) -> u32 {
        match *self {
            Concurrency::Fixed(n) => n,
            Concurrency::Ramp { from, to } => {
                let f = if total.is_zero() {
                    1.0
                } else {
                    (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0)
                };
                let v = from as f64 + (to as f64 - from as f64) * f;
                (v.round() as u32).max(1)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("load spec {spec:?}: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

fn err(spec: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

fn size(spec: &str, text: &str) -> Result<u64, SpecError> {
    text.trim()
        .parse::<ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            err(
                spec,
                format!("{text:?} is not a size such as 65536 or 64KiB ({e})"),
            )
        })
}

fn number(spec: &str, text: &str) -> Result<u64, SpecError> {
    text.trim()
        .parse()
        .map_err(|_| err(spec, format!("{text:?} is not a whole number of bytes")))
}

impl FromStr for Pattern {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let need = |what: &str| {
            arg.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
                err(
                    spec,
                    format!("{name} needs {what}, e.g. {name}:{}", example(name)),
                )
            })
        };
        let pattern = match name {
            "full" | "zip" if arg.is_some() => {
                return Err(err(spec, format!("{name} takes no argument")))
            }
            "full" => Pattern::Full,
            "zip" => Pattern::Zip,
            "abort" => {
                let after_bytes = size(spec, need("a byte count")?)?;
                Pattern::Abort { after_bytes }
            }
            "slow" => {
                let a = need("a rate")?;
                let a = a.strip_suffix("/s").unwrap_or(a);
                let bytes_per_sec = size(spec, a)?;
                if bytes_per_sec == 0 {
                    return Err(err(spec, "a rate of 0 never finishes"));
                }
                Pattern::Slow { bytes_per_sec }
            }
            "range" => {
                let a = need("a range")?;
                let (first, last) = a
                    .split_once('-')
                    .ok_or_else(|| err(spec, "a range is FIRST-LAST, FIRST- or -SUFFIX"))?;
                let range = match (first.trim(), last.trim()) {
                    ("", "") => return Err(err(spec, "a range needs at least one end")),
                    ("", n) => ByteRange::Suffix {
                        len: number(spec, n)?,
                    },
                    (f, "") => ByteRange::From {
                        first: number(spec, f)?,
                    },
                    (f, l) => {
                        let (first, last) = (number(spec, f)?, number(spec, l)?);
                        if last < first {
                            return Err(err(spec, "the last byte comes before the first"));
                        }
                        ByteRange::Closed { first, last }
                    }
                };
                Pattern::Range(range)
            }
            other => {
                return Err(err(
                    spec,
                    format!("unknown pattern {other:?}; use full, abort:SIZE, slow:SIZE/s, range:A-B or zip"),
                ))
            }
        };
        Ok(pattern)
    }
}

fn example(name: &str) -> &'static str {
    match name {
        "abort" => "64KiB",
        "slow" => "512KiB/s",
        _ => "0-1023",
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Pattern::Full => f.write_str("full"),
            Pattern::Zip => f.write_str("zip"),
            Pattern::Abort { after_bytes } => write!(f, "abort:{after_bytes}"),
            Pattern::Slow { bytes_per_sec } => write!(f, "slow:{bytes_per_sec}/s"),
            Pattern::Range(r) => {
                let v = r.header_value();
                write!(f, "range:{}", v.trim_start_matches("bytes="))
            }
        }
    }
}

impl FromStr for Concurrency {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let positive = |t: &str| match t.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(err(
                spec,
                format!("{t:?} is not a concurrency of 1 or more"),
            )),
        };
        match spec.split_once("..") {
            Some((from, to)) => Ok(Concurrency::Ramp {
                from: positive(from)?,
                to: positive(to)?,
            }),
            None => Ok(Concurrency::Fixed(positive(spec)?)),
        }
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Concurrency::Fixed(n) => write!(f, "{n}"),
            Concurrency::Ramp { from, to } => write!(f, "{from}..{to}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_print_back() {
        for (text, want) in [
            ("full", Pattern::Full),
            ("zip", Pattern::Zip),
            ("abort:64KiB", Pattern::Abort { after_bytes: 65536 }),
            ("abort:65536", Pattern::Abort { after_bytes: 65536 }),
            (
                "slow:512KiB/s",
                Pattern::Slow {
                    bytes_per_sec: 524288,
                },
            ),
            (
                "slow:1000",
                Pattern::Slow {
                    bytes_per_sec: 1000,
                },
            ),
            (
                "range:0-1023",
                Pattern::Range(ByteRange::Closed {
                    first: 0,
                    last: 1023,
                }),
            ),
            ("range:100-", Pattern::Range(ByteRange::From { first: 100 })),
            ("range:-500", Pattern::Range(ByteRange::Suffix { len: 500 })),
        ] {
            let got: Pattern = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<Pattern>().unwrap(), want);
        }
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (text, needle) in [
            ("", "unknown pattern"),
            ("fast", "unknown pattern"),
            ("abort", "needs a byte count"),
            ("abort:lots", "not a size"),
            ("slow:0", "never finishes"),
            ("range:9-1", "before the first"),
            ("range:-", "at least one end"),
            ("range:5", "FIRST-LAST"),
            ("full:3", "takes no argument"),
        ] {
            let e = text.parse::<Pattern>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn concurrency_ramps_linearly_and_never_below_one() {
        let ramp: Concurrency = "1..9".parse().unwrap();
        let total = Duration::from_secs(8);
        assert_eq!(ramp.at(Duration::ZERO, total), 1);
        assert_eq!(ramp.at(Duration::from_secs(4), total), 5);
        assert_eq!(ramp.at(Duration::from_secs(20), total), 9);
        assert_eq!(ramp.max(), 9);
        let down: Concurrency = "4..1".parse().unwrap();
        assert_eq!(down.at(total, total), 1);
        assert_eq!("8".parse::<Concurrency>().unwrap(), Concurrency::Fixed(8));
        assert!("0".parse::<Concurrency>().is_err());
        assert!("x..3".parse::<Concurrency>().is_err());
    }
}
