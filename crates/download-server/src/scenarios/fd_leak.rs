//! `fd-leak`: a file descriptor escapes RAII on the abort path.
//!
//! **Bug (leaky):** to read with `pread` at explicit offsets (so several
//! readers could share one descriptor), the reader takes the raw fd out of
//! its `File` with `into_raw_fd()` and closes it by hand after the copy loop.
//! The loop's `?` on a failed send (the client went away) returns before the
//! `close`, so every aborted download leaks one descriptor: Go's "defer
//! f.Close() forgotten on the early return", in Rust clothing. **Source:**
//! the slow-endpoint article, the Gin-outage article, the cloud-drive
//! article, the streaming-ZIP article. **Leaks:** fds, one per aborted
//! download (the path is the served file). **Fix:** keep the descriptor owned
//! (`OwnedFd` / `File`) for the reader's whole life, so it is closed on every
//! path.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use http::Response;
use tokio::sync::mpsc;

use super::{ok, open, Article, Ctx, Input, Load, Pattern, Resource, Scenario, Symptom, Variant};
use crate::body::Body;

pub const SCENARIO: Scenario = Scenario {
    name: "fd-leak",
    input: Input::File,
    resource: Resource::Fds,
    symptom: Symptom::PerRequest,
    description: "a raw fd is closed by hand after the copy loop, which an aborted download skips; fixed keeps it owned",
    source: &[Article::SlowEndpoint, Article::GinOutage, Article::CloudDrive, Article::StreamingZip],
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

struct ClientGone;

/// Copies `fd` into `tx` with `pread`; `Err(ClientGone)` when the body was
/// dropped.
fn copy(
    fd: BorrowedFd<'_>,
    len: u64,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), ClientGone> {
    let mut offset = 0u64;
    while offset < len {
        let mut buf = BytesMut::zeroed(CHUNK.min((len - offset) as usize));
        let item = match rustix::io::pread(fd, &mut buf[..], offset) {
            Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                offset += n as u64;
                buf.truncate(n);
                Ok(buf.freeze())
            }
            Err(e) => Err(e.into()),
        };
        let failed = item.is_err();
        tx.blocking_send(item).map_err(|_| ClientGone)?;
        if failed {
            break;
        }
    }
    Ok(())
}

pub async fn handle(variant: Variant, ctx: Ctx<'_>) -> Response<Body> {
    let (file, len) = match open(&ctx).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (tx, rx) = mpsc::channel(2);
    match variant {
        Variant::Leaky => {
            let raw = file.into_raw_fd();
            tokio::task::spawn_blocking(move || -> Result<(), ClientGone> {
                // SAFETY: `raw` came from `into_raw_fd` above and is open.
                let fd = unsafe { BorrowedFd::borrow_raw(raw) };
                copy(fd, len, &tx)?; // the bug: returns before the close below
                                     // SAFETY: we own `raw` and close it exactly once.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                Ok(())
            });
        }
        Variant::Fixed => {
            let owned = OwnedFd::from(file);
            tokio::task::spawn_blocking(move || copy(owned.as_fd(), len, &tx));
        }
    }
    ok(Some(len), Body::channel(rx))
}
