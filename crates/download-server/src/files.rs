//! `GET`/`HEAD /files/{path}`: one file, with validators, preconditions and
//! byte ranges.
//!
//! Opening, `fstat` and (for files of at most one chunk) the whole read
//! happen on the async worker when none of them can wait on the disk: the
//! file is kept open ([`crate::open_files`]) or the path's dentries are
//! cached (`RESOLVE_CACHED`), and the bytes are in the page cache
//! (`preadv2(RWF_NOWAIT)`), which is the common case of a busy file
//! server. Otherwise they happen in a single trip to the blocking pool
//! (`tokio::fs` would make three); that hand-off is most of a small file's
//! cost, so it is kept for when the disk must be read.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::{Body, Part, CHUNK};
use crate::conditional::{self, Outcome};
use crate::open_files::Kept;
use crate::range::{self, RangeDecision};
use crate::representation::Representation;
use crate::response::{internal_error, path_error, plain};
use crate::root::{FileStat, PathError, RelPath, ServeRoot};
use crate::sendfile::Pending;

/// What opening returns.
struct Opened {
    file: Arc<File>,
    representation: Arc<Representation>,
    /// The whole content when it fits in one chunk and the method is GET.
    small: Option<Bytes>,
}

/// Open, fstat and read on the blocking pool; the file is kept open for
/// the next request.
fn open(root: &ServeRoot, rel: &RelPath, prefetch: bool) -> Result<Opened, PathError> {
    let (file, meta) = root.open_file(rel)?;
    let kept = Kept::new(rel, Arc::new(file), FileStat::from(&meta));
    root.keep(rel, &kept);
    opened(kept, prefetch, |file, buf| {
        std::os::unix::fs::FileExt::read_at(file, buf, 0).map_err(PathError::Io)
    })
}

/// Open (or find kept open), fstat and read on the async worker, or `None`
/// where one of them would wait on the disk. A small file not in the page
/// cache is still served from here: its body then streams.
fn open_inline(
    root: &ServeRoot,
    rel: &RelPath,
    prefetch: bool,
) -> Option<Result<Opened, PathError>> {
    let kept = match root.open_file_cached(rel) {
        Ok(Some(kept)) => kept,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(opened(kept, prefetch, |file, buf| {
        let read = rustix::io::preadv2(
            file,
            &mut [std::io::IoSliceMut::new(buf)],
            0,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        // EAGAIN: not (all) in the page cache; nothing is lost by streaming.
        Ok(read.unwrap_or(0))
    }))
}

fn opened(
    kept: Kept,
    prefetch: bool,
    read: impl FnOnce(&File, &mut [u8]) -> Result<usize, PathError>,
) -> Result<Opened, PathError> {
    let len = kept.stat.len;
    let small = if prefetch && len <= CHUNK as u64 {
        let mut buf = vec![0; len as usize];
        let n = read(&kept.file, &mut buf)?;
        // A short read means the file changed under us, or the page cache
        // holds only part of it; stream it instead.
        (n == buf.len()).then(|| Bytes::from(buf))
    } else {
        None
    };
    Ok(Opened {
        file: kept.file,
        representation: kept.representation,
        small,
    })
}

pub async fn serve(
    root: Arc<ServeRoot>,
    rel: RelPath,
    method: &Method,
    headers: &HeaderMap,
    cache_control: HeaderValue,
    sendfile: Option<Pending>,
) -> Response<Body> {
    let prefetch = method == Method::GET;
    let opened = match open_inline(&root, &rel, prefetch) {
        Some(Ok(opened)) => opened,
        Some(Err(e)) => return path_error(&e),
        None => match tokio::task::spawn_blocking(move || open(&root, &rel, prefetch)).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => return path_error(&e),
            Err(join) => return internal_error(&join),
        },
    };
    let Opened {
        file,
        representation: rep,
        small,
    } = opened;
    let len = rep.len;

    // One allocation for every header a download can carry.
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.reserve(12);
    h.insert(header::ETAG, rep.validators.etag_header());
    h.insert(header::LAST_MODIFIED, rep.validators.last_modified_header());
    h.insert(header::CACHE_CONTROL, cache_control);

    let honor_range = match conditional::evaluate(method, headers, &rep.validators) {
        Outcome::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        Outcome::Failed => {
            return plain(StatusCode::PRECONDITION_FAILED, "precondition failed");
        }
        Outcome::Proceed { honor_range } => honor_range,
    };
    let decision = match headers.get(header::RANGE) {
        Some(value) if honor_range => range::evaluate(value.as_bytes(), len),
        _ => RangeDecision::Full,
    };

    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_DISPOSITION, rep.disposition.clone());

    let source = match small {
        Some(bytes) => Source::Memory(bytes),
        None => Source::File(file),
    };
    let (status, content_type, parts) = match decision {
        RangeDecision::Unsatisfiable => {
            let mut response = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
            );
            return response;
        }
        RangeDecision::Full => (
            StatusCode::OK,
            rep.content_type.clone(),
            vec![source.part(0..len)],
        ),
        RangeDecision::Partial(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range(r, len)).expect("digits"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                rep.content_type.clone(),
                vec![source.part(r.clone())],
            )
        }
        RangeDecision::Partial(ranges) => {
            let boundary = hex::encode(rand::random::<[u8; 12]>());
            let inner = rep.content_type.to_str().expect("a MIME type is ASCII");
            let parts = multipart(&source, &ranges, len, inner, &boundary);
            let outer = format!("multipart/byteranges; boundary={boundary}");
            let outer = HeaderValue::from_str(&outer).expect("hex boundary");
            (StatusCode::PARTIAL_CONTENT, outer, parts)
        }
    };
    let body_len: u64 = parts.iter().map(Part::len).sum();
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if method != Method::HEAD {
        *response.body_mut() = Body::parts(source.file(), parts).sendfile(sendfile);
    }
    response
}

enum Source {
    Memory(Bytes),
    File(Arc<File>),
}

impl Source {
    fn part(&self, r: Range<u64>) -> Part {
        match self {
            Source::Memory(b) => Part::Bytes(b.slice(r.start as usize..r.end as usize)),
            Source::File(_) => Part::File {
                offset: r.start,
                len: r.end - r.start,
            },
        }
    }

    fn file(&self) -> Option<Arc<File>> {
        match self {
            Source::Memory(_) => None,
            Source::File(f) => Some(Arc::clone(f)),
        }
    }
}

fn content_range(r: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", r.start, r.end - 1)
}

/// `multipart/byteranges` (RFC 9110 §14.6) as a list of parts whose total
/// length is known up front, so the response carries a Content-Length.
fn multipart(
    source: &Source,
    ranges: &[Range<u64>],
    len: u64,
    content_type: &str,
    boundary: &str,
) -> Vec<Part> {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\ncontent-type: {content_type}\r\ncontent-range: {}\r\n\r\n",
            content_range(r, len)
        );
        parts.push(Part::Bytes(Bytes::from(head)));
        parts.push(source.part(r.clone()));
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    parts
}
