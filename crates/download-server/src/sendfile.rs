//! Zero-copy file bodies through hyper.
//!
//! hyper writes every byte of a response itself and has no way to hand a
//! file to the kernel, so a file range travels through it as a
//! *placeholder*: a slice of one shared region that is never written or
//! read. The connection's socket wrapper, [`SendfileStream`], recognises
//! placeholder bytes by their address when hyper writes them and sends the
//! file range they stand for with sendfile(2) instead. The file's bytes go
//! from the page cache to the socket without entering user space, so a
//! download holds no buffer at all, whatever its size.
//!
//! Why this is sound:
//! - hyper keeps body chunks as the `Bytes` it was given, and writes them
//!   with `writev`, when the IO says it writes vectored
//!   ([`SendfileStream::is_write_vectored`] is always true); it copies them
//!   only into its "flatten" buffer, which it uses for IOs that do not.
//! - A connection's responses are written in order, and so are the
//!   placeholders of each: [`Pending`] is a FIFO of the ranges behind them.
//!   Each entry remembers where its placeholder ends, and a write whose
//!   placeholder does not end there aborts the connection: a client gets a
//!   truncated response, never the wrong bytes.
//! - The region is allocated zeroed and never touched, so it costs address
//!   space, not memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Largest placeholder, and so the most one body frame hands to hyper: the
/// socket takes what it can of it per sendfile call.
pub const MAX_FRAME: usize = 1 << 20;

/// Distinct placeholder ends, so that a frame hyper dropped unwritten would
/// be caught rather than answered with the next range's bytes.
const SLOTS: usize = 4096;

/// The placeholder region: `MAX_FRAME + SLOTS` zero bytes, never read.
fn region() -> &'static Bytes {
    static REGION: OnceLock<Bytes> = OnceLock::new();
    // vec![0; n] is calloc: untouched pages are never made resident.
    REGION.get_or_init(|| Bytes::from(vec![0u8; MAX_FRAME + SLOTS]))
}

fn in_region(buf: &[u8]) -> bool {
    let r = region();
    let (start, p) = (r.as_ptr() as usize, buf.as_ptr() as usize);
    !buf.is_empty() && p >= start && p + buf.len() <= start + r.len()
}

/// One file range behind a placeholder.
struct Range {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    /// Address one past the placeholder's last byte.
    end: usize,
}

/// The file ranges a connection's responses handed to hyper, in order. One
/// per connection, shared by the socket wrapper and the response bodies (a
/// request extension).
#[derive(Clone, Default)]
pub struct Pending {
    ranges: Arc<Mutex<VecDeque<Range>>>,
    next_slot: Arc<std::sync::atomic::AtomicUsize>,
}

impl Pending {
    /// Queues `len` bytes of `file` from `offset` (at most [`MAX_FRAME`])
    /// and returns the placeholder to hand to hyper in their place.
    pub fn push(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        debug_assert!(len > 0 && len <= MAX_FRAME);
        let len = len.min(MAX_FRAME);
        let slot = self
            .next_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % SLOTS;
        let placeholder = region().slice(slot..slot + len);
        let end = placeholder.as_ptr() as usize + len;
        self.lock().push_back(Range {
            file,
            offset,
            remaining: len as u64,
            end,
        });
        placeholder
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Range>> {
        // A panic elsewhere while holding it leaves the queue consistent:
        // every update is a single push, pop or field write.
        self.ranges.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connection's socket: placeholder bytes become sendfile(2) of the
/// range they stand for; everything else is written as it is.
pub struct SendfileStream {
    inner: TcpStream,
    pending: Pending,
}

impl SendfileStream {
    pub fn new(inner: TcpStream, pending: Pending) -> Self {
        Self { inner, pending }
    }

    /// Sends up to `placeholder.len()` bytes of the front range.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        placeholder: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let mut ranges = self.pending.lock();
            let Some(front) = ranges.front_mut() else {
                return Poll::Ready(Err(mismatch("with no file range behind it")));
            };
            let end = placeholder.as_ptr() as usize + placeholder.len();
            if end != front.end || placeholder.len() as u64 != front.remaining {
                return Poll::Ready(Err(mismatch("out of step with its file range")));
            }
            let mut offset = front.offset;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(
                    &self.inner,
                    &*front.file,
                    Some(&mut offset),
                    front.remaining as usize,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    // The file shrank below the Content-Length promised;
                    // aborting the connection is the only honest answer.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while it was being sent",
                    )));
                }
                Ok(n) => {
                    front.offset += n as u64;
                    front.remaining -= n as u64;
                    if front.remaining == 0 {
                        ranges.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SendfileStream {
    /// Writes what comes before a file range with `MSG_MORE`: the kernel
    /// holds a short tail (a response head) back to go out in one segment
    /// with the range's first bytes, as nginx's `tcp_nopush` does. Only
    /// called with a placeholder next in hyper's queue, so the sendfile
    /// that pushes the segment out is the very next write; ACKs flush the
    /// queue meanwhile in any case.
    fn poll_head(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendFlags};
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                let mut no_control = SendAncillaryBuffer::default();
                sendmsg(
                    &self.inner,
                    bufs,
                    &mut no_control,
                    SendFlags::MORE | SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

fn mismatch(what: &str) -> io::Error {
    io::Error::other(format!("sendfile placeholder {what}"))
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if in_region(buf) {
            return this.poll_sendfile(cx, buf);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    /// Writes the slices before the first placeholder with writev, or, when
    /// a placeholder comes first, its range with sendfile.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match bufs.iter().position(|b| in_region(b)) {
            Some(0) => this.poll_sendfile(cx, &bufs[0]),
            Some(k) => this.poll_head(cx, &bufs[..k]),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (l.accept().await.unwrap().0, c)
    }

    fn file(data: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Arc::new(f)
    }

    /// Head bytes, two ranges of one file and a tail, written the way hyper
    /// writes them: what arrives is the bytes, in order, not placeholders.
    #[tokio::test]
    async fn placeholders_arrive_as_the_file_bytes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let f = file(&data);
        let (server, mut client) = pair().await;
        let pending = Pending::default();
        let mut s = SendfileStream::new(server, pending.clone());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let a = pending.push(Arc::clone(&f), 10, MAX_FRAME);
        let b = pending.push(Arc::clone(&f), 2_000_000, 5);
        let mut queue: Vec<Bytes> = vec![
            Bytes::from_static(b"head"),
            a,
            b,
            Bytes::from_static(b"tail"),
        ];
        while !queue.is_empty() {
            let iovs: Vec<IoSlice<'_>> = queue.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = s.write_vectored(&iovs).await.unwrap();
            while n > 0 {
                let take = n.min(queue[0].len());
                bytes::Buf::advance(&mut queue[0], take);
                n -= take;
                if queue[0].is_empty() {
                    queue.remove(0);
                }
            }
        }
        s.shutdown().await.unwrap();
        drop(s);
        let got = reader.await.unwrap();
        let mut want = b"head".to_vec();
        want.extend_from_slice(&data[10..10 + MAX_FRAME]);
        want.extend_from_slice(&data[2_000_000..2_000_005]);
        want.extend_from_slice(b"tail");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes differ");
    }

    /// A placeholder out of step with the queue is an error, never bytes.
    #[tokio::test]
    async fn a_placeholder_without_its_range_fails_the_write() {
        let (server, _client) = pair().await;
        let pending = Pending::default();
        let mut s = SendfileStream::new(server, pending.clone());
        let f = file(&[1; 100]);
        let first = pending.push(Arc::clone(&f), 0, 50);
        let second = pending.push(f, 50, 50);
        drop(first);
        // The first was "dropped unwritten": writing the second must fail.
        assert!(s.write(&second).await.is_err());
        let stray = region().slice(0..10);
        let mut s = SendfileStream::new(pair().await.0, Pending::default());
        assert!(s.write(&stray).await.is_err());
    }

    /// A file that shrinks mid-send ends the stream with an error.
    #[tokio::test]
    async fn a_shrunken_file_is_an_error() {
        let (server, _client) = pair().await;
        let pending = Pending::default();
        let mut s = SendfileStream::new(server, pending.clone());
        let p = pending.push(file(&[1; 10]), 0, 100);
        let mut p = p;
        let mut failed = false;
        for _ in 0..3 {
            match s.write(&p).await {
                Ok(n) => bytes::Buf::advance(&mut p, n),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed);
    }
}
