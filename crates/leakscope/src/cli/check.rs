//! `leakscope check`: a CI gate on one run directory.

use std::path::PathBuf;
use std::process::ExitCode;

use bytesize::ByteSize;
use clap::Args;
use leakscope_analysis::{describe, Analysis, Axis, Verdict};

#[derive(Args)]
pub struct CheckArgs {
    /// The run directory to judge.
    pub run: PathBuf,
    /// Most heap a LEAK may add per request before the gate fails.
    #[arg(long, default_value = "1KiB", value_name = "SIZE")]
    pub max_heap_per_request: ByteSize,
    /// Most fds a LEAK may add per request.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    pub max_fds_per_request: f64,
    /// Most live tasks a LEAK may add per request.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    pub max_tasks_per_request: f64,
    /// Print the verdicts as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Breach {
    metric: String,
    per_request: Option<f64>,
    limit: f64,
    why: String,
}

/// Exit 0: no limit broken; 1: a LEAK broke one; 2: the run is unusable.
pub fn run(args: CheckArgs) -> ExitCode {
    let a = match leakscope_analysis::analyze(&args.run) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let breaches = breaches(&a, &args);
    if args.json {
        let metrics: Vec<_> = a
            .metrics
            .iter()
            .map(|m| {
                serde_json::json!({
                    "metric": m.id,
                    "verdict": m.verdict(),
                    "slope": m.slope,
                    "per": describe::per(a.axis),
                    "r2": m.r2,
                    "summary": describe::metric(m, a.axis),
                })
            })
            .collect();
        let out = serde_json::json!({
            "run": a.dir,
            "scenario": a.scenario(),
            "variant": a.variant(),
            "axis": a.axis,
            "window_requests": a.window_requests,
            "metrics": metrics,
            "breaches": breaches,
            "notes": a.notes,
            "pass": breaches.is_empty(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON values serialize")
        );
    } else {
        println!("{}", describe::heading(&a));
        for m in &a.metrics {
            let v = m
                .verdict()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "  {:<24} {:<12} {}",
                m.title,
                v,
                describe::metric(m, a.axis)
            );
        }
        let att = &a.attribution;
        if let Some(p) = att.fd_paths.first() {
            println!("  most-grown fd path: {} (+{:.0})", p.key, p.growth);
        }
        if let Some(t) = att.task_locations.first() {
            println!("  most-grown spawn site: {} (+{:.0})", t.key, t.growth);
        }
        // The biggest growth in the target's own code; the machinery's
        // (allocator, agent) is in the report's full table.
        let own = att
            .heap_sites
            .iter()
            .find_map(|h| h.own.and_then(|i| h.frames.get(i)).map(|f| (h, f)));
        if let Some((h, f)) = own {
            {
                println!(
                    "  most-grown allocation site: {} ({}:{}) +{}",
                    f.function,
                    f.file,
                    f.line,
                    describe::amount(h.growth, leakscope_analysis::Unit::Bytes)
                );
            }
        }
        for n in &a.notes {
            println!("  note: {n}");
        }
        if breaches.is_empty() {
            println!("pass: no LEAK breaks a limit");
        } else {
            for b in &breaches {
                println!("FAIL: {}", b.why);
            }
        }
    }
    if breaches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn breaches(a: &Analysis, args: &CheckArgs) -> Vec<Breach> {
    let limits = [
        ("heap", args.max_heap_per_request.as_u64() as f64),
        ("tasks", args.max_tasks_per_request),
        ("fds", args.max_fds_per_request),
    ];
    let mut out = Vec::new();
    for (id, limit) in limits {
        let Some(m) = a.metric(id) else { continue };
        if m.verdict() != Some(Verdict::Leak) {
            continue;
        }
        let slope = m.slope.map(|s| s.value);
        // Limits are per request; on a time axis there is no per-request
        // figure, so any LEAK of a limited metric fails the gate.
        let broken = match (a.axis, slope) {
            (Axis::Requests, Some(s)) => s > limit,
            _ => true,
        };
        if broken {
            out.push(Breach {
                metric: id.to_string(),
                per_request: slope.filter(|_| a.axis == Axis::Requests),
                limit,
                why: format!(
                    "{} {} (limit {} per request)",
                    m.title,
                    describe::metric(m, a.axis),
                    describe::amount(limit, m.unit)
                ),
            });
        }
    }
    out
}
