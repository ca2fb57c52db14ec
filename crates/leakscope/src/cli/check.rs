//! `leakscope check`: a CI gate on one run directory.

use std::path::PathBuf;
use std::process::ExitCode;

use bytesize::ByteSize;
use clap::Args;
use std::io::Write;

use leakscope_analysis::{describe, gate, Analysis, Gate, MetricDef, MetricId, Unit, METRICS};
use leakscope_rundir::{Meta, UnixMs};
use std::collections::BTreeMap;

#[derive(Args)]
pub struct CheckArgs {
    /// The run directory to judge.
    pub run: PathBuf,
    /// `--max-METRIC-per-request`, one per gated metric of the table.
    #[command(flatten)]
    pub limits: GateFlags,
    /// Let INCONCLUSIVE on a gated metric pass (it fails by default: a
    /// verdict that could not be reached is not a pass).
    #[arg(long)]
    pub allow_inconclusive: bool,
    /// Print the verdicts as JSON (leakscope_analysis::gate::CheckReport,
    /// described by docs/check-json.schema.json).
    #[arg(long)]
    pub json: bool,
    /// METRIC=AMOUNT (repeatable): the run must rule out leaks above
    /// AMOUNT per unit of work of this metric (rss=1KiB, fds=0.01); a STABLE
    /// or BOUNDED verdict that cannot reads INCONCLUSIVE, with how much
    /// more work would reach it.
    #[arg(long, value_name = "METRIC=AMOUNT", value_parser = sensitivity)]
    pub sensitivity: Vec<(MetricId, f64)>,
}

/// `check`'s limit flags, made from the metric table
/// ([`leakscope_analysis::Gate`]): a metric gains its flag with its row.
/// Each defaults to 0, so any LEAK fails: a LEAK already means growth in
/// step with the work that stayed once idle; raise a limit to tolerate a
/// known one.
pub struct GateFlags(BTreeMap<MetricId, f64>);

fn gates() -> impl Iterator<Item = (&'static MetricDef, Gate)> {
    METRICS.iter().filter_map(|d| d.gate.map(|g| (d, g)))
}

impl clap::FromArgMatches for GateFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(
            gates()
                .map(|(d, g)| (d.id, m.get_one::<f64>(g.flag).copied().unwrap_or(0.0)))
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for GateFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        gates().fold(cmd, |cmd, (d, g)| {
            let unit = d.unit;
            let (value_name, kind) = match unit {
                Unit::Bytes => ("SIZE", "bytes, such as 1KiB"),
                _ => ("N", "a number"),
            };
            let mut help = format!("Most {} a LEAK may add per request ({kind})", d.title);
            if let Some(other) = g.unless {
                help += &format!(
                    "; gated only when the run has no {} figures",
                    other.def().title
                );
            }
            cmd.arg(
                clap::Arg::new(g.flag)
                    .long(g.flag)
                    .value_name(value_name)
                    .default_value("0")
                    .help(help)
                    .value_parser(move |s: &str| limit(unit, s)),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `rss=1KiB`: a metric of the table and an amount in its unit.
fn sensitivity(s: &str) -> Result<(MetricId, f64), String> {
    let (name, amount) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected METRIC=AMOUNT, such as rss=1KiB"))?;
    let def = METRICS
        .iter()
        .find(|d| d.id.as_str() == name.trim() && !d.rate)
        .ok_or_else(|| {
            let names: Vec<&str> = METRICS
                .iter()
                .filter(|d| !d.rate)
                .map(|d| d.id.as_str())
                .collect();
            format!(
                "{name:?} is not a metric with a verdict; one of {}",
                names.join(", ")
            )
        })?;
    let v = limit(def.unit, amount.trim())?;
    if v <= 0.0 {
        return Err(format!("{s:?}: the amount must be above 0"));
    }
    Ok((def.id, v))
}

/// A per-request limit in the metric's unit: a finite, non-negative
/// number, or a size for bytes. NaN would compare false against every
/// slope and pass every leak.
fn limit(unit: Unit, s: &str) -> Result<f64, String> {
    if unit == Unit::Bytes {
        return s
            .parse::<ByteSize>()
            .map(|b| b.as_u64() as f64)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a finite number ≥ 0"));
    }
    Ok(v)
}

/// Exit 0: usable and no limit broken; 1: a limit broken; 2: the run is
/// unreadable or unusable.
pub fn run(args: CheckArgs) -> ExitCode {
    let mut a = match leakscope_analysis::analyze(&args.run) {
        Ok(a) => a,
        Err(e) => {
            tell!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let wanted: BTreeMap<MetricId, f64> = args.sensitivity.iter().copied().collect();
    leakscope_analysis::sensitivity::require(&mut a, &wanted);
    let limits = gate::Limits {
        per_request: args.limits.0,
        allow_inconclusive: args.allow_inconclusive,
        also: wanted.keys().copied().collect(),
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
    // Grouped as the report and the JSON group them: a pattern where one
    // stands for many paths (a new file per request), else the path.
    if let Some(p) = att.fd_paths.first() {
        let what = if leakscope_rundir::fdpath::is_directory(&p.key) {
            "fd directory (files of any name)"
        } else if p.pattern {
            "fd path pattern"
        } else {
            "fd path"
        };
        writeln!(out, "  most-grown {what}: {} (+{:.0})", p.key, p.growth)?;
    }
    if let Some(s) = att.sockets.first() {
        writeln!(
            out,
            "  most-grown socket endpoint: {} (+{:.0})",
            s.key, s.growth
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse(args: &[&str]) -> Result<GateFlags, clap::Error> {
        let cmd = GateFlags::augment_args(clap::Command::new("check"));
        let m = cmd.try_get_matches_from(std::iter::once("check").chain(args.iter().copied()))?;
        GateFlags::from_arg_matches(&m)
    }

    /// Each gated row of the table is a flag, in its metric's unit, and
    /// the rest of the table is not.
    #[test]
    fn every_gated_metric_has_its_flag_and_a_limit_in_its_unit() {
        let flags = parse(&[
            "--max-heap-per-request",
            "1KiB",
            "--max-fds-per-request",
            "0.5",
        ])
        .unwrap();
        assert_eq!(flags.0[&MetricId::Heap], 1024.0);
        assert_eq!(flags.0[&MetricId::Fds], 0.5);
        assert_eq!(flags.0[&MetricId::Tasks], 0.0, "unset is 0: any LEAK fails");
        let gated: Vec<MetricId> = gates().map(|(d, _)| d.id).collect();
        assert_eq!(flags.0.keys().copied().collect::<Vec<_>>(), gated);
        assert!(!flags.0.contains_key(&MetricId::Alloc));
        for bad in ["NaN", "-1", "inf"] {
            assert!(
                parse(&["--max-fds-per-request", bad]).is_err(),
                "{bad} accepted"
            );
        }
        assert!(parse(&["--max-rss-per-request", "lots"]).is_err());
        assert!(parse(&["--max-alloc-per-request", "1"]).is_err());
    }
}
