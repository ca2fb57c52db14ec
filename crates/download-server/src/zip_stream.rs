//! `GET /zip/{dir}`: a directory streamed as a ZIP archive (the streaming-ZIP
//! article).
//!
//! The `zip` crate's writer is synchronous, so it runs on a blocking thread
//! and writes into a [`ChannelWriter`] that hands [`CHUNK`]-sized pieces to
//! the response body through a bounded channel: the pipe-based pipeline of
//! the streaming-ZIP article. Memory per archive is one chunk being filled,
//! [`DEPTH`] chunks queued and what hyper holds, whatever the directory's
//! size; the only state that grows is the central directory (a few dozen
//! bytes per entry), which the ZIP format requires at the end.
//!
//! When the client goes away the receiver is dropped, the next
//! `blocking_send` fails, the writer returns `BrokenPipe`, and the thread,
//! its open file and its concurrency slot are released: nothing outlives the
//! response.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Response, StatusCode};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, Semaphore};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use crate::body::{Body, CHUNK};
use crate::response::{content_disposition, internal_error, path_error, plain};
use crate::root::{PathError, RelPath, ServeRoot};

/// Chunks queued between the writer thread and the response.
pub const DEPTH: usize = 2;

/// How entries are stored, from `?compression=stored|deflated&level=1..9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Stored,
    Deflated(i64),
}

impl Compression {
    /// Stored is the default: downloads are usually already-compressed media,
    /// and deflate costs CPU per byte (the streaming-ZIP article weighs the two).
    pub fn from_query(query: Option<&str>) -> Result<Self, String> {
        let mut method = None;
        let mut level = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*key {
                "compression" => method = Some(value.into_owned()),
                "level" => {
                    let l: i64 = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=9).contains(l))
                        .ok_or_else(|| format!("level must be 1..9, got {value:?}"))?;
                    level = Some(l);
                }
                _ => {}
            }
        }
        match (method.as_deref(), level) {
            (None | Some("stored"), None) => Ok(Self::Stored),
            (Some("stored"), Some(_)) => Err("level applies to compression=deflated only".into()),
            (Some("deflated"), l) | (None, l @ Some(_)) => Ok(Self::Deflated(l.unwrap_or(6))),
            (Some(other), _) => Err(format!(
                "compression must be stored or deflated, got {other:?}"
            )),
        }
    }
}

/// Answers `GET`/`HEAD /zip/{dir}`. At most `slots` archives stream at once
/// (the streaming-ZIP article's bounded concurrency): each holds a blocking-pool thread.
pub async fn serve(
    root: Arc<ServeRoot>,
    rel: RelPath,
    method: &Method,
    query: Option<&str>,
    slots: Arc<Semaphore>,
    active: Gauge,
) -> Response<Body> {
    let compression = match Compression::from_query(query) {
        Ok(c) => c,
        Err(message) => return plain(StatusCode::BAD_REQUEST, &message),
    };
    let name = if rel.is_root() {
        root.path()
            .file_name()
            .map(|n| std::os::unix::ffi::OsStrExt::as_bytes(n).to_vec())
            .unwrap_or_else(|| b"files".to_vec())
    } else {
        rel.file_name().to_vec()
    };
    let dir = {
        let root = Arc::clone(&root);
        match tokio::task::spawn_blocking(move || root.open_dir(&rel)).await {
            Ok(Ok(dir)) => dir,
            Ok(Err(e)) => return path_error(&e),
            Err(join) => return internal_error(&join),
        }
    };
    let mut file_name = name;
    file_name.extend_from_slice(b".zip");
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_DISPOSITION, content_disposition(&file_name))
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if method == Method::HEAD {
        return builder.body(Body::empty()).expect("headers are valid");
    }
    let Ok(slot) = slots.try_acquire_owned() else {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy: too many ZIP streams",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        return response;
    };
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        active.inc();
        // Runs on unwind too: a panicking writer does not leave the gauge up.
        scopeguard::defer! {
            active.dec();
        }
        write_archive(root, dir, compression, tx);
    });
    builder.body(Body::channel(rx)).expect("headers are valid")
}

/// Streams `dir` (beneath `root`) into `tx`. Blocking: run on its own thread.
/// Errors end the archive early; the error is also sent to the body so the
/// client sees an aborted transfer rather than a well-formed partial archive.
pub fn write_archive(
    root: Arc<ServeRoot>,
    dir: PathBuf,
    compression: Compression,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut writer = ChannelWriter::new(tx.clone());
    let result = write_entries(&root, &dir, compression, &mut writer);
    let result = result.and_then(|()| writer.flush());
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::BrokenPipe {
            tracing::warn!(dir = %dir.display(), error = %e, "zip stream aborted");
            let _ = tx.blocking_send(Err(e));
        }
    }
}

/// Writes the archive of `dir` into any writer. Streaming callers pass a
/// [`ChannelWriter`]; the `zip-in-memory` scenario's leaky variant passes a
/// `Vec`, which is exactly its bug.
pub(crate) fn write_entries<W: io::Write>(
    root: &ServeRoot,
    dir: &Path,
    compression: Compression,
    out: W,
) -> io::Result<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let base = match compression {
        Compression::Stored => {
            SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
        }
        Compression::Deflated(level) => SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(level)),
    };
    let walker = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    let mut omitted = Omitted::default();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "skipping unreadable directory entry");
                omitted.unreadable += 1;
                continue;
            }
        };
        let Ok(inside_dir) = entry.path().strip_prefix(dir) else {
            continue;
        };
        let Some(name) = inside_dir.to_str() else {
            tracing::warn!(path = ?entry.path(), "skipping a name that is not UTF-8");
            omitted.not_utf8 += 1;
            continue;
        };
        if entry.file_type().is_dir() {
            zip.add_directory(name, base).map_err(io::Error::other)?;
            continue;
        }
        // Files and symlinks alike are opened through the root, so a symlink
        // only contributes if it resolves to a regular file beneath the root.
        let Ok(rel) = entry.path().strip_prefix(root.path()) else {
            continue;
        };
        let (mut file, meta) = match root.open_file(&RelPath::from_fs(rel)) {
            Ok(opened) => opened,
            Err(PathError::Io(e)) => return Err(e),
            Err(e) => {
                tracing::debug!(path = %rel.display(), reason = %e, "not archived");
                continue;
            }
        };
        let mut options = base
            .large_file(meta.len() >= u64::from(u32::MAX))
            .unix_permissions(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777);
        if let Some(time) = meta.modified().ok().and_then(zip_time) {
            options = options.last_modified_time(time);
        }
        zip.start_file(name, options).map_err(io::Error::other)?;
        io::copy(&mut file, &mut zip)?;
    }
    if let Some(comment) = omitted.comment() {
        zip.set_comment(comment).map_err(io::Error::other)?;
    }
    zip.finish().map_err(io::Error::other)?;
    Ok(())
}

/// Entries the walk could not put in the archive. The response is already
/// under way when they are met, so the archive's own comment says so
/// (`unzip -z`, `zipinfo`): a 200 with a valid-looking archive must not
/// pass for the whole tree.
#[derive(Default)]
struct Omitted {
    not_utf8: u64,
    unreadable: u64,
}

impl Omitted {
    fn comment(&self) -> Option<String> {
        (self.not_utf8 + self.unreadable > 0).then(|| {
            format!(
                "incomplete: {} entries left out ({} names not UTF-8, {} unreadable or too deep)",
                self.not_utf8 + self.unreadable,
                self.not_utf8,
                self.unreadable
            )
        })
    }
}

fn zip_time(t: std::time::SystemTime) -> Option<zip::DateTime> {
    let utc = time::OffsetDateTime::from(t);
    zip::DateTime::try_from(time::PrimitiveDateTime::new(utc.date(), utc.time())).ok()
}

/// `Write` into a bounded channel in [`CHUNK`]-sized pieces.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        // Reuse the allocation once the body has dropped the chunk.
        if !self.buf.try_reclaim(CHUNK) {
            self.buf = BytesMut::with_capacity(CHUNK);
        }
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_query() {
        assert_eq!(Compression::from_query(None), Ok(Compression::Stored));
        assert_eq!(
            Compression::from_query(Some("compression=deflated")),
            Ok(Compression::Deflated(6))
        );
        assert_eq!(
            Compression::from_query(Some("compression=deflated&level=1")),
            Ok(Compression::Deflated(1))
        );
        assert_eq!(
            Compression::from_query(Some("level=9")),
            Ok(Compression::Deflated(9))
        );
        assert!(Compression::from_query(Some("compression=lzma")).is_err());
        assert!(Compression::from_query(Some("level=0")).is_err());
        assert!(Compression::from_query(Some("compression=stored&level=3")).is_err());
    }
}
