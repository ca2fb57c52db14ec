//! `/zip/{dir}` streams an archive that the `zip` crate and `unzip -t` accept,
//! entry by entry, with the right contents.

mod common;

use std::io::Read;
use std::process::Command;

use common::{get, get_until_ok, pattern, Fixture, Running};
use http::StatusCode;

/// Every regular file beneath `dir`, as (name relative to dir, contents).
fn expected_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let name = entry
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            out.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    out
}

fn check_archive(bytes: &[u8], dir: &std::path::Path) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut seen = 0;
    for (name, want) in expected_files(dir) {
        let mut entry = archive
            .by_name(&name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut got = Vec::new();
        // Reading to the end makes the zip crate verify the entry's CRC-32.
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(got == want, "{name}: content differs");
        assert_eq!(entry.crc32(), crc32(&want), "{name}: stored CRC");
        seen += 1;
    }
    assert!(seen > 0);
}

fn crc32(data: &[u8]) -> u32 {
    let mut h = flate2::Crc::new();
    h.update(data);
    h.sum()
}

#[tokio::test]
async fn stored_and_deflated_archives_read_back() {
    let fixture = Fixture::new();
    std::fs::write(fixture.root().join("sub/pattern.bin"), pattern(300_000)).unwrap();
    let server = Running::start(fixture.config()).await;
    for query in [
        "",
        "?compression=deflated",
        "?compression=deflated&level=1",
        "?level=9",
    ] {
        let r = get(&server.url(&format!("/zip/sub{query}")), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{query}");
        assert_eq!(r.header("content-type"), Some("application/zip"));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"sub.zip\"")
        );
        check_archive(&r.body, &fixture.root().join("sub"));
    }
    // The whole root, including the empty directory entry.
    let r = get(&server.url("/zip"), &[]).await;
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"root.zip\"")
    );
    check_archive(&r.body, &fixture.root());
    let archive = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).unwrap();
    assert!(archive
        .file_names()
        .any(|n| n.as_deref().ok() == Some("empty-dir/")));
}

#[tokio::test]
#[ignore = "needs unzip: cargo xtask test runs it where unzip is installed"]
async fn unzip_accepts_every_kind_of_archive() {
    let fixture = Fixture::new();
    std::fs::write(fixture.root().join("sub/pattern.bin"), pattern(300_000)).unwrap();
    let server = Running::start(fixture.config()).await;
    for path in [
        "/zip/sub",
        "/zip/sub?compression=deflated",
        "/zip/sub?compression=deflated&level=1",
        "/zip/sub?level=9",
        "/zip",
    ] {
        let r = get(&server.url(path), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        unzip_test(&r.body);
    }
}

/// A name that cannot go into a ZIP (not UTF-8) is left out, and the
/// archive's comment says so: a 200 with a valid archive must not pass for
/// the whole tree.
#[tokio::test]
async fn an_archive_that_left_entries_out_says_so_in_its_comment() {
    use std::os::unix::ffi::OsStrExt;
    let fixture = Fixture::new();
    let odd = fixture.root().join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("fine.txt"), b"fine").unwrap();
    std::fs::write(odd.join(std::ffi::OsStr::from_bytes(b"bad-\xff.txt")), b"x").unwrap();
    let server = Running::start(fixture.config()).await;
    let r = get(&server.url("/zip/odd"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let archive = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).unwrap();
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.unwrap().to_string())
        .collect();
    assert_eq!(names, ["fine.txt"]);
    let comment = String::from_utf8_lossy(archive.comment()).to_string();
    assert!(
        comment.contains("incomplete: 1 entries left out (1 names not UTF-8"),
        "{comment:?}"
    );
    // A whole tree has no such comment.
    let r = get(&server.url("/zip/sub"), &[]).await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).unwrap();
    assert!(archive.comment().is_empty());
}

/// `unzip -t` is the reference reader: `unzip_accepts_every_kind_of_archive`
/// needs it, so `cargo test` lists that test as ignored and `cargo xtask
/// test` runs it where unzip is installed (CI installs it).
fn unzip_test(bytes: &[u8]) {
    let version = Command::new("unzip").arg("-v").output();
    assert!(
        version.is_ok_and(|v| v.status.success()),
        "this test needs unzip (apt-get install unzip)"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let out = Command::new("unzip")
        .arg("-t")
        .arg(file.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No errors detected"),
        "{text}"
    );
}

#[tokio::test]
async fn zip_concurrency_is_bounded() {
    let fixture = Fixture::new();
    // Far larger than loopback socket buffers, so the held archive cannot
    // finish (and free its slot) unless somebody reads it. Sparse: no disk.
    let held_dir = fixture.root().join("held");
    std::fs::create_dir(&held_dir).unwrap();
    std::fs::File::create(held_dir.join("large.bin"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut config = fixture.config();
    config.max_zip_streams = 1;
    let server = Running::start(config).await;
    // Hold one archive open by not reading its body.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let held = client
        .get(server.url("/zip/held").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    let r = get(&server.url("/zip/sub"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    // The slot comes back once the held stream's writer notices.
    assert_eq!(get_until_ok(&server.url("/zip/sub")).await, StatusCode::OK);
}
