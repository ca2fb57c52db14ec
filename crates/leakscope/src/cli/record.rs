//! `leakscope record --pid`: attach to a process leakscope did not start.

use std::sync::Arc;

use anyhow::{Context, Result};
use leakscope::recorder::Stopped;
use leakscope_rundir::{RunWriter, TargetEnd};

use super::args::RecordArgs;
use super::session;

pub async fn run(args: RecordArgs, quiet: bool) -> Result<()> {
    session::check(&args.rec, &args.load)?;
    let no_placeholders = |s: &str| Ok(s.to_string());
    let plan = session::plan(&args.load, args.rec.duration, &no_placeholders)?;
    let counters = plan.as_ref().map(|_| Arc::default());
    let sources = session::sources(args.pid, &args.rec, &no_placeholders, counters)?;
    // Attached, not started: the command line is the process's own.
    let command = std::fs::read(format!("/proc/{}/cmdline", args.pid))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut meta = session::meta(command, args.pid as u32, &args.rec);
    meta.limits = leakscope::limits::read(args.pid);
    let mut writer = RunWriter::create(&args.rec.out, meta)
        .with_context(|| format!("creating the run directory {}", args.rec.out.display()))?;
    let outcome = session::record(
        &mut writer,
        &sources,
        &args.rec,
        plan,
        args.load.settle,
        quiet,
    )
    .await?;
    // Not our child: its exit status is not ours to read.
    let end = match outcome.stopped {
        Stopped::TargetGone => TargetEnd::Vanished,
        _ => TargetEnd::StillRunning,
    };
    let label = end.to_string();
    writer.update_meta(|m| {
        m.target_end = Some(end);
        m.oom_kills = leakscope::limits::oom_kills_since(&m.limits);
    })?;
    session::print_summary(&writer, &outcome, &label);
    Ok(())
}
