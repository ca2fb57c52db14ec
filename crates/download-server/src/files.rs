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
use crate::conditional::{self, Outcome, Validators};
use crate::range::{self, RangeDecision};
use crate::response::{content_disposition, internal_error, path_error, plain};
use crate::root::{FileStat, PathError, RelPath, ServeRoot};
use crate::sendfile::Pending;

/// What opening returns.
struct Opened {
    file: Arc<File>,
    len: u64,
    validators: Validators,
    /// The whole content when it fits in one chunk and the method is GET.
    small: Option<Bytes>,
}

/// Open, fstat and read on the blocking pool; the file is kept open for
/// the next request.
fn open(root: &ServeRoot, rel: &RelPath, prefetch: bool) -> Result<Opened, PathError> {
    let (file, meta) = root.open_file(rel)?;
    let (file, stat) = (Arc::new(file), FileStat::from(&meta));
    root.keep(rel, &file, &stat);
    opened(file, &stat, prefetch, |file, buf| {
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
    let (file, stat) = match root.open_file_cached(rel) {
        Ok(Some(opened)) => opened,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(opened(file, &stat, prefetch, |file, buf| {
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
    file: Arc<File>,
    stat: &FileStat,
    prefetch: bool,
    read: impl FnOnce(&File, &mut [u8]) -> Result<usize, PathError>,
) -> Result<Opened, PathError> {
    let len = stat.len;
    let validators = Validators::new(len, stat.modified, stat.ino);
    let small = if prefetch && len <= CHUNK as u64 {
        let mut buf = vec![0; len as usize];
        let n = read(&file, &mut buf)?;
        // A short read means the file changed under us, or the page cache
        // holds only part of it; stream it instead.
        (n == buf.len()).then(|| Bytes::from(buf))
    } else {
        None
    };
    Ok(Opened {
        file,
        len,
        validators,
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
    let file_name = rel.file_name().to_vec();
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
        len,
        validators,
        small,
    } = opened;

    let mut builder = Response::builder()
        .header(header::ETAG, validators.etag_header())
        .header(header::LAST_MODIFIED, validators.last_modified_header())
        .header(header::CACHE_CONTROL, cache_control);

    let honor_range = match conditional::evaluate(method, headers, &validators) {
        Outcome::NotModified => {
            let response = builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .expect("static headers are valid");
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

    let content_type = mime_guess::from_path(String::from_utf8_lossy(&file_name).as_ref())
        .first_raw()
        .unwrap_or("application/octet-stream");
    builder = builder
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_DISPOSITION, content_disposition(&file_name));

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
            content_type.to_owned(),
            vec![source.part(0..len)],
        ),
        RangeDecision::Partial(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            builder = builder.header(header::CONTENT_RANGE, content_range(r, len));
            (
                StatusCode::PARTIAL_CONTENT,
                content_type.to_owned(),
                vec![source.part(r.clone())],
            )
        }
        RangeDecision::Partial(ranges) => {
            let boundary = hex::encode(rand::random::<[u8; 12]>());
            let parts = multipart(&source, &ranges, len, content_type, &boundary);
            (
                StatusCode::PARTIAL_CONTENT,
                format!("multipart/byteranges; boundary={boundary}"),
                parts,
            )
        }
    };
    let body_len: u64 = parts.iter().map(Part::len).sum();
    builder = builder
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body_len);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::parts(source.file(), parts).sendfile(sendfile)
    };
    builder.body(body).expect("headers are valid")
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
