//! `leakscope run -- CMD`: start the target, record it under load, stop it.

use std::sync::Arc;

use anyhow::{Context, Result};
use leakscope::target::{Ready, Target};
use leakscope_rundir::{RunFile, RunWriter};

use super::args::RunArgs;
use super::session;

pub async fn run(args: RunArgs, quiet: bool) -> Result<()> {
    session::check(&args.rec, &args.load)?;
    let ready = match (&args.ready_line, args.ready_port) {
        (Some(line), _) => Ready::Line(line.clone()),
        (None, Some(addr)) => Ready::Port(addr),
        (None, None) => Ready::Started,
    };
    // The run directory first: if it cannot be written, nothing starts.
    let meta = session::meta(args.command.clone(), 0, &args.rec);
    let mut writer = RunWriter::create(&args.rec.out, meta)
        .with_context(|| format!("creating the run directory {}", args.rec.out.display()))?;
    let log = RunFile::TargetLog.path(writer.dir());
    if !quiet {
        tell!(
            "starting {} (output in {})",
            args.command.join(" "),
            log.display()
        );
    }
    let mut target = Target::start(&args.command, &log, &ready, args.ready_timeout).await?;
    let pid = target.pid();
    let limits = leakscope::limits::read(pid as i32);
    writer.update_meta(|m| {
        m.pid = pid;
        m.limits = limits;
    })?;

    let prepared = (|| {
        let resolve = |s: &str| target.resolve(s).map_err(anyhow::Error::from);
        let plan = session::plan(&args.load, args.rec.duration, &resolve)?;
        let counters = plan.as_ref().map(|_| Arc::default());
        let sources = session::sources(pid as i32, &args.rec, &resolve, counters)?;
        Ok::<_, anyhow::Error>((plan, sources))
    })();
    let (plan, sources) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let end = target.stop(args.stop_timeout).await;
            writer.update_meta(|m| m.target_end = Some(end))?;
            return Err(e);
        }
    };
    let outcome = session::record(
        &mut writer,
        &sources,
        &args.rec,
        plan,
        args.load.settle,
        quiet,
    )
    .await;
    drop(sources);
    let end = target.stop(args.stop_timeout).await;
    let label = end.to_string();
    writer.update_meta(|m| {
        m.target_end = Some(end);
        m.oom_kills = leakscope::limits::oom_kills_since(&m.limits);
    })?;
    let outcome = outcome?;
    session::print_summary(&writer, &outcome, &label);
    session::usable(&outcome, &label)
}
