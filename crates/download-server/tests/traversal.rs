//! Nothing outside `--root` is ever served. Requests go over raw TCP so that
//! no client library normalises the path first.

mod common;

use common::{raw, raw_status, Fixture, Running, SECRET};

/// Request targets that try to leave the root. Each must get a 4xx and must
/// never carry the secret's bytes.
const CORPUS: &[&str] = &[
    "/files/../root-sibling.txt",
    "/files/../outside/secret.txt",
    "/files/../../../../etc/passwd",
    "/files/sub/../../outside/secret.txt",
    "/files/%2e%2e/outside/secret.txt",
    "/files/%2E%2E/outside/secret.txt",
    "/files/.%2e/outside/secret.txt",
    "/files/%2e./outside/secret.txt",
    "/files/sub/%2e%2e/%2e%2e/outside/secret.txt",
    "/files/%252e%252e/outside/secret.txt",
    "/files/%25252e%25252e/outside/secret.txt",
    "/files/..%2foutside/secret.txt",
    "/files/..%2Foutside%2Fsecret.txt",
    "/files/%2e%2e%2foutside%2fsecret.txt",
    "/files/..%5coutside%5csecret.txt",
    "/files/..\\outside\\secret.txt",
    "/files/%5c..%5coutside%5csecret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/%2Fetc/passwd",
    "/files///etc/passwd",
    "/files/escape-relative",
    "/files/escape-absolute",
    "/files/escape-dir/secret.txt",
    "/files/etc-link/passwd",
    "/files/etc-link/hostname",
    "/files/hello.txt%00.png",
    "/files/hello.txt%00",
    "/files/%00../outside/secret.txt",
    "/files/./../outside/secret.txt",
    "/files/sub/./../../outside/secret.txt",
    "/files/%c0%ae%c0%ae/outside/secret.txt",
    "/files/%uff0e%uff0e/outside/secret.txt",
    "/files/..;/outside/secret.txt",
    "/files/loop-a",
    "/files/%",
    "/files/%zz",
    "/zip/..",
    "/zip/../outside",
    "/zip/%2e%2e",
    "/zip/escape-dir",
    "/zip/etc-link",
    "/zip//etc",
    "/files/..",
    "/files/.",
];

#[tokio::test]
async fn traversal_corpus_is_refused() {
    assert!(CORPUS.len() >= 30);
    let fixture = Fixture::new();
    let server = Running::start(fixture.config()).await;
    let addr = server.addr;
    let results = tokio::task::spawn_blocking(move || {
        CORPUS
            .iter()
            .map(|target| {
                let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                (*target, raw(addr, req.as_bytes()))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    let mut failures = Vec::new();
    for (target, response) in &results {
        let status = raw_status(response);
        let leaked = response.windows(SECRET.len()).any(|w| w == SECRET)
            || (!passwd.is_empty()
                && response
                    .windows(16)
                    .any(|w| passwd.starts_with(w) && w.len() == 16));
        if !(400..500).contains(&status) || leaked {
            failures.push(format!("{target} -> {status} leaked={leaked}"));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn zip_of_root_leaves_out_escaping_symlinks() {
    let fixture = Fixture::new();
    let server = Running::start(fixture.config()).await;
    let r = common::get(&server.url("/zip/"), &[]).await;
    assert_eq!(r.status, 200);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).unwrap();
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        assert!(
            !data.windows(SECRET.len()).any(|w| w == SECRET),
            "{} leaked",
            entry.name().unwrap()
        );
        names.push(entry.name().unwrap().to_string());
    }
    // The in-root symlink is archived with its target's content; the escapes are not.
    assert!(names.contains(&"inside-link".to_string()), "{names:?}");
    for escaping in [
        "escape-relative",
        "escape-absolute",
        "etc-link",
        "escape-dir",
        "loop-a",
    ] {
        assert!(
            !names.iter().any(|n| n.starts_with(escaping)),
            "{escaping} in {names:?}"
        );
    }
}
