//! Small response helpers shared by the routes.

use http::{header, HeaderValue, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::body::Body;
use crate::root::PathError;

/// A short plain-text answer: every refusal says what was wrong.
pub fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let text = format!("{message}\n");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, text.len())
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::full(text))
        .expect("static headers are valid")
}

pub fn path_error(e: &PathError) -> Response<Body> {
    let status = match e {
        PathError::BadEncoding | PathError::ForbiddenChar | PathError::BadSegment => {
            StatusCode::BAD_REQUEST
        }
        PathError::Escapes | PathError::PermissionDenied => StatusCode::FORBIDDEN,
        PathError::NotFound | PathError::NotRegular | PathError::NotDirectory => {
            StatusCode::NOT_FOUND
        }
        PathError::Io(io) => return internal_error(io),
    };
    plain(status, &e.to_string())
}

/// Logs the detail, tells the client only that it failed.
pub fn internal_error(e: &dyn std::fmt::Display) -> Response<Body> {
    tracing::error!(error = %e, "internal error");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// RFC 5987 `attr-char`: everything else is percent-encoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: attachment` per RFC 6266: a quoted ASCII `filename`
/// for old clients and, when the name is not plain ASCII, a UTF-8
/// `filename*` (RFC 8187) that modern clients prefer.
pub fn content_disposition(name: &[u8]) -> HeaderValue {
    let name = String::from_utf8_lossy(name);
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '_',
        })
        .collect();
    let value = if fallback == name {
        format!("attachment; filename=\"{fallback}\"")
    } else {
        format!(
            "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
            utf8_percent_encode(&name, ATTR_CHAR)
        )
    };
    HeaderValue::from_str(&value).expect("only visible ASCII remains")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition() {
        assert_eq!(
            content_disposition(b"report.pdf"),
            "attachment; filename=\"report.pdf\""
        );
        assert_eq!(
            content_disposition("naïve résumé.txt".as_bytes()),
            "attachment; filename=\"na_ve r_sum_.txt\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt"
        );
        assert_eq!(
            content_disposition(b"a\"b\\c.txt"),
            "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%5Cc.txt"
        );
        assert_eq!(
            content_disposition("日本.zip".as_bytes()),
            "attachment; filename=\"__.zip\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.zip"
        );
        // Control characters never reach the header.
        assert!(content_disposition(b"a\r\nb")
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"a__b\""));
    }
}
