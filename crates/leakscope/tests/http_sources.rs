//! The agent and metrics sources against the real things: leakscope-agent
//! and the download server, in this process on ephemeral ports.

use std::time::Duration;

use leakscope::sources::agent::AgentSource;
use leakscope::sources::metrics::{sum_counter, MetricsSource, DEFAULT_COUNTER};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_source_reads_heap_figures_and_a_profile() {
    let agent = leakscope_agent::Agent::builder()
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let source = AgentSource::new(&format!("http://{}", agent.local_addr().unwrap()), T);
    let before = source.heap().await.unwrap();
    let block = std::hint::black_box(vec![1u8; 32 << 20]);
    let during = source.heap().await.unwrap();
    drop(block);
    // Cumulative bytes: other tests in this process free memory meanwhile,
    // so a live figure could read lower; the total only grows.
    assert!(
        during.allocated_bytes_total.unwrap() >= before.allocated_bytes_total.unwrap() + (32 << 20)
    );
    let profile = source.heap_profile().await.unwrap();
    assert_eq!(&profile[..2], &[0x1f, 0x8b], "gzipped pprof");

    // A dead agent is an error naming the URL, within the deadline.
    let dead = AgentSource::new("http://127.0.0.1:9", T);
    let err = dead.heap().await.unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_source_counts_requests_but_not_its_own_scrapes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    let server = download_server::Server::bind({
        let mut c = download_server::Config::new(dir.path());
        c.listen = "127.0.0.1:0".parse().unwrap();
        c
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let source = MetricsSource::new(&format!("http://{addr}/metrics"), DEFAULT_COUNTER, T);
    // prometheus-client shows a labelled counter only once it has a series.
    assert_eq!(source.requests_total().await.unwrap(), None);
    let client = leakscope::sources::http::client();
    for _ in 0..5 {
        leakscope::sources::http::get(&client, &format!("http://{addr}/files/a.txt"), T)
            .await
            .unwrap();
    }
    // Three more scrapes, none of them counted.
    source.requests_total().await.unwrap();
    source.requests_total().await.unwrap();
    assert_eq!(source.requests_total().await.unwrap(), Some(5));

    let typo = MetricsSource::new(&format!("http://{addr}/metrics"), "http_request_total", T);
    assert_eq!(typo.requests_total().await.unwrap(), None);
    let _ = stop.send(());
    running.await.unwrap();
}

#[test]
fn sum_counter_reads_openmetrics_and_prometheus_text() {
    let text = "# TYPE http_requests counter\n\
                http_requests_total{route=\"files\",status=\"200\"} 7\n\
                http_requests_total{route=\"files\",status=\"404\"} 2\n\
                http_requests_total{route=\"metrics\",status=\"200\"} 40\n\
                # EOF\n";
    assert_eq!(sum_counter(text, "http_requests_total").unwrap(), Some(9));
    let text =
        "http_requests_total{handler=\"/metrics\"} 3\nhttp_requests_total{handler=\"/api\"} 11\n";
    assert_eq!(sum_counter(text, "http_requests_total").unwrap(), Some(11));
    assert_eq!(sum_counter(text, "other_total").unwrap(), None);
    // Declared but not yet incremented: zero.
    let text = "# HELP http_requests HTTP requests.\n# TYPE http_requests counter\n# EOF\n";
    assert_eq!(sum_counter(text, "http_requests_total").unwrap(), Some(0));
    // Not a count: refused, not read as 0.
    for bad in ["NaN", "-5", "+Inf"] {
        let text = format!("http_requests_total{{route=\"files\"}} {bad}\n");
        let err = sum_counter(&text, "http_requests_total").unwrap_err();
        assert!(
            err.to_string().contains("no count of requests"),
            "{bad}: {err}"
        );
    }
}

/// An endpoint that streams without end (a misdirected `--metrics` or
/// `--agent`) is cut off at the size bound, long before the deadline, and
/// the error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_streams_without_end_is_cut_off_at_the_size_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = s.read(&mut head).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        // Endless, until the client goes away.
        while s.write_all(&framed).await.is_ok() {}
    });
    let client = leakscope::sources::http::client();
    let started = std::time::Instant::now();
    let err = leakscope::sources::http::get(&client, &format!("http://{addr}/metrics"), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, leakscope::sources::http::HttpError::TooLarge { limit, .. } if limit == leakscope::sources::http::MAX_BODY),
        "{err}"
    );
    assert!(started.elapsed() < T, "{:?}", started.elapsed());
    server.abort();
}
