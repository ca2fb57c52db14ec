//! The client's side of HTTP/1.1, by hand: send a request, read one
//! response (status line, headers, a Content-Length, chunked or
//! until-close body). Just enough for loopback load against servers that
//! speak plain HTTP/1.1.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// An open connection to the target.
pub struct Connection {
    pub reader: BufReader<TcpStream>,
    /// Whether a response already came over it (a reused connection may
    /// have been closed by the server while idle).
    pub used: bool,
}

/// What one exchange produced.
pub enum Outcome {
    /// A response with this status; `keep` says the connection is reusable.
    Response { status: u16, keep: bool },
    /// The connection closed before any byte of a response.
    Closed,
}

/// Longest status or header line accepted.
const MAX_LINE: u64 = 16 * 1024;

/// Sends one request and reads its response, body included.
pub fn exchange(c: &mut Connection, request: &[u8]) -> io::Result<Outcome> {
    c.reader.get_mut().write_all(request)?;
    let Some(status_line) = read_line(&mut c.reader)? else {
        return Ok(Outcome::Closed);
    };
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut keep = version == "HTTP/1.1";
    let mut length: Option<u64> = None;
    let mut chunked = false;
    loop {
        let line = read_line(&mut c.reader)?.ok_or_else(|| eof("in the headers"))?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse()
                    .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                keep = false;
            } else if value.contains("keep-alive") {
                keep = true;
            }
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        // No body. (Interim 1xx responses are not expected from a GET.)
    } else if chunked {
        read_chunked(&mut c.reader)?;
    } else if let Some(n) = length {
        let got = io::copy(&mut (&mut c.reader).take(n), &mut io::sink())?;
        if got != n {
            return Err(eof("in the body"));
        }
    } else {
        // No length: the body runs to the end of the connection.
        io::copy(&mut c.reader, &mut io::sink())?;
        keep = false;
    }
    Ok(Outcome::Response { status, keep })
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> io::Result<()> {
    loop {
        let line = read_line(r)?.ok_or_else(|| eof("in a chunk size"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(r)?
                .ok_or_else(|| eof("in the trailers"))?
                .is_empty()
            {}
            return Ok(());
        }
        if io::copy(&mut r.take(size), &mut io::sink())? != size {
            return Err(eof("in a chunk"));
        }
        if !read_line(r)?
            .ok_or_else(|| eof("after a chunk"))?
            .is_empty()
        {
            return Err(invalid("no CRLF after a chunk".into()));
        }
    }
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` at a
/// clean end of stream.
fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(invalid("line too long or cut short".into()));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid("a line that is not UTF-8".into()))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn eof(where_: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {where_}"),
    )
}
