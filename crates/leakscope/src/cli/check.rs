//! `leakscope check`: a CI gate on one run directory.

use std::path::PathBuf;
use std::process::ExitCode;

use bytesize::ByteSize;
use clap::Args;
use std::io::Write;

use leakscope_analysis::{describe, gate, Analysis};
use leakscope_rundir::{Meta, UnixMs};

#[derive(Args)]
pub struct CheckArgs {
    /// The run directory to judge.
    pub run: PathBuf,
    /// Most heap a LEAK may add per request before the gate fails. A LEAK
    /// already means growth in step with the work that stayed once idle,
    /// so by default any of it fails; raise this to tolerate a known one.
    #[arg(long, default_value = "0", value_name = "SIZE")]
    pub max_heap_per_request: ByteSize,
    /// Most RSS a LEAK may add per request; gated only when the run has no
    /// heap figures (no agent), since RSS adds allocator retention to them.
    #[arg(long, default_value = "0", value_name = "SIZE")]
    pub max_rss_per_request: ByteSize,
    /// Most fds a LEAK may add per request.
    #[arg(long, default_value_t = 0.0, value_name = "N", value_parser = limit)]
    pub max_fds_per_request: f64,
    /// Most live tasks a LEAK may add per request.
    #[arg(long, default_value_t = 0.0, value_name = "N", value_parser = limit)]
    pub max_tasks_per_request: f64,
    /// Let INCONCLUSIVE on a gated metric pass (it fails by default: a
    /// verdict that could not be reached is not a pass).
    #[arg(long)]
    pub allow_inconclusive: bool,
    /// Print the verdicts as JSON (leakscope_analysis::gate::CheckReport).
    #[arg(long)]
    pub json: bool,
}

/// A per-request limit: a finite, non-negative number. NaN would compare
/// false against every slope and pass every leak.
fn limit(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a finite number ≥ 0"));
    }
    Ok(v)
}

/// Exit 0: usable and no limit broken; 1: a limit broken; 2: the run is
/// unreadable or unusable.
pub fn run(args: CheckArgs) -> ExitCode {
    let a = match leakscope_analysis::analyze(&args.run) {
        Ok(a) => a,
        Err(e) => {
            tell!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let limits = gate::Limits {
        heap: args.max_heap_per_request.as_u64() as f64,
        rss: args.max_rss_per_request.as_u64() as f64,
        fds: args.max_fds_per_request,
        tasks: args.max_tasks_per_request,
        allow_inconclusive: args.allow_inconclusive,
    };
    let report = gate::check(&a, &limits);
    let printed = if args.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|j| writeln!(std::io::stdout(), "{j}"))
    } else {
        print_text(&a, &report)
    };
    // A closed pipe (`check RUN | head -1`) is the reader's choice, not an
    // error of the check: the exit status still says what it found.
    if let Err(e) = printed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tell!("error: writing the report: {e}");
            return ExitCode::from(2);
        }
    }
    if !report.usable {
        ExitCode::from(2)
    } else if report.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// When the recording ran and how the target ended, in the words the
/// report uses: a reader sets the time beside the target's logs.
fn recorded(meta: &Meta) -> String {
    let span = match meta.recorded_secs() {
        Some(s) => format!("for {s:.1} s"),
        None => "unfinished".into(),
    };
    format!(
        "recorded: {} {span}; target: {}",
        UnixMs(meta.started_unix_ms),
        meta.target_end_text()
    )
}

fn print_text(a: &Analysis, r: &gate::CheckReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", describe::heading(a))?;
    writeln!(out, "  {}", recorded(&a.meta))?;
    writeln!(out, "  work axis: {} ({})", a.axis.name(), a.axis.per())?;
    for m in &r.metrics {
        let v = m
            .verdict
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        writeln!(out, "  {:<24} {:<12} {}", m.title, v, m.summary)?;
        if let Some(f) = &m.forecast {
            writeln!(out, "  {:<24} {:<12} forecast: {f}", "", "")?;
        }
        if let Some(x) = &m.exhausted {
            writeln!(out, "  {:<24} {:<12} {x}", "", "")?;
        }
    }
    let att = &a.attribution;
    if let Some(p) = att.fd_paths.first() {
        writeln!(out, "  most-grown fd path: {} (+{:.0})", p.key, p.growth)?;
    }
    if let Some(t) = att.task_locations.first() {
        writeln!(out, "  most-grown spawn site: {} (+{:.0})", t.key, t.growth)?;
    }
    if let Some((site, g)) = att
        .parked
        .first()
        .and_then(|p| p.groups.first().map(|g| (p, g)))
    {
        writeln!(
            out,
            "  parked: {} of its {} tasks at {}",
            g.count,
            site.tasks,
            g.parked_at()
        )?;
    }
    // The biggest growth in the target's own code; the machinery's
    // (allocator, agent) is in the report's full table.
    if let Some(site) = &r.allocation_site {
        writeln!(
            out,
            "  most-grown allocation site: {} ({}:{}) +{}",
            site.function,
            site.file,
            site.line,
            describe::amount(site.growth_bytes, leakscope_analysis::Unit::Bytes)
        )?;
    }
    for n in &r.notes {
        writeln!(out, "  note: {n}")?;
    }
    for u in &r.unchecked {
        writeln!(out, "  not checked: {}: {}", u.metric, u.why)?;
    }
    if !r.usable {
        for why in &r.unusable {
            writeln!(out, "UNUSABLE: {why}")?;
        }
        return Ok(());
    }
    if r.breaches.is_empty() {
        writeln!(out, "pass: no limit broken")?;
    }
    for b in &r.breaches {
        writeln!(out, "FAIL: {}", b.why)?;
    }
    Ok(())
}
