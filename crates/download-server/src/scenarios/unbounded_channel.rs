//! `unbounded-channel`: a producer that never waits for the client.
//!
//! **Bug (leaky):** a reader task pushes the file's chunks into an
//! *unbounded* channel as fast as the disk allows, and ignores send errors.
//! A slow client leaves the whole file queued in memory; the reader never
//! slows down. **Source:** the streaming-ZIP article (chunked writes so data does not pile
//! up), the Gin-outage article. **Leaks:** heap, up to the file size per slow client
//! while it downloads. **Fix:** a bounded channel (two chunks) gives
//! backpressure, and the reader stops as soon as a send fails.

use std::io::Read;

use bytes::BytesMut;
use http::Response;
use tokio::sync::mpsc;

use super::{ok, open, Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom, Variant};
use crate::body::Body;

pub const SCENARIO: Scenario = Scenario {
    name: "unbounded-channel",
    input: Input::File,
    resource: Resource::Heap,
    symptom: Symptom::PerInFlight,
    description: "a reader fills an unbounded channel faster than a slow client drains it; fixed uses a bounded channel and stops on disconnect",
    source: &[Article::StreamingZip, Article::GinOutage],
    file_size: 32 << 20,
    files: 1,
    load: Load {
        concurrency: 8,
        pattern: Pattern::Slow {
            bytes_per_sec: 256 * 1024,
        },
    },
    max_rate: None,
    handler: |variant, ctx| Box::pin(handle(variant, ctx)),
};

const CHUNK: usize = 32 * 1024;

fn read_chunk(file: &mut std::fs::File) -> Option<std::io::Result<bytes::Bytes>> {
    let mut buf = BytesMut::zeroed(CHUNK);
    match file.read(&mut buf[..]) {
        Ok(0) => None,
        Ok(n) => {
            buf.truncate(n);
            Some(Ok(buf.freeze()))
        }
        Err(e) => Some(Err(e)),
    }
}

pub async fn handle(variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    let (mut file, len) = match open(&ctx).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match variant {
        Variant::Leaky => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            tokio::task::spawn_blocking(move || {
                while let Some(item) = read_chunk(&mut file) {
                    let _ = tx.send(item); // the bug: never waits, never stops
                }
            });
            // Nothing slows the producer down to the client's pace.
            let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            ok(Some(len), Body::stream(chunks))
        }
        Variant::Fixed => {
            let (tx, rx) = mpsc::channel(2);
            tokio::task::spawn_blocking(move || {
                while let Some(item) = read_chunk(&mut file) {
                    if tx.blocking_send(item).is_err() {
                        break;
                    }
                }
            });
            ok(Some(len), Body::channel(rx))
        }
    }
}
