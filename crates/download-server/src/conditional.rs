//! Conditional requests (RFC 9110 §13): validators and the precondition order.
//!
//! Entity-tag lists and their strong/weak comparison come from the `headers`
//! crate. If-Range is evaluated here because `headers::IfRange` treats an older
//! date as a match, while RFC 9110 §13.1.5 requires an exact match.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headers::{ETag, HeaderMapExt, IfMatch, IfNoneMatch};
use http::{header, HeaderMap, HeaderValue, Method};

/// The validators of one file, derived from its metadata.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong: length, nanosecond mtime and inode change whenever the content
    /// can have changed (an in-place rewrite updates mtime; an atomic rename
    /// changes the inode). Kept as the header's value: it is parsed into an
    /// [`ETag`] only for a request that has a tag to compare
    /// ([`Validators::etag`]).
    etag: HeaderValue,
    /// Truncated to whole seconds, the resolution of an HTTP-date.
    pub last_modified: SystemTime,
    last_modified_value: HeaderValue,
}

impl Validators {
    pub fn new(len: u64, modified: SystemTime, inode: u64) -> Self {
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let etag = format!(
            "\"{len:x}-{:x}{:08x}-{inode:x}\"",
            since_epoch.as_secs(),
            since_epoch.subsec_nanos()
        );
        let last_modified = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
        Self {
            etag: HeaderValue::from_str(&etag).expect("ETag text is ASCII"),
            last_modified,
            last_modified_value: HeaderValue::from_str(&httpdate::fmt_http_date(last_modified))
                .expect("HTTP-date is ASCII"),
        }
    }

    pub fn etag(&self) -> ETag {
        self.etag
            .to_str()
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("hex digits form a valid ETag")
    }

    pub fn etag_header(&self) -> HeaderValue {
        self.etag.clone()
    }

    pub fn last_modified_header(&self) -> HeaderValue {
        self.last_modified_value.clone()
    }
}

/// What the preconditions of a request decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Serve the request. `honor_range` is false when the method is not GET
    /// or an `If-Range` does not match: then the whole representation is sent.
    Proceed { honor_range: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the preconditions in the order RFC 9110 §13.2.2 prescribes.
pub fn evaluate(method: &Method, headers: &HeaderMap, v: &Validators) -> Outcome {
    let safe = method == Method::GET || method == Method::HEAD;

    // 1. If-Match (strong comparison). A header we cannot parse is a
    //    condition we cannot prove true, so it fails rather than being ignored.
    if headers.contains_key(header::IF_MATCH) {
        match clean_tags(headers, &header::IF_MATCH)
            .then(|| headers.typed_get::<IfMatch>())
            .flatten()
        {
            Some(if_match) if if_match.precondition_passes(&v.etag()) => {}
            _ => return Outcome::Failed,
        }
    } else if let Some(date) = single_date(headers, &header::IF_UNMODIFIED_SINCE) {
        // 2. If-Unmodified-Since, only without If-Match.
        if v.last_modified > date {
            return Outcome::Failed;
        }
    }

    // 3. If-None-Match (weak comparison).
    if headers.contains_key(header::IF_NONE_MATCH) {
        let parsed = clean_tags(headers, &header::IF_NONE_MATCH)
            .then(|| headers.typed_get::<IfNoneMatch>())
            .flatten();
        if let Some(if_none_match) = parsed {
            if !if_none_match.precondition_passes(&v.etag()) {
                return if safe {
                    Outcome::NotModified
                } else {
                    Outcome::Failed
                };
            }
        }
    } else if safe {
        // 4. If-Modified-Since, only without If-None-Match and for GET/HEAD.
        if let Some(date) = single_date(headers, &header::IF_MODIFIED_SINCE) {
            if v.last_modified <= date {
                return Outcome::NotModified;
            }
        }
    }

    // 5. Range is defined for GET only (RFC 9110 §14.2); If-Range gates it.
    let honor_range = method == Method::GET
        && match headers.get(header::IF_RANGE) {
            None => true,
            Some(value) => if_range_matches(value, v),
        };
    Outcome::Proceed { honor_range }
}

/// Whether every quoted entity tag in the header holds only `etagc` bytes
/// (RFC 9110 §8.8.3: no space, tab or control). HeaderValue lets a space
/// through, and the `headers` crate asserts it never sees one: the fuzz
/// test found `If-None-Match: "", " "` panicking a debug build's worker.
/// Such a header is not a valid list, so it is treated as unparsable.
fn clean_tags(headers: &HeaderMap, name: &header::HeaderName) -> bool {
    headers.get_all(name).iter().all(|value| {
        let mut quoted = false;
        value.as_bytes().iter().all(|&b| {
            if b == b'"' {
                quoted = !quoted;
            }
            !quoted || b == b'"' || b == 0x21 || b >= 0x23 && b != 0x7f
        })
    })
}

/// RFC 9110 §13.1.5: an entity tag must match strongly (a weak tag never
/// does); a date must equal Last-Modified exactly.
fn if_range_matches(value: &HeaderValue, v: &Validators) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with("W/") {
        false
    } else if text.starts_with('"') {
        v.etag.as_bytes() == text.as_bytes()
    } else {
        httpdate::parse_http_date(text).is_ok_and(|date| date == v.last_modified)
    }
}

/// An HTTP-date header that must be ignored when invalid or repeated
/// (RFC 9110 §13.1.3, §13.1.4).
fn single_date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validators() -> Validators {
        Validators::new(1000, UNIX_EPOCH + Duration::new(1_700_000_000, 123), 42)
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn run(method: Method, pairs: &[(&str, &str)]) -> Outcome {
        evaluate(&method, &req(pairs), &validators())
    }

    const PROCEED: Outcome = Outcome::Proceed { honor_range: true };

    #[test]
    fn etag_is_strong_and_stable() {
        let v = validators();
        assert!(!v.etag.as_bytes().starts_with(b"W/"));
        assert_eq!(v.etag, validators().etag);
        let other = Validators::new(1001, UNIX_EPOCH + Duration::new(1_700_000_000, 123), 42);
        assert_ne!(v.etag, other.etag);
    }

    #[test]
    fn if_none_match() {
        let tag = validators().etag.to_str().unwrap().to_owned();
        assert_eq!(
            run(Method::GET, &[("if-none-match", &tag)]),
            Outcome::NotModified
        );
        assert_eq!(
            run(Method::HEAD, &[("if-none-match", "*")]),
            Outcome::NotModified
        );
        let weak = format!("W/{tag}");
        let listed = format!("\"x\", {weak}");
        assert_eq!(
            run(Method::GET, &[("if-none-match", &listed)]),
            Outcome::NotModified
        );
        assert_eq!(run(Method::GET, &[("if-none-match", "\"other\"")]), PROCEED);
    }

    #[test]
    fn if_match() {
        let tag = validators().etag.to_str().unwrap().to_owned();
        assert_eq!(run(Method::GET, &[("if-match", &tag)]), PROCEED);
        assert_eq!(run(Method::GET, &[("if-match", "*")]), PROCEED);
        assert_eq!(
            run(Method::GET, &[("if-match", "\"other\"")]),
            Outcome::Failed
        );
        // Weak tags never match strongly.
        let weak = format!("W/{tag}");
        assert_eq!(run(Method::GET, &[("if-match", &weak)]), Outcome::Failed);
        assert_eq!(
            run(Method::GET, &[("if-match", "garbage")]),
            Outcome::Failed
        );
    }

    #[test]
    fn dates() {
        let lm = httpdate::fmt_http_date(validators().last_modified);
        let later = httpdate::fmt_http_date(validators().last_modified + Duration::from_secs(5));
        let earlier = httpdate::fmt_http_date(validators().last_modified - Duration::from_secs(5));
        assert_eq!(
            run(Method::GET, &[("if-modified-since", &lm)]),
            Outcome::NotModified
        );
        assert_eq!(
            run(Method::GET, &[("if-modified-since", &later)]),
            Outcome::NotModified
        );
        assert_eq!(
            run(Method::GET, &[("if-modified-since", &earlier)]),
            PROCEED
        );
        assert_eq!(
            run(Method::GET, &[("if-modified-since", "yesterday")]),
            PROCEED
        );
        assert_eq!(
            run(
                Method::GET,
                &[("if-modified-since", &lm), ("if-modified-since", &lm)]
            ),
            PROCEED
        );
        assert_eq!(run(Method::GET, &[("if-unmodified-since", &lm)]), PROCEED);
        assert_eq!(
            run(Method::GET, &[("if-unmodified-since", &earlier)]),
            Outcome::Failed
        );
        assert_eq!(
            run(Method::GET, &[("if-unmodified-since", "nonsense")]),
            PROCEED
        );
    }

    #[test]
    fn precedence() {
        let tag = validators().etag.to_str().unwrap().to_owned();
        let earlier = httpdate::fmt_http_date(validators().last_modified - Duration::from_secs(5));
        // If-Match wins over If-Unmodified-Since.
        assert_eq!(
            run(
                Method::GET,
                &[("if-match", &tag), ("if-unmodified-since", &earlier)]
            ),
            PROCEED
        );
        // If-None-Match wins over If-Modified-Since.
        let lm = httpdate::fmt_http_date(validators().last_modified);
        assert_eq!(
            run(
                Method::GET,
                &[("if-none-match", "\"other\""), ("if-modified-since", &lm)]
            ),
            PROCEED
        );
        // If-Match failure comes before If-None-Match.
        assert_eq!(
            run(
                Method::GET,
                &[("if-match", "\"other\""), ("if-none-match", &tag)]
            ),
            Outcome::Failed
        );
    }

    #[test]
    fn if_range() {
        let tag = validators().etag.to_str().unwrap().to_owned();
        let lm = httpdate::fmt_http_date(validators().last_modified);
        let earlier = httpdate::fmt_http_date(validators().last_modified - Duration::from_secs(5));
        let no_range = Outcome::Proceed { honor_range: false };
        assert_eq!(run(Method::GET, &[("if-range", &tag)]), PROCEED);
        assert_eq!(run(Method::GET, &[("if-range", &lm)]), PROCEED);
        assert_eq!(run(Method::GET, &[("if-range", "\"stale\"")]), no_range);
        assert_eq!(
            run(Method::GET, &[("if-range", &format!("W/{tag}"))]),
            no_range
        );
        assert_eq!(run(Method::GET, &[("if-range", &earlier)]), no_range);
        // Range is a GET-only feature.
        assert_eq!(run(Method::HEAD, &[]), no_range);
    }
}
