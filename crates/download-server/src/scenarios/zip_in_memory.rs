//! `zip-in-memory`: the whole archive built in a `Vec`, then sent.
//!
//! **Bug (leaky):** the handler writes the ZIP into a `Cursor<Vec<u8>>` and
//! responds with the finished buffer, so every archive download holds the
//! whole archive (plus the `Vec`'s doubling slack) until the client has it.
//! **Source:** the streaming-ZIP article. **Leaks:** heap ∝ archive size ×
//! concurrent downloads. **Fix:** the server's streaming ZIP (`/zip/`): the
//! writer runs on a blocking thread and feeds a two-chunk channel.

use http::{Response, StatusCode};

use super::{ok, Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom, Variant};
use crate::body::Body;
use crate::response::{internal_error, path_error, plain};
use crate::zip_stream::{self, Compression};

pub const SCENARIO: Scenario = Scenario {
    name: "zip-in-memory",
    input: Input::Directory,
    resource: Resource::Heap,
    symptom: Symptom::PerInFlight,
    description: "builds the whole ZIP archive in memory before sending; fixed streams it",
    source: &[Article::StreamingZip],
    file_size: 8 << 20,
    files: 4,
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
        Variant::Fixed => {
            zip_stream::serve(
                ctx.root,
                ctx.rel,
                ctx.method,
                ctx.query,
                ctx.zip_slots,
                ctx.zip_gauge,
            )
            .await
        }
        Variant::Leaky => {
            let compression = match Compression::from_query(ctx.query) {
                Ok(c) => c,
                Err(message) => return plain(StatusCode::BAD_REQUEST, &message),
            };
            let root = ctx.root;
            let rel = ctx.rel;
            let built = tokio::task::spawn_blocking(move || {
                let dir = root.open_dir(&rel).map_err(Err)?;
                let mut archive = std::io::Cursor::new(Vec::new());
                zip_stream::write_entries(&root, &dir, compression, &mut archive).map_err(Ok)?;
                Ok::<_, Result<std::io::Error, crate::root::PathError>>(archive.into_inner())
            })
            .await;
            match built {
                Ok(Ok(archive)) => {
                    let mut r = ok(Some(archive.len() as u64), Body::full(archive));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/zip"),
                    );
                    r
                }
                Ok(Err(Err(path))) => path_error(&path),
                Ok(Err(Ok(io))) => internal_error(&io),
                Err(join) => internal_error(&join),
            }
        }
    }
}
