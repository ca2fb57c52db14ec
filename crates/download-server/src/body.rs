//! Response bodies: bytes in memory, byte ranges of a file (sent with
//! sendfile(2) on a server connection, read on the blocking pool
//! otherwise), or a channel fed by a producer thread (ZIP).
//!
//! On a server connection a file range holds no buffer at all: the body
//! hands hyper placeholders that the socket turns into sendfile calls
//! ([`crate::sendfile`]). Without one (a body collected in a test, a
//! scenario's own body) memory is still bounded by construction: a file is read in
//! [`CHUNK`]-sized pieces only when hyper asks for the next frame, and the
//! connection's write buffer is capped at one chunk
//! ([`crate::server::MAX_BUF_SIZE`]), so at most about two chunks (64 KiB) are
//! in flight. Buffers are reclaimed from a small per-download ring once hyper
//! has written and dropped them, so a long download allocates a handful of
//! buffers, not one per chunk.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream};
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::limits::InflightGuard;
use crate::sendfile::{Pending, MAX_FRAME};

/// Size of one read from disk and of one body frame.
pub const CHUNK: usize = 32 * 1024;

/// Buffers kept per download for reuse; hyper holds at most two at a time.
const RING: usize = 3;

/// A piece of a body: literal bytes (multipart headers, small files) or a
/// byte range of the body's file.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

impl Part {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// The response body type of every route.
pub struct Body {
    kind: Kind,
    /// Counts body bytes as they are handed to hyper.
    bytes_sent: Option<Counter>,
    /// Holds the request's in-flight slot until the body is fully sent or
    /// dropped (client gone), so `--max-inflight` bounds streaming downloads,
    /// not just handler calls.
    _inflight: Option<InflightGuard>,
    /// Anything whose life must end with the response's (a task's abort
    /// guard, a cancellation token): dropped when the body is.
    _attached: Option<Box<dyn Send>>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Parts(PartsBody),
    Channel(mpsc::Receiver<io::Result<Bytes>>),
    Stream(BoxStream<'static, io::Result<Bytes>>),
}

impl Body {
    pub fn empty() -> Self {
        Self::from_kind(Kind::Empty)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self::from_kind(Kind::Full(Some(bytes)))
    }

    /// A body made of `parts`; `file` is required when any part is a file range.
    pub fn parts(file: Option<Arc<File>>, parts: Vec<Part>) -> Self {
        let remaining = parts.iter().map(Part::len).sum();
        Self::from_kind(Kind::Parts(PartsBody {
            file,
            parts: parts.into(),
            remaining,
            ring: Vec::with_capacity(RING),
            reading: None,
            sendfile: None,
        }))
    }

    /// Sends a parts body's file ranges with sendfile(2) through the
    /// connection's queue rather than reading them here: no buffer at all.
    /// Other bodies, and `None`, are left as they are.
    pub fn sendfile(mut self, pending: Option<Pending>) -> Self {
        if let Kind::Parts(parts) = &mut self.kind {
            parts.sendfile = pending;
        }
        self
    }

    /// A body fed by a producer; an `Err` item aborts the response mid-stream
    /// (the client sees a truncated chunked transfer, never a silent success).
    pub fn channel(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self::from_kind(Kind::Channel(rx))
    }

    /// A body fed by any stream of chunks: for sources the server itself
    /// does not have, such as the leak scenarios' own channels.
    pub fn stream(chunks: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> Self {
        Self::from_kind(Kind::Stream(Box::pin(chunks)))
    }

    /// Ties `value`'s life to the body's: it is dropped when the response
    /// ends, however it ends (completed, failed, or the client gone).
    pub fn attach(mut self, value: impl Send + 'static) -> Self {
        self._attached = Some(Box::new(value));
        self
    }

    fn from_kind(kind: Kind) -> Self {
        Self {
            kind,
            bytes_sent: None,
            _inflight: None,
            _attached: None,
        }
    }

    pub fn with_tracking(mut self, bytes_sent: Counter, inflight: Option<InflightGuard>) -> Self {
        self.bytes_sent = Some(bytes_sent);
        self._inflight = inflight;
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Empty => None,
            Kind::Full(bytes) => bytes.take().map(Ok),
            Kind::Parts(parts) => ready!(parts.poll_next(cx)),
            Kind::Channel(rx) => ready!(rx.poll_recv(cx)),
            Kind::Stream(chunks) => ready!(chunks.as_mut().poll_next(cx)),
        };
        if let (Some(Ok(data)), Some(counter)) = (&next, &this.bytes_sent) {
            counter.inc_by(data.len() as u64);
        }
        Poll::Ready(next.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Parts(parts) => parts.remaining == 0,
            Kind::Channel(_) | Kind::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Parts(parts) => SizeHint::with_exact(parts.remaining),
            Kind::Channel(_) | Kind::Stream(_) => SizeHint::default(),
        }
    }
}

struct PartsBody {
    file: Option<Arc<File>>,
    parts: VecDeque<Part>,
    remaining: u64,
    ring: Vec<BytesMut>,
    reading: Option<JoinHandle<io::Result<BytesMut>>>,
    /// The connection's sendfile queue: file ranges go there as
    /// placeholders instead of being read.
    sendfile: Option<Pending>,
}

impl PartsBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(handle) = &mut self.reading {
                let result = ready!(Pin::new(handle).poll(cx));
                self.reading = None;
                let mut buf = match result {
                    Ok(Ok(buf)) => buf,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(join) => return Poll::Ready(Some(Err(io::Error::other(join)))),
                };
                if buf.is_empty() {
                    // The file shrank below the Content-Length we promised;
                    // aborting the connection is the only honest answer.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while it was being sent",
                    ))));
                }
                let data = buf.split().freeze();
                self.give_back(buf);
                self.advance(data.len() as u64);
                return Poll::Ready(Some(Ok(data)));
            }
            match self.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Bytes(_)) => {
                    let Some(Part::Bytes(b)) = self.parts.pop_front() else {
                        unreachable!("front was a Bytes part")
                    };
                    self.remaining -= b.len() as u64;
                    if b.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(b)));
                }
                Some(Part::File { len: 0, .. }) => {
                    self.parts.pop_front();
                }
                Some(&mut Part::File { offset, len }) => {
                    let Some(file) = self.file.clone() else {
                        return Poll::Ready(Some(Err(io::Error::other(
                            "file part without a file",
                        ))));
                    };
                    if let Some(pending) = &self.sendfile {
                        let n = len.min(MAX_FRAME as u64) as usize;
                        let placeholder = pending.push(file, offset, n);
                        self.advance(n as u64);
                        return Poll::Ready(Some(Ok(placeholder)));
                    }
                    let want = len.min(CHUNK as u64) as usize;
                    let mut buf = self.take_buffer();
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        buf.resize(want, 0);
                        let n = read_full_at(&file, &mut buf, offset)?;
                        buf.truncate(n);
                        Ok(buf)
                    }));
                }
            }
        }
    }

    fn advance(&mut self, n: u64) {
        self.remaining -= n;
        if let Some(Part::File { offset, len }) = self.parts.front_mut() {
            *offset += n;
            *len -= n;
        }
    }

    /// A buffer whose previous contents hyper has finished with, or a new one.
    fn take_buffer(&mut self) -> BytesMut {
        for i in 0..self.ring.len() {
            if self.ring[i].try_reclaim(CHUNK) {
                return self.ring.swap_remove(i);
            }
        }
        BytesMut::with_capacity(CHUNK)
    }

    fn give_back(&mut self, buf: BytesMut) {
        if self.ring.len() == RING {
            self.ring.remove(0);
        }
        self.ring.push(buf);
    }
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;

    #[tokio::test]
    async fn parts_read_exactly_the_ranges() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let parts = vec![
            Part::Bytes(Bytes::from_static(b"<")),
            Part::File {
                offset: 10,
                len: 100_000,
            },
            Part::Bytes(Bytes::from_static(b">")),
            Part::File {
                offset: 199_990,
                len: 10,
            },
        ];
        let body = Body::parts(Some(Arc::new(f)), parts);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(100_012));
        let got = body.collect().await.unwrap().to_bytes();
        let mut want = b"<".to_vec();
        want.extend_from_slice(&data[10..100_010]);
        want.push(b'>');
        want.extend_from_slice(&data[199_990..]);
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[tokio::test]
    async fn shrunken_file_is_an_error_not_a_short_body() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1; 100]).unwrap();
        let body = Body::parts(
            Some(Arc::new(f)),
            vec![Part::File {
                offset: 0,
                len: 1000,
            }],
        );
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn buffers_are_reused_across_chunks() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7; CHUNK * 8]).unwrap();
        let mut body = Body::parts(
            Some(Arc::new(f)),
            vec![Part::File {
                offset: 0,
                len: (CHUNK * 8) as u64,
            }],
        );
        let mut ptrs = std::collections::HashSet::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            ptrs.insert(data.as_ptr() as usize);
            // Dropping `data` here is what hyper does after writing it.
        }
        assert!(
            ptrs.len() <= 2,
            "allocated {} buffers for 8 chunks",
            ptrs.len()
        );
    }
}
