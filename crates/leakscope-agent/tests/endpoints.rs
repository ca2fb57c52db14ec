//! The HTTP contract: bad input gets 4xx with a reason, disabled features
//! say which feature, nothing panics.

mod common;

use common::{get, request, start_agent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_lists_endpoints_and_features() {
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();
    let r = get(addr, "/debug");
    assert_eq!(r.status, 200);
    let index = r.json();
    assert_eq!(index["pid"].as_u64(), Some(std::process::id() as u64));
    assert_eq!(
        index["features"]["cpu"].as_bool(),
        Some(cfg!(feature = "cpu"))
    );
    let paths: Vec<_> = index["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.contains(&"/debug/pprof/heap".to_string()));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let agent = start_agent();
    let addr = agent.local_addr().unwrap();

    let r = get(addr, "/debug/nope");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("GET /debug lists them"), "{}", r.text());

    let r = request(addr, "POST", "/debug/heap/stats");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    let r = get(addr, "/debug/heap/stats?verbose=1");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("unknown query parameter \"verbose\""),
        "{}",
        r.text()
    );

    for bad in [
        "/debug/pprof/profile?seconds=abc",
        "/debug/pprof/profile?seconds=0",
        "/debug/pprof/profile?seconds=601",
        "/debug/pprof/profile?seconds=-1",
        "/debug/pprof/profile?hz=0",
        "/debug/pprof/profile?hz=99999999999",
        "/debug/pprof/profile?second=5",
        "/debug/pprof/profile?format=gif",
        "/debug/pprof/heap?format=gif",
        "/debug/pprof/heap?seconds=5",
        "/debug/tasks?%ff=%ff",
    ] {
        let r = get(addr, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    // A disabled feature names itself.
    if !cfg!(feature = "cpu") {
        let r = get(addr, "/debug/pprof/profile?seconds=1");
        assert_eq!(r.status, 404);
        assert!(r.text().contains("`cpu` feature"), "{}", r.text());
    }

    // The agent still answers after all that.
    assert_eq!(get(addr, "/debug").status, 200);
    agent.shutdown().await;
}

#[tokio::test]
async fn refuses_a_non_loopback_address_unless_told() {
    let err = leakscope_agent::Agent::builder()
        .listen(Some("0.0.0.0:0".parse().unwrap()))
        .start()
        .err()
        .expect("0.0.0.0 refused");
    assert!(err.to_string().contains("allow_remote"), "{err}");

    let agent = leakscope_agent::Agent::builder()
        .listen(Some("0.0.0.0:0".parse().unwrap()))
        .allow_remote(true)
        .start()
        .expect("allowed when asked");
    agent.shutdown().await;
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let err = leakscope_agent::Agent::builder()
        .listen(None)
        .start()
        .err()
        .expect("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn a_taken_port_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = leakscope_agent::Agent::builder()
        .listen(Some(taken.local_addr().unwrap()))
        .start()
        .err()
        .expect("port in use");
    assert!(
        err.to_string().contains("binding the debug endpoint"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_service_answers_like_the_listener() {
    use http_body_util::BodyExt;
    let agent = leakscope_agent::Agent::builder()
        .listen(None)
        .start()
        .unwrap();
    assert!(agent.local_addr().is_none());
    let svc = agent.service();
    let resp = svc
        .handle(http::Request::get("/debug/tasks").body(()).unwrap())
        .await;
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["workers"], 2);
}
