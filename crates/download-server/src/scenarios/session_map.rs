//! `unbounded-session-map`: per-download metadata in a map nobody evicts.
//!
//! **Bug (leaky):** each download registers a session (id, path, client, user
//! agent, a resume-offset table) in a server-wide `HashMap` so that a later
//! request could resume it. Entries are never removed: the heap grows by one
//! session per request, forever. **Source:** the cloud-drive article (global
//! maps and caches without expiry), the million-downloads article. **Leaks:**
//! heap, ~1 KiB per request. **Fix:** a bounded cache with a time-to-live
//! (moka): at most 4,096 sessions, each for at most 5 minutes, so the heap
//! plateaus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Response;

use super::{Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom, Variant};
use crate::body::Body;

pub const SCENARIO: Scenario = Scenario {
    name: "unbounded-session-map",
    input: Input::File,
    resource: Resource::Heap,
    symptom: Symptom::PerRequest,
    description: "registers every download's session in a map that is never evicted; fixed uses a bounded TTL cache",
    source: &[Article::CloudDrive, Article::MillionDownloads],
    file_size: 4 * 1024,
    files: 1,
    load: Load {
        concurrency: 16,
        pattern: Pattern::Full,
    },
    max_rate: None,
    handler: |variant, ctx| Box::pin(handle(variant, ctx)),
};

/// Most sessions the fixed variant keeps.
pub const CAPACITY: u64 = 4096;
const TTL: Duration = Duration::from_secs(300);

#[allow(dead_code)] // the fields are what a resume feature would read
#[derive(Clone)]
pub struct Session {
    path: String,
    user_agent: String,
    started: Instant,
    resume_offsets: Vec<u64>,
}

pub struct Sessions {
    next_id: AtomicU64,
    leaky: Mutex<HashMap<u64, Session>>,
    fixed: moka::sync::Cache<u64, Session>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(0),
            leaky: Mutex::new(HashMap::new()),
            fixed: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TTL)
                .build(),
        }
    }
}

pub async fn handle(variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    let id = ctx.state.sessions.next_id.fetch_add(1, Ordering::Relaxed);
    let session = Session {
        path: String::from_utf8_lossy(ctx.rel.as_bytes()).into_owned(),
        user_agent: ctx
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        started: Instant::now(),
        resume_offsets: Vec::with_capacity(128),
    };
    match variant {
        Variant::Leaky => {
            if let Ok(mut map) = ctx.state.sessions.leaky.lock() {
                map.insert(id, session);
            }
        }
        Variant::Fixed => ctx.state.sessions.fixed.insert(id, session),
    }
    let mut response = super::real_files_route(ctx).await;
    if let Ok(v) = http::HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-session-id", v);
    }
    response
}
