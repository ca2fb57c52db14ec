//! `--secret`: every download needs a valid, unexpired signature.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{get, Fixture, Running, ServerProcess};
use download_server::signing::Signer;
use http::StatusCode;

const KEY: &str = "0123456789abcdef-test-key";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start() -> (Fixture, Running) {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.secret = Some(KEY.as_bytes().to_vec());
    let server = Running::start(config).await;
    (fixture, server)
}

#[tokio::test]
async fn signature_cases() {
    let (_f, s) = start().await;
    let signer = Signer::new(KEY);
    let exp = now() + 600;
    let sig = signer.sign(b"/files/hello.txt", exp);

    let ok = get(
        &s.url(&format!("/files/hello.txt?expires={exp}&sig={sig}")),
        &[],
    )
    .await;
    assert_eq!(
        (ok.status, &ok.body[..]),
        (StatusCode::OK, &b"hello, world\n"[..])
    );
    assert_eq!(ok.header("cache-control"), Some("private, no-cache"));

    let cases = [
        ("missing", "/files/hello.txt".to_string()),
        ("only expires", format!("/files/hello.txt?expires={exp}")),
        ("only sig", format!("/files/hello.txt?sig={sig}")),
        (
            "expiry moved",
            format!("/files/hello.txt?expires={}&sig={sig}", exp + 1),
        ),
        (
            "other file",
            format!("/files/big.bin?expires={exp}&sig={sig}"),
        ),
        (
            "flipped digit",
            format!("/files/hello.txt?expires={exp}&sig={}", flip(&sig)),
        ),
        (
            "truncated",
            format!("/files/hello.txt?expires={exp}&sig={}", &sig[..32]),
        ),
        (
            "not hex",
            format!("/files/hello.txt?expires={exp}&sig=zz{}", &sig[2..]),
        ),
        ("zip route", format!("/zip/sub?expires={exp}&sig={sig}")),
    ];
    for (name, path) in cases {
        let r = get(&s.url(&path), &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}");
    }

    let past = now() - 10;
    let expired_sig = signer.sign(b"/files/hello.txt", past);
    let r = get(
        &s.url(&format!(
            "/files/hello.txt?expires={past}&sig={expired_sig}"
        )),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(&r.body[..], b"link expired\n");

    // The signature covers the decoded path, so any encoding of it works.
    let sig = signer.sign("/files/sub/naïve résumé.txt".as_bytes(), exp);
    let r = get(
        &s.url(&format!(
            "/files/sub/na%C3%AFve%20r%C3%A9sum%C3%A9.txt?expires={exp}&sig={sig}"
        )),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let sig = signer.sign(b"/zip/sub", exp);
    let r = get(&s.url(&format!("/zip/sub?expires={exp}&sig={sig}")), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // Health and metrics stay open for probes.
    assert_eq!(get(&s.url("/healthz"), &[]).await.status, StatusCode::OK);
}

fn flip(hex: &str) -> String {
    let mut chars: Vec<char> = hex.chars().collect();
    chars[10] = if chars[10] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// The `sign` subcommand's URL works against the real binary.
#[tokio::test]
async fn sign_subcommand_round_trip() {
    let fixture = Fixture::new();
    let server = ServerProcess::spawn(&fixture.root(), &["--secret", KEY]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_download-server"))
        .args(["sign", "--secret", KEY, "--ttl", "5m"])
        .arg(format!("--base=http://{}", server.addr))
        .arg("/files/sub/naïve résumé.txt")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        url.contains("na%C3%AFve%20r%C3%A9sum%C3%A9.txt?expires="),
        "{url}"
    );
    let r = get(&url, &[]).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::OK, &b"unicode name\n"[..])
    );
    let expires: u64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expires > now() + 200 && expires <= now() + 300 + 5);

    // Parameters are signed: the URL as printed works, one added is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_download-server"))
        .args(["sign", "--secret", KEY, "--param", "compression=stored"])
        .arg(format!("--base=http://{}", server.addr))
        .arg("/zip/sub")
        .output()
        .unwrap();
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.contains("compression=stored&expires="), "{url}");
    assert_eq!(get(&url, &[]).await.status, StatusCode::OK, "{url}");
    let widened = format!("{url}&level=9");
    assert_eq!(get(&widened, &[]).await.status, StatusCode::FORBIDDEN);

    // A short secret is refused with a clear message, not a panic.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_download-server"))
        .args(["sign", "--secret", "short", "/files/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 bytes"));
}

#[tokio::test]
async fn scenario_routes_need_signatures_too() {
    let fixture = Fixture::new();
    let mut config = fixture.config();
    config.secret = Some(KEY.as_bytes().to_vec());
    config.variant = Some(download_server::scenarios::Variant::Leaky);
    let s = Running::start(config).await;
    let exp = now() + 600;
    let sig = Signer::new(KEY).sign(b"/s/fd-leak/hello.txt", exp);
    let unsigned = get(&s.url("/s/fd-leak/hello.txt"), &[]).await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    // A signature for one scenario does not open another.
    let other = get(
        &s.url(&format!(
            "/s/buffer-churn/hello.txt?expires={exp}&sig={sig}"
        )),
        &[],
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let signed = get(
        &s.url(&format!("/s/fd-leak/hello.txt?expires={exp}&sig={sig}")),
        &[],
    )
    .await;
    assert_eq!(signed.status, StatusCode::OK);
}
