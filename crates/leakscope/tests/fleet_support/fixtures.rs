//! Six hours of a fleet at 15 s, made here (never committed): each
//! instance is one of the shapes that fool the rules fleets alert on, or
//! one of the leaks they must catch.

use std::fmt::Write;

/// Seconds between points, as a scrape interval.
pub const STEP_S: i64 = 15;
/// Six hours of points.
pub const POINTS: i64 = 6 * 3600 / STEP_S + 1;

const MIB: f64 = 1024.0 * 1024.0;

/// What an instance is, and what the command must say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Pools fill after a deploy, then flatten: not a leak.
    WarmUp,
    /// A cache that fills and is evicted every 30 min: not a leak.
    Sawtooth,
    /// Traffic doubles twice; what is held tracks what is in flight.
    TrafficDoubling,
    /// One fd per 2,500 requests, with two quiet night hours in between.
    NightLeak,
    /// The same leak, with a restart half-way.
    RestartLeak,
    /// A leak where `process_max_fds` is 0 ("unlimited").
    NoFdLimit,
    /// Fds creep by the hour while no request is served.
    Idle,
    /// RSS leaks [`MEMLEAK_BYTES_PER_REQUEST`] per request under the
    /// night leak's traffic, fds flat: the slow memory leak a fleet meets
    /// most, still far below any static threshold after 6 h.
    MemLeak,
}

/// Appended in order: each instance's noise seed is its place here, so a
/// new instance goes last and leaves the others' data as it was.
pub const FLEET: [(&str, Shape); 8] = [
    ("warmup:9100", Shape::WarmUp),
    ("sawtooth:9100", Shape::Sawtooth),
    ("traffic:9100", Shape::TrafficDoubling),
    ("nightleak:9100", Shape::NightLeak),
    ("restart:9100", Shape::RestartLeak),
    ("nolimit:9100", Shape::NoFdLimit),
    ("idle:9100", Shape::Idle),
    ("memleak:9100", Shape::MemLeak),
];

/// What `memleak` keeps per request: about one small record never freed
/// (a map entry with its key and a boxed value). Over the 6 h's 288,000
/// requests that is some 35 MiB, from 40 MiB to about 75 MiB, 59% of the
/// 128 MiB limit: a leak no static threshold has reached yet.
pub const MEMLEAK_BYTES_PER_REQUEST: f64 = 128.0;

/// One scrape of one instance.
pub struct Scrape {
    pub t: i64,
    pub fds: f64,
    pub rss: f64,
    pub requests: f64,
    pub start: f64,
    pub max_fds: f64,
}

/// A deterministic xorshift: the same fixture every run, with noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Requests per second at hour `h` of the range.
fn rps(shape: Shape, h: f64) -> f64 {
    match shape {
        Shape::Idle => 0.0,
        Shape::NightLeak | Shape::MemLeak if (2.0..4.0).contains(&h) => 0.0,
        Shape::TrafficDoubling => 10.0 * 2f64.powi((h / 2.0).floor().min(2.0) as i32),
        _ => 20.0,
    }
}

/// The instance's scrapes from `t0` (Unix seconds).
pub fn scrapes(shape: Shape, seed: u64, t0: i64) -> Vec<Scrape> {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let (mut counter, mut served, mut start) = (0.0f64, 0.0f64, (t0 - 60) as f64);
    let mut out = Vec::new();
    for k in 0..POINTS {
        let t = t0 + k * STEP_S;
        let h = (k * STEP_S) as f64 / 3600.0;
        if shape == Shape::RestartLeak && k == POINTS / 2 {
            (counter, served, start) = (0.0, 0.0, (t - 5) as f64);
        }
        let r = rps(shape, h);
        let n = if r > 0.0 {
            (r * STEP_S as f64 * (0.9 + 0.2 * noise.next())).round()
        } else {
            0.0
        };
        counter += n;
        served += n;
        let jitter = (noise.next() * 4.0).floor();
        let rss_jitter = (noise.next() - 0.5) * MIB;
        let (fds, rss) = match shape {
            Shape::WarmUp => {
                let fill = 1.0 - (-served / 30_000.0).exp();
                (25.0 + 75.0 * fill, 40.0 * MIB + 60.0 * MIB * fill)
            }
            Shape::Sawtooth => (
                30.0,
                60.0 * MIB + 24.0 * MIB * (served % 36_000.0) / 36_000.0,
            ),
            Shape::TrafficDoubling => (20.0 + 0.5 * r, 50.0 * MIB + r * MIB),
            Shape::NightLeak | Shape::RestartLeak | Shape::NoFdLimit => {
                (30.0 + (served / 2_500.0).floor(), 80.0 * MIB)
            }
            Shape::Idle => (30.0 + (h * 6.0).floor(), 70.0 * MIB),
            Shape::MemLeak => (30.0, 40.0 * MIB + served * MEMLEAK_BYTES_PER_REQUEST),
        };
        out.push(Scrape {
            t,
            fds: fds.round() + jitter,
            rss: (rss + rss_jitter).round(),
            requests: counter,
            start,
            max_fds: if shape == Shape::NoFdLimit {
                0.0
            } else {
                1024.0
            },
        });
    }
    out
}

/// Every instance's scrapes.
pub fn fleet(t0: i64) -> Vec<(&'static str, Shape, Vec<Scrape>)> {
    FLEET
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| (*name, *shape, scrapes(*shape, i as u64 + 1, t0)))
        .collect()
}

type Field = fn(&Scrape) -> f64;

const FAMILIES: [(&str, &str, &str, Field); 5] = [
    ("process_open_fds", "gauge", "process_open_fds", |s| s.fds),
    ("process_max_fds", "gauge", "process_max_fds", |s| s.max_fds),
    (
        "process_resident_memory_bytes",
        "gauge",
        "process_resident_memory_bytes",
        |s| s.rss,
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "process_start_time_seconds",
        |s| s.start,
    ),
    ("http_requests", "counter", "http_requests_total", |s| {
        s.requests
    }),
];

/// OpenMetrics text with timestamps in seconds, as
/// `promtool tsdb create-blocks-from openmetrics` reads it: each family's
/// samples together, each series in time order, `# EOF` last.
pub fn openmetrics(fleet: &[(&str, Shape, Vec<Scrape>)]) -> String {
    exposition(fleet, true)
}

/// The Prometheus text format (timestamps in milliseconds), as
/// VictoriaMetrics' `/api/v1/import/prometheus` reads it.
pub fn prometheus_text(fleet: &[(&str, Shape, Vec<Scrape>)]) -> String {
    exposition(fleet, false)
}

fn exposition(fleet: &[(&str, Shape, Vec<Scrape>)], open: bool) -> String {
    let mut out = String::new();
    for (family, kind, sample, field) in FAMILIES {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for (name, _, scrapes) in fleet {
            for s in scrapes {
                let ts = if open {
                    s.t.to_string()
                } else {
                    (s.t * 1000).to_string()
                };
                let _ = writeln!(
                    out,
                    "{sample}{{instance=\"{name}\",job=\"fixture\"}} {} {ts}",
                    field(s)
                );
            }
        }
    }
    if open {
        out.push_str("# EOF\n");
    }
    out
}

/// The memory request the side-by-side rules compare against: a constant
/// in the rule (the fixtures carry no request series), about what the
/// replicas use at rest (40 to 100 MiB), as requests are usually set.
pub const MEMORY_REQUEST_BYTES: f64 = 64.0 * MIB;

/// The container memory limit, twice the request (a common ratio); the
/// side-by-side test gives each instance a constant
/// `container_spec_memory_limit_bytes` series of this value.
pub const MEMORY_LIMIT_BYTES: f64 = 128.0 * MIB;

/// The truth the fixture was made with: does it leak fds per request? The
/// idle replica's fds creep with no request served; that is no
/// per-request leak, and the command must say NO LOAD.
pub fn leaks_fds(shape: Shape) -> bool {
    matches!(
        shape,
        Shape::NightLeak | Shape::RestartLeak | Shape::NoFdLimit
    )
}

/// Does it leak memory? Only `memleak`; elsewhere RSS warms up and
/// flattens, saws, follows traffic, or stays flat.
pub fn leaks_memory(shape: Shape) -> bool {
    shape == Shape::MemLeak
}

/// The truth in a few words, for a table.
pub fn truth(shape: Shape) -> &'static str {
    match shape {
        Shape::WarmUp => "no leak: pools fill after a deploy, then flatten",
        Shape::Sawtooth => "no leak: a cache filled and evicted every 30 min",
        Shape::TrafficDoubling => "no leak: traffic doubles twice",
        Shape::NightLeak => "fd leak, 1 per 2,500 requests, quiet night",
        Shape::RestartLeak => "fd leak, restarted half-way",
        Shape::NoFdLimit => "fd leak, `process_max_fds` 0",
        Shape::Idle => "no per-request leak: fds creep, no requests",
        Shape::MemLeak => "memory leak, 128 B per request, quiet night",
    }
}
