//! `task-leak-on-disconnect`: a per-download task that outlives its client.
//!
//! **Bug (leaky):** each download spawns a progress reporter that wakes every
//! 100 ms to publish the bytes sent, and stops when the copy loop marks the
//! download finished. A client that disconnects ends the copy loop early, the
//! flag is never set, and the reporter (with its progress record) runs for
//! the life of the process: the goroutine leak of the sources. **Source:**
//! the slow-endpoint article, the Gin-outage article, the cloud-drive
//! article. **Leaks:** tasks (and their heap), one per aborted download; the
//! spawn site is this file. **Fix:** the reporter's `JoinHandle` is aborted
//! when the response body is dropped, however the download ends.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::Response;
use tokio::sync::mpsc;

use super::{ok, open, Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom, Variant};
use crate::body::Body;

pub const SCENARIO: Scenario = Scenario {
    name: "task-leak-on-disconnect",
    input: Input::File,
    resource: Resource::Tasks,
    symptom: Symptom::PerRequest,
    description: "a progress task stops only when the download completes, so aborted downloads leave it running; fixed aborts it with the response",
    source: &[Article::SlowEndpoint, Article::GinOutage, Article::CloudDrive],
    file_size: 8 << 20,
    files: 1,
    load: Load {
        concurrency: 8,
        pattern: Pattern::Abort {
            after_bytes: 64 * 1024,
        },
    },
    max_rate: None,
    handler: |variant, ctx| Box::pin(handle(variant, ctx)),
};

const CHUNK: usize = 32 * 1024;

/// What the reporter publishes; the history is what a real one would keep
/// for a transfer-rate graph, and what a leaked one keeps forever.
struct Progress {
    sent: AtomicU64,
    finished: AtomicBool,
    history: std::sync::Mutex<Vec<u64>>,
}

async fn report(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !progress.finished.load(Ordering::Acquire) {
        tick.tick().await;
        let sent = progress.sent.load(Ordering::Relaxed);
        if let Ok(mut h) = progress.history.lock() {
            if h.len() < 1024 {
                h.push(sent);
            }
        }
    }
}

/// Aborts the task when dropped: attached to the body in the fixed variant.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn handle(variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    let (mut file, len) = match open(&ctx).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let progress = Arc::new(Progress {
        sent: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        history: std::sync::Mutex::new(Vec::with_capacity(1024)),
    });
    let reporter = tokio::spawn(report(Arc::clone(&progress)));
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = BytesMut::zeroed(CHUNK);
        match file.read(&mut buf[..]) {
            Ok(0) => {
                progress.finished.store(true, Ordering::Release);
                break;
            }
            Ok(n) => {
                buf.truncate(n);
                progress.sent.fetch_add(n as u64, Ordering::Relaxed);
                if tx.blocking_send(Ok(buf.freeze())).is_err() {
                    break; // the client is gone; `finished` stays false
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                break;
            }
        }
    });
    let body = Body::channel(rx);
    let body = match variant {
        Variant::Leaky => {
            drop(reporter); // detached: nothing stops it but `finished`
            body
        }
        Variant::Fixed => body.attach(AbortOnDrop(reporter)),
    };
    ok(Some(len), body)
}
