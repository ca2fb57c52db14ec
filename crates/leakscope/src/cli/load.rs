//! `leakscope load`: the load driver alone.

use anyhow::{bail, Result};
use leakscope_load::Load;

use super::args::LoadOnlyArgs;
use super::session;

pub async fn run(args: LoadOnlyArgs) -> Result<()> {
    if args.load.urls.is_empty() {
        bail!("leakscope load needs at least one --url");
    }
    let literal = |s: &str| Ok(s.to_string());
    let Some(plan) = session::plan(&args.load, None, &literal)? else {
        unreachable!("a plan exists when there are URLs");
    };
    // Dropping the load on Ctrl-C stops its workers.
    let summary = tokio::select! {
        s = Load::start(plan)?.finish() => s,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    session::print_load(&summary);
    // One JSON line on stdout for scripts (xtask/bench/recorder-cost.sh).
    let c = summary.counts;
    say!(
        "{}",
        serde_json::json!({
            "done": c.done,
            "failed": c.failed,
            "aborted": c.aborted,
            "cut": summary.cut,
            "bytes": c.bytes,
            "seconds": summary.elapsed.as_secs_f64(),
            "requests_per_sec": summary.requests_per_sec(),
            "latency_p50_ms": summary.latency.map(|l| l.p50.as_secs_f64() * 1e3),
            "latency_p99_ms": summary.latency.map(|l| l.p99.as_secs_f64() * 1e3),
            "latency_max_ms": summary.latency.map(|l| l.max.as_secs_f64() * 1e3),
        })
    );
    // A load that served nothing measured nothing: scripts must see that.
    if c.done + c.aborted == 0 {
        bail!("no request succeeded ({} failed)", c.failed);
    }
    Ok(())
}
