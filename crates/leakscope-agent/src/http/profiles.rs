//! The endpoints that take time and say so in their query: the task dump
//! (`seconds`), the heap profile and the CPU profile (`seconds`, `hz`),
//! each in pprof or text form.

use super::*;

/// Longest a task dump may take: past it the runtime is stuck (a blocked
/// worker), and waiting longer tells nothing more.
const MAX_DUMP_SECONDS: u64 = 60;

pub(super) async fn task_dump(state: &State, uri: &http::Uri) -> Resp {
    let pairs = match query(uri, &["seconds", "format"]) {
        Ok(p) => p,
        Err(r) => return r.into(),
    };
    let seconds = match param(&pairs, "seconds").map(str::parse::<u64>) {
        None => 10,
        Some(Ok(s)) if (1..=MAX_DUMP_SECONDS).contains(&s) => s,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("seconds must be a whole number from 1 to {MAX_DUMP_SECONDS}"),
            )
        }
    };
    let as_text = match param(&pairs, "format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("format={other:?} is not one of json, text"),
            )
        }
    };
    #[cfg(feature = "taskdump")]
    {
        let multi = state.runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread;
        if multi && !state.task_dumps {
            return text(
                StatusCode::FORBIDDEN,
                "task dumps are off: tokio's multi-thread dump can wedge the runtime for good when a \
                 worker is 250 ms late to its barrier; allow them where a stuck service can be \
                 restarted, with LEAKSCOPE_TASK_DUMPS=on or AgentBuilder::task_dumps(true)",
            );
        }
        match crate::tasks::dump(&state.runtime, Duration::from_secs(seconds)).await {
            Ok(d) if as_text => text(StatusCode::OK, render_dump(&d)),
            Ok(d) => json(&d),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    #[cfg(not(feature = "taskdump"))]
    {
        let _ = (state, seconds, as_text);
        error(AgentError::FeatureOff {
            endpoint: Endpoint::TaskDump.path(),
            feature: "taskdump",
        })
    }
}

/// The dump for a terminal: one paragraph per group.
#[cfg(feature = "taskdump")]
fn render_dump(d: &leakscope_wire::TaskDump) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{} tasks traced in {} ms, symbolized in {} ms\n",
        d.tasks, d.trace_ms, d.symbolize_ms
    );
    for g in &d.groups {
        let _ = writeln!(
            out,
            "\n{} tasks spawned at {}, parked at {}",
            g.count,
            g.spawned_at.as_deref().unwrap_or("an unknown site"),
            g.parked_at()
        );
        for f in &g.stack {
            let _ = writeln!(out, "    {}", f.short());
        }
    }
    out
}

pub(super) async fn heap_profile(state: &State, uri: &http::Uri) -> Resp {
    let pairs = match query(uri, &["format"]) {
        Ok(p) => p,
        Err(r) => return r.into(),
    };
    let fmt = match format_param(&pairs) {
        Ok(f) => f,
        Err(r) => return r.into(),
    };
    #[cfg(feature = "jemalloc")]
    {
        let _ = state;
        let format = match fmt {
            Fmt::Pprof => crate::heap::Format::Pprof,
            Fmt::Svg => crate::heap::Format::Svg,
        };
        let is_svg = matches!(format, crate::heap::Format::Svg);
        // Only the interval is needed, not a full stats read (epoch advance
        // and every counter).
        let sample = crate::heap::sample_interval_lg()
            .ok()
            .flatten()
            .map(|lg| 1u64 << lg);
        let dumped = tokio::task::spawn_blocking(move || crate::heap::profile(format)).await;
        let mut r = match dumped {
            Ok(Ok(body)) if is_svg => binary(body, "image/svg+xml", "heap.svg"),
            Ok(Ok(body)) => binary(body, "application/octet-stream", "heap.pb.gz"),
            Ok(Err(e)) => return error(e),
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("heap profile task: {e}"),
                )
            }
        };
        if let Some(bytes) = sample {
            r.headers_mut().insert(
                "x-leakscope-sample-interval-bytes",
                HeaderValue::from(bytes),
            );
        }
        r
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        let _ = fmt;
        let mut msg = AgentError::FeatureOff {
            endpoint: Endpoint::HeapProfile.path(),
            feature: "jemalloc",
        }
        .to_string();
        if let Some(p) = &state.dhat_file {
            msg.push_str(&format!(
                "; this is a dhat build: its profile is written to {} on shutdown",
                p.display()
            ));
        }
        text(StatusCode::NOT_FOUND, msg)
    }
}

pub(super) async fn cpu_profile(uri: &http::Uri) -> Resp {
    let pairs = match query(uri, &["seconds", "hz", "format"]) {
        Ok(p) => p,
        Err(r) => return r.into(),
    };
    let fmt = match format_param(&pairs) {
        Ok(f) => f,
        Err(r) => return r.into(),
    };
    let seconds = match param(&pairs, "seconds").map(str::parse::<u64>) {
        None => 30,
        Some(Ok(s)) if (1..=MAX_CPU_SECONDS).contains(&s) => s,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("seconds must be a whole number from 1 to {MAX_CPU_SECONDS}"),
            )
        }
    };
    let hz = match param(&pairs, "hz").map(str::parse::<i32>) {
        None => 100,
        Some(Ok(h)) if (1..=1000).contains(&h) => h,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "hz must be a whole number from 1 to 1000",
            )
        }
    };
    #[cfg(feature = "cpu")]
    {
        let Some(slot) = crate::cpu::Slot::try_take() else {
            return text(
                StatusCode::CONFLICT,
                "a CPU profile is already running; only one runs at a time",
            );
        };
        let format = match fmt {
            Fmt::Pprof => crate::cpu::Format::Pprof,
            Fmt::Svg => crate::cpu::Format::Svg,
        };
        let out = crate::cpu::profile(&slot, Duration::from_secs(seconds), hz, format).await;
        drop(slot);
        let mut r = match out {
            Ok(body) => match format {
                crate::cpu::Format::Svg => binary(body, "image/svg+xml", "cpu.svg"),
                crate::cpu::Format::Pprof => binary(body, "application/octet-stream", "cpu.pb.gz"),
            },
            Err(e) => return error(e),
        };
        r.headers_mut().insert(
            "x-leakscope-note",
            HeaderValue::from_static(crate::cpu::RETAINED_HEAP_NOTE),
        );
        r
    }
    #[cfg(not(feature = "cpu"))]
    {
        let _ = (fmt, seconds, hz, Duration::ZERO);
        error(AgentError::FeatureOff {
            endpoint: Endpoint::CpuProfile.path(),
            feature: "cpu",
        })
    }
}
