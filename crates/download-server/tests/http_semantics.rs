//! RFC 9110 behaviour of `/files`, checked with a real hyper client against
//! the server on an ephemeral port.

mod common;

use common::{get, pattern, request, Fixture, Running};
use http::{Method, StatusCode};

async fn start() -> (Fixture, Running) {
    let fixture = Fixture::new();
    let server = Running::start(fixture.config()).await;
    (fixture, server)
}

#[tokio::test]
async fn full_download_and_headers() {
    let (_f, s) = start().await;
    let r = get(&s.url("/files/big.bin"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == pattern(1_000_003), "body differs");
    assert_eq!(r.header("content-length"), Some("1000003"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"big.bin\"")
    );
    let etag = r.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    assert!(httpdate::parse_http_date(r.header("last-modified").unwrap()).is_ok());
    assert!(r.header("cache-control").is_some());
    assert!(r.header("date").is_some());

    let r = get(&s.url("/files/hello.txt"), &[]).await;
    assert_eq!(&r.body[..], b"hello, world\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = get(&s.url("/files/empty.txt"), &[]).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    assert_eq!(r.header("content-length"), Some("0"));
    let r = get(&s.url("/files/sub/deeper/data.json"), &[]).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = get(&s.url("/files/inside-link"), &[]).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &b"hello, world\n"[..])
    );
}

#[tokio::test]
async fn non_ascii_names_get_rfc5987_filename() {
    let (_f, s) = start().await;
    let r = get(&s.url("/files/sub/na%C3%AFve%20r%C3%A9sum%C3%A9.txt"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"na_ve r_sum_.txt\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt")
    );
}

#[tokio::test]
async fn head_matches_get_without_body() {
    let (_f, s) = start().await;
    for path in ["/files/big.bin", "/files/hello.txt"] {
        let g = get(&s.url(path), &[]).await;
        let h = request(Method::HEAD, &s.url(path), &[]).await;
        assert_eq!(h.status, StatusCode::OK);
        assert!(h.body.is_empty());
        for name in [
            "content-length",
            "content-type",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            assert_eq!(h.header(name), g.header(name), "{name} of {path}");
        }
    }
    // Range is defined for GET only: HEAD ignores it (RFC 9110 §14.2).
    let h = request(
        Method::HEAD,
        &s.url("/files/big.bin"),
        &[("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(h.status, StatusCode::OK);
}

#[tokio::test]
async fn single_ranges() {
    let (_f, s) = start().await;
    let data = pattern(1_000_003);
    let len = data.len();
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-0", 0, 1),
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, len),
        ("bytes=-500", len - 500, len),
        ("bytes=999990-2000000", 999_990, len),
        ("bytes=-99999999", 0, len),
        ("bytes=32767-32769", 32767, 32770),
    ];
    for &(range, start, end) in cases {
        let r = get(&s.url("/files/big.bin"), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{}/{len}", end - 1).as_str()),
            "{range}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((end - start).to_string().as_str())
        );
        assert!(r.body == data[start..end], "{range}: body differs");
    }
    // Small files are served from memory: ranges must still be exact.
    let r = get(&s.url("/files/hello.txt"), &[("range", "bytes=7-11")]).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"world"[..])
    );
}

#[tokio::test]
async fn unsatisfiable_and_invalid_ranges() {
    let (_f, s) = start().await;
    for range in ["bytes=1000003-", "bytes=2000000-3000000", "bytes=-0"] {
        let r = get(&s.url("/files/big.bin"), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some("bytes */1000003"),
            "{range}"
        );
    }
    let r = get(&s.url("/files/empty.txt"), &[("range", "bytes=0-")]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */0"));
    // Syntactically invalid: ignored, whole file (RFC 9110 §14.2).
    for range in [
        "bytes=5-1",
        "bytes=abc",
        "lines=1-2",
        "bytes=1-2-3",
        "bytes=",
    ] {
        let r = get(&s.url("/files/hello.txt"), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::OK, "{range}");
        assert_eq!(&r.body[..], b"hello, world\n");
    }
}

/// Splits a multipart/byteranges body into (content-range, data) pairs.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut rest = text;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let first = find(rest, delim.as_bytes()).expect("first boundary");
    rest = &rest[first + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            assert_eq!(rest, b"--\r\n", "closing delimiter");
            break;
        }
        assert!(rest.starts_with(b"\r\n"));
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8(rest[2..head_end].to_vec()).unwrap();
        let content_range = head
            .lines()
            .find_map(|l| l.strip_prefix("content-range: "))
            .unwrap()
            .to_string();
        rest = &rest[head_end + 4..];
        let next = find(rest, format!("\r\n{delim}").as_bytes()).unwrap();
        parts.push((content_range, rest[..next].to_vec()));
        rest = &rest[next + 2 + delim.len()..];
    }
    parts
}

#[tokio::test]
async fn multiple_ranges_are_multipart_byteranges() {
    let (_f, s) = start().await;
    let data = pattern(1_000_003);
    let r = get(
        &s.url("/files/big.bin"),
        &[("range", "bytes=0-9,500000-600000,-5")],
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    assert!(r.header("content-range").is_none());
    let parts = parse_multipart(&r.body, boundary);
    let want = [(0, 10), (500_000, 600_001), (999_998, 1_000_003)];
    assert_eq!(parts.len(), want.len());
    for ((cr, bytes), (a, b)) in parts.iter().zip(want) {
        assert_eq!(cr, &format!("bytes {a}-{}/1000003", b - 1));
        assert!(bytes[..] == data[a..b], "part {cr}");
    }
    // Overlapping ranges are coalesced into one part.
    let r = get(&s.url("/files/big.bin"), &[("range", "bytes=0-99,50-149")]).await;
    assert_eq!(r.header("content-range"), Some("bytes 0-149/1000003"));
    assert!(r.body == data[..150]);
}

#[tokio::test]
async fn conditional_requests() {
    let (_f, s) = start().await;
    let url = s.url("/files/hello.txt");
    let first = get(&url, &[]).await;
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();

    let r = get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(
        get(&url, &[("if-none-match", "*")]).await.status,
        StatusCode::NOT_MODIFIED
    );
    let weak = format!("W/{etag}");
    assert_eq!(
        get(&url, &[("if-none-match", &weak)]).await.status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get(&url, &[("if-none-match", "\"nope\"")]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&url, &[("if-modified-since", &lm)]).await.status,
        StatusCode::NOT_MODIFIED
    );
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(
        get(&url, &[("if-modified-since", old)]).await.status,
        StatusCode::OK
    );
    // If-None-Match takes precedence over If-Modified-Since.
    let r = get(
        &url,
        &[("if-none-match", "\"nope\""), ("if-modified-since", &lm)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    assert_eq!(
        get(&url, &[("if-match", &etag)]).await.status,
        StatusCode::OK
    );
    assert_eq!(get(&url, &[("if-match", "*")]).await.status, StatusCode::OK);
    let r = get(&url, &[("if-match", "\"nope\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        get(&url, &[("if-match", &weak)]).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    let r = get(&url, &[("if-unmodified-since", old)]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        get(&url, &[("if-unmodified-since", &lm)]).await.status,
        StatusCode::OK
    );
    let r = request(Method::HEAD, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn if_range_with_etag_and_date() {
    let (_f, s) = start().await;
    let url = s.url("/files/hello.txt");
    let first = get(&url, &[]).await;
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();
    let range = ("range", "bytes=0-4");
    let r = get(&url, &[range, ("if-range", &etag)]).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"hello"[..])
    );
    let r = get(&url, &[range, ("if-range", &lm)]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    // A stale validator means "send it all" (tower-http gets this wrong).
    let r = get(&url, &[range, ("if-range", "\"stale\"")]).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &b"hello, world\n"[..])
    );
    let r = get(
        &url,
        &[range, ("if-range", "Mon, 01 Jan 2001 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let weak = format!("W/{etag}");
    assert_eq!(
        get(&url, &[range, ("if-range", &weak)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn methods_routes_and_errors() {
    let (_f, s) = start().await;
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let r = request(method.clone(), &s.url("/files/hello.txt"), &[]).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    let cases = [
        ("/files/missing.txt", StatusCode::NOT_FOUND),
        ("/files/sub", StatusCode::NOT_FOUND),
        ("/files/", StatusCode::NOT_FOUND),
        ("/nowhere", StatusCode::NOT_FOUND),
        ("/files/hello.txt/x", StatusCode::NOT_FOUND),
        ("/files/loop-a", StatusCode::FORBIDDEN),
        ("/zip/hello.txt", StatusCode::NOT_FOUND),
        ("/zip/sub?compression=lzma", StatusCode::BAD_REQUEST),
    ];
    for (path, status) in cases {
        let r = get(&s.url(path), &[]).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path} has a body that says why");
    }
    let r = get(&s.url("/healthz"), &[]).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok\n"[..]));
}

#[tokio::test]
async fn metrics_count_requests_and_bytes() {
    let (_f, s) = start().await;
    get(&s.url("/files/big.bin"), &[]).await;
    get(&s.url("/files/missing"), &[]).await;
    let r = get(&s.url("/metrics"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("http_requests_total{route=\"files\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("http_requests_total{route=\"files\",status=\"404\"}"),
        1.0
    );
    assert!(value("http_response_body_bytes_total") >= 1_000_003.0);
    assert!(value("process_open_fds") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert_eq!(value("http_requests_in_flight"), 0.0);
}

/// Several responses on one keep-alive connection, pipelined: file bodies
/// go out by sendfile through the connection's queue of ranges, so each
/// response must get its own range's bytes, in order, between the heads
/// and the in-memory bodies around them.
#[tokio::test]
async fn pipelined_responses_each_get_their_own_bytes() {
    let (_f, s) = start().await;
    let addr = s.addr;
    let requests = [
        ("/files/big.bin", "bytes=5-700004"),
        ("/files/hello.txt", ""),
        ("/files/big.bin", "bytes=1-10,999990-"),
        ("/files/big.bin", ""),
    ];
    let raw_requests: String = requests
        .iter()
        .enumerate()
        .map(|(i, (path, range))| {
            let range = if range.is_empty() {
                String::new()
            } else {
                format!("range: {range}\r\n")
            };
            let close = if i + 1 == requests.len() {
                "connection: close\r\n"
            } else {
                ""
            };
            format!("GET {path} HTTP/1.1\r\nhost: x\r\n{range}{close}\r\n")
        })
        .collect();
    let out = tokio::task::spawn_blocking(move || common::raw(addr, raw_requests.as_bytes()))
        .await
        .unwrap();
    let big = pattern(1_000_003);
    let mut rest = &out[..];
    let mut bodies = Vec::new();
    for _ in 0..requests.len() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8_lossy(&rest[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        bodies.push((head.clone(), rest[end..end + len].to_vec()));
        rest = &rest[end + len..];
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last response",
        rest.len()
    );
    assert!(bodies[0].1 == big[5..700_005], "first range differs");
    assert_eq!(&bodies[1].1[..], b"hello, world\n");
    let multipart = String::from_utf8_lossy(&bodies[2].1).into_owned();
    let boundary = bodies[2]
        .0
        .split("boundary=")
        .nth(1)
        .and_then(|b| b.lines().next())
        .expect("a boundary")
        .trim()
        .to_string();
    let parts = parse_multipart(&bodies[2].1, &boundary);
    assert_eq!(parts.len(), 2, "{multipart:.200}");
    assert!(parts[0].1 == big[1..11] && parts[1].1 == big[999_990..]);
    assert!(bodies[3].1 == big, "full body differs");
}

/// The open-file cache never serves what the path no longer names: a file
/// rewritten in place is sent as it is now (length and validators too), a
/// file replaced by a rename is the new one, and a removed file is 404.
#[tokio::test]
async fn kept_open_files_are_served_as_they_are_now() {
    let (f, s) = start().await;
    let path = f.root().join("changing.txt");
    std::fs::write(&path, b"one").unwrap();
    let url = s.url("/files/changing.txt");
    let first = get(&url, &[]).await;
    assert_eq!(&first.body[..], b"one");
    // Opened once; now kept. In place, longer:
    std::fs::write(&path, b"one, two").unwrap();
    let r = get(&url, &[]).await;
    assert_eq!(&r.body[..], b"one, two");
    assert_ne!(r.header("etag"), first.header("etag"));
    // Replaced by a rename:
    let next = f.root().join("next.txt");
    std::fs::write(&next, b"three").unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(&get(&url, &[]).await.body[..], b"three");
    // Replaced by a symlink out of the root: refused, as when not kept.
    std::os::unix::fs::symlink(f.dir.path().join("outside/secret.txt"), &next).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let r = get(&url, &[]).await;
    assert_ne!(r.status, StatusCode::OK);
    assert!(!r
        .body
        .windows(common::SECRET.len())
        .any(|w| w == common::SECRET));
    // Removed:
    std::fs::remove_file(&path).unwrap();
    assert_eq!(get(&url, &[]).await.status, StatusCode::NOT_FOUND);
}
