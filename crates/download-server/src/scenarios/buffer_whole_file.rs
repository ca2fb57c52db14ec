//! `buffer-whole-file`: the whole file in memory for every download.
//!
//! **Bug (leaky):** the handler reads the file into a `Vec` and sends it, the
//! Rust twin of Gin's `c.Data(200, ct, ioutil.ReadAll(f))`. Nothing is
//! retained after the response, but every download in flight holds its whole
//! file, so heap grows with concurrency × file size, and slow clients make it
//! last. **Source:** the slow-endpoint article (buffering vs streaming), the
//! million-downloads article. **Leaks:** heap, while downloads are in flight.
//! **Fix:** stream the file in bounded, reused chunks: the server's own
//! `/files/` path (≤ 64 KiB per download).

use std::io::Read;

use http::Response;

use super::{
    ok, open, real_files_route, Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom,
    Variant,
};
use crate::body::Body;
use crate::response::internal_error;

pub const SCENARIO: Scenario = Scenario {
    name: "buffer-whole-file",
    input: Input::File,
    resource: Resource::Heap,
    symptom: Symptom::PerInFlight,
    description:
        "reads the whole file into memory per request; fixed streams it in bounded, reused chunks",
    source: &[Article::SlowEndpoint, Article::MillionDownloads],
    file_size: 32 << 20,
    files: 1,
    load: Load {
        concurrency: 8,
        pattern: Pattern::Slow {
            bytes_per_sec: 512 * 1024,
        },
    },
    max_rate: None,
    handler: |variant, ctx| Box::pin(handle(variant, ctx)),
};

pub async fn handle(variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    match variant {
        Variant::Fixed => real_files_route(ctx).await,
        Variant::Leaky => {
            let (mut file, len) = match open(&ctx).await {
                Ok(f) => f,
                Err(r) => return r,
            };
            let read = tokio::task::spawn_blocking(move || {
                let mut all = Vec::with_capacity(len as usize);
                file.read_to_end(&mut all).map(|_| all)
            })
            .await;
            match read {
                Ok(Ok(all)) => ok(Some(all.len() as u64), Body::full(all)),
                Ok(Err(e)) => internal_error(&e),
                Err(e) => internal_error(&e),
            }
        }
    }
}
