//! `unbounded-channel`: a producer that never waits for the client.
//!
//! **Bug (leaky):** a reader task pushes the file's chunks into an
//! *unbounded* channel as fast as the disk allows, and ignores send errors.
//! A slow client leaves the whole file queued in memory; the reader never
//! slows down. **Source:** seed 004 §3.2 (chunked writes so data does not pile
//! up), seed 001 §2.2. **Leaks:** heap, up to the file size per slow client
//! while it downloads. **Fix:** a bounded channel (two chunks) gives
//! backpressure, and the reader stops as soon as a send fails.

use std::io::Read;

use bytes::BytesMut;
use http::Response;
use tokio::sync::mpsc;

use super::{ok, open, Ctx, Load, Scenario, Symptom, Variant};
use crate::body::Body;

pub const SCENARIO: Scenario = Scenario {
    name: "unbounded-channel",
    route: "/s/unbounded-channel/{file}",
    resource: "heap",
    symptom: Symptom::PerInFlight,
    description: "a reader fills an unbounded channel faster than a slow client drains it; fixed uses a bounded channel and stops on disconnect",
    source: "seed 004 §3.2, seed 001 §2.2",
    file_size: 32 << 20,
    files: 1,
    load: Load::Slow {
        concurrency: 8,
        kib_per_sec: 256,
    },
    max_rate: None,
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
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::task::spawn_blocking(move || {
                while let Some(item) = read_chunk(&mut file) {
                    let _ = tx.send(item); // the bug: never waits, never stops
                }
            });
            ok(Some(len), Body::unbounded_channel(rx))
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
