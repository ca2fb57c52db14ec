//! `buffer-churn`: a fresh buffer for every chunk.
//!
//! **Bug (leaky):** the copy loop allocates a new 64 KiB `Vec` per chunk and
//! hands it to the body, so a 4 MiB download allocates 4 MiB, however few
//! bytes are live at once. Nothing is retained: this is the allocation-rate
//! (GC-pressure) pattern the sources fix with `sync.Pool`. **Source:** the
//! slow-endpoint article, the Gin-outage article, the streaming-ZIP article.
//! **Leaks:** allocation rate, not retained heap. **Fix:** the server's
//! `/files/` path reuses a ring of three 32 KiB buffers per download
//! (`Bytes::try_reclaim`), so bytes allocated per download stay constant
//! whatever the file size.

use std::io::Read;

use bytes::Bytes;
use http::Response;
use tokio::sync::mpsc;

use super::{
    ok, open, real_files_route, Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom,
    Variant,
};
use crate::body::Body;

pub const SCENARIO: Scenario = Scenario {
    name: "buffer-churn",
    input: Input::File,
    resource: Resource::AllocationRate,
    symptom: Symptom::AllocatedPerRequest,
    description: "allocates a fresh 64 KiB buffer per chunk; fixed reuses a small pool of buffers",
    source: &[
        Article::SlowEndpoint,
        Article::GinOutage,
        Article::StreamingZip,
    ],
    file_size: 4 << 20,
    files: 1,
    load: Load {
        concurrency: 8,
        pattern: Pattern::Full,
    },
    max_rate: None,
    handler: |variant, ctx| Box::pin(handle(variant, ctx)),
};

const CHUNK: usize = 64 * 1024;

pub async fn handle(variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    match variant {
        Variant::Fixed => real_files_route(ctx).await,
        Variant::Leaky => {
            let (mut file, len) = match open(&ctx).await {
                Ok(f) => f,
                Err(r) => return r,
            };
            let (tx, rx) = mpsc::channel(2);
            tokio::task::spawn_blocking(move || loop {
                let mut buf = vec![0u8; CHUNK]; // the bug: one allocation per chunk
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            });
            ok(Some(len), Body::channel(rx))
        }
    }
}
