//! The workers: each runs one request at a time, as fast as its pattern
//! allows, until the load's time or request budget is spent.
//!
//! Counters are atomics read by the recorder every tick, so samples carry
//! the load as it was at that moment, not a total at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, RANGE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use leakscope_loadspec::{ByteRange, Concurrency, Pattern};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// How many distinct failure reasons the summary keeps; the rest are
/// counted under "other".
const MAX_REASONS: usize = 16;

/// A bounded load: it ends when `duration` has passed or `max_requests`
/// have been started, whichever comes first.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests go to these in turn.
    pub urls: Vec<Uri>,
    pub pattern: Pattern,
    pub concurrency: Concurrency,
    pub duration: Duration,
    pub max_requests: Option<u64>,
    /// One request that takes longer fails as a timeout.
    pub request_timeout: Duration,
    /// At most this many requests start per second, across all workers
    /// (open loop: request n starts no earlier than n / rate after the
    /// start). `None`: as fast as the workers go.
    pub rate: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the load needs at least one URL")]
    NoUrl,
    #[error("{url}: only http:// URLs with a host are supported")]
    UnsupportedUrl { url: String },
    #[error("the load's duration must be more than zero")]
    ZeroDuration,
    #[error("a rate must be a positive number of requests per second")]
    BadRate,
}

impl Plan {
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.urls.is_empty() {
            return Err(PlanError::NoUrl);
        }
        for url in &self.urls {
            if url.scheme_str() != Some("http") || url.host().is_none() {
                return Err(PlanError::UnsupportedUrl {
                    url: url.to_string(),
                });
            }
        }
        if self.duration.is_zero() {
            return Err(PlanError::ZeroDuration);
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(PlanError::BadRate);
        }
        Ok(())
    }
}

/// Live counts, shared with whoever samples them.
#[derive(Debug, Default)]
pub struct Counters {
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicU64,
    bytes: AtomicU64,
    workers: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
}

/// The counts at one moment. `started - done - failed - aborted` were in
/// flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub started: u64,
    /// Completed as the pattern intended (full body, right range, whole ZIP).
    pub done: u64,
    /// Connection errors, unexpected statuses, short bodies, timeouts.
    pub failed: u64,
    /// Abandoned on purpose by the `abort` pattern.
    pub aborted: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Workers active now.
    pub concurrency: u64,
}

impl Counters {
    pub fn counts(&self) -> Counts {
        Counts {
            started: self.started.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            concurrency: self.workers.load(Ordering::Relaxed),
        }
    }

    fn fail(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let key = if reasons.contains_key(&reason) || reasons.len() < MAX_REASONS {
            reason
        } else {
            "other".to_string()
        };
        *reasons.entry(key).or_default() += 1;
    }
}

/// Latency of the completed requests (`done`), from when each was sent to
/// its last body byte. Under a rate, a request sent late because its worker
/// was still waiting for an answer counts from its slot instead, so a
/// server that falls behind shows its queue (wrk2's correction for
/// coordinated omission); one sent late by the timer's tick does not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Per-worker latency histograms in microseconds, 3 significant digits,
/// up to an hour (longer is clamped there).
type Histogram = hdrhistogram::Histogram<u64>;

fn histogram() -> Histogram {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn latency(h: &Histogram) -> Option<Latency> {
    let us = |v: u64| Duration::from_micros(v);
    (!h.is_empty()).then(|| Latency {
        p50: us(h.value_at_quantile(0.5)),
        p99: us(h.value_at_quantile(0.99)),
        max: us(h.max()),
    })
}

/// What a finished load did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub counts: Counts,
    pub elapsed: Duration,
    /// Failure reasons with their counts, e.g. "HTTP 503" → 12.
    pub failures: BTreeMap<String, u64>,
    /// Requests still running when the load's time ran out; cut, and counted
    /// neither done nor failed.
    pub cut: u64,
    /// `None` when no request completed.
    pub latency: Option<Latency>,
}

impl Summary {
    pub fn requests_per_sec(&self) -> f64 {
        let finished = self.counts.done + self.counts.failed + self.counts.aborted;
        finished as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A running load.
pub struct Load {
    counters: Arc<Counters>,
    cancel: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<Histogram>>,
    start: Instant,
}

impl Load {
    /// Starts the workers on the current tokio runtime.
    pub fn start(plan: Plan) -> Result<Self, PlanError> {
        Self::start_with(plan, Arc::default())
    }

    /// Like [`Load::start`], counting into `counters`, which a recorder may
    /// already be reading (they stay zero until the load starts).
    pub fn start_with(plan: Plan, counters: Arc<Counters>) -> Result<Self, PlanError> {
        plan.validate()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(plan.concurrency.max() as usize)
            .build(connector);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let plan = Arc::new(plan);
        let workers = (0..plan.concurrency.max())
            .map(|index| {
                let w = Worker {
                    index,
                    plan: Arc::clone(&plan),
                    client: client.clone(),
                    counters: Arc::clone(&counters),
                    cancel: cancel.clone(),
                    start,
                };
                tokio::spawn(w.run())
            })
            .collect();
        // The deadline cancels everything, including requests in flight.
        let deadline = cancel.clone();
        let duration = plan.duration;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => deadline.cancel(),
                _ = deadline.cancelled() => {}
            }
        });
        Ok(Self {
            counters,
            cancel,
            workers,
            start,
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Ends the load now; requests in flight are cut.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// A handle that ends the load like [`Load::stop`], for whoever must cut
    /// it short while another task waits in [`Load::finish`] (which takes
    /// the load): the summary of a cut load is still wanted.
    pub fn stop_handle(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for the load to end by itself (time or request budget) or by
    /// [`Load::stop`].
    pub async fn finish(mut self) -> Summary {
        let mut latencies = histogram();
        for w in std::mem::take(&mut self.workers) {
            // A worker only ends by returning; a panic there is a bug worth
            // surfacing in the failure list rather than a crash of the host.
            match w.await {
                // Same bounds, so adding cannot fail.
                Ok(h) => latencies.add(h).expect("histograms of the same bounds"),
                Err(e) => self.counters.fail(format!("load worker died: {e}")),
            }
        }
        self.cancel.cancel();
        let counts = self.counters.counts();
        let failures = self
            .counters
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Summary {
            cut: counts.started - counts.done - counts.failed - counts.aborted,
            counts,
            elapsed: self.start.elapsed(),
            failures,
            latency: latency(&latencies),
        }
    }
}

impl Drop for Load {
    /// A load never outlives its handle: workers stop with it.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Worker {
    index: u32,
    plan: Arc<Plan>,
    client: HttpClient,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    start: Instant,
}

enum Outcome {
    Done,
    Aborted,
    Failed(String),
}

impl Worker {
    /// Runs until the load ends; the latencies of its completed requests.
    async fn run(self) -> Histogram {
        let mut latencies = histogram();
        let mut active = false;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let wanted = self
                .plan
                .concurrency
                .at(self.start.elapsed(), self.plan.duration);
            let should = self.index < wanted;
            if should != active {
                active = should;
                if active {
                    self.counters.workers.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.workers.fetch_sub(1, Ordering::Relaxed);
                }
            }
            if !active {
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
            let Some(n) = self.take_request() else { break };
            let mut sent = Instant::now();
            if let Some(rate) = self.plan.rate {
                let due = self.start + Duration::from_secs_f64(n as f64 / rate);
                if due > sent {
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep_until(due.into()) => {}
                    }
                    // Woken by the timer, up to its 1 ms tick late: that
                    // lateness is ours, not the server's.
                    sent = Instant::now();
                } else {
                    // Behind: the request waited for this worker's last
                    // answer, and that wait is the server's (wrk2's
                    // coordinated-omission correction).
                    sent = due;
                }
            }
            let url = &self.plan.urls[(n % self.plan.urls.len() as u64) as usize];
            let outcome = tokio::select! {
                _ = self.cancel.cancelled() => break,
                r = tokio::time::timeout(self.plan.request_timeout, self.request(url)) => {
                    r.unwrap_or_else(|_| Outcome::Failed(format!(
                        "no complete answer within {:?}", self.plan.request_timeout
                    )))
                }
            };
            match outcome {
                Outcome::Done => {
                    let us = sent.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                    latencies.saturating_record(us.max(1));
                    self.counters.done.fetch_add(1, Ordering::Relaxed)
                }
                Outcome::Aborted => self.counters.aborted.fetch_add(1, Ordering::Relaxed),
                Outcome::Failed(reason) => {
                    tracing::debug!(%url, %reason, "request failed");
                    self.counters.fail(reason);
                    // A refused connection would otherwise spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    0
                }
            };
        }
        if active {
            self.counters.workers.fetch_sub(1, Ordering::Relaxed);
        }
        latencies
    }

    /// The next request number, or `None` when the budget is spent.
    fn take_request(&self) -> Option<u64> {
        let max = self.plan.max_requests.unwrap_or(u64::MAX);
        self.counters
            .started
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
    }

    async fn request(&self, url: &Uri) -> Outcome {
        let mut req = Request::get(url.clone()).header(
            USER_AGENT,
            concat!("leakscope-load/", env!("CARGO_PKG_VERSION")),
        );
        if let Pattern::Range(r) = self.plan.pattern {
            req = req.header(RANGE, r.header_value());
        }
        let req = req.body(Empty::new()).expect("a GET with valid headers");
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("connect/send: {}", root_cause(&e))),
        };
        let status = resp.status();
        let expected = match self.plan.pattern {
            Pattern::Range(_) => StatusCode::PARTIAL_CONTENT,
            _ => StatusCode::OK,
        };
        if status != expected {
            return Outcome::Failed(format!("HTTP {}", status.as_u16()));
        }
        let content_length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = resp.into_body();
        let began = Instant::now();
        let mut got = 0u64;
        // The end of a ZIP is where its end-of-central-directory record is.
        let mut tail: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    return Outcome::Failed(format!("body after {got} bytes: {}", root_cause(&e)))
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            got += data.len() as u64;
            self.counters
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            match self.plan.pattern {
                Pattern::Abort { after_bytes } if got >= after_bytes => return Outcome::Aborted,
                Pattern::Slow { bytes_per_sec } => {
                    let due = Duration::from_secs_f64(got as f64 / bytes_per_sec as f64);
                    if let Some(wait) = due.checked_sub(began.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                Pattern::Zip => {
                    tail.extend_from_slice(&data);
                    let keep = EOCD_SEARCH;
                    if tail.len() > 2 * keep {
                        tail.drain(..tail.len() - keep);
                    }
                }
                _ => {}
            }
        }
        if let Some(len) = content_length {
            if got != len {
                return Outcome::Failed(format!("body ended at {got} of {len} bytes"));
            }
        }
        match self.plan.pattern {
            Pattern::Zip if !has_eocd(&tail) => {
                Outcome::Failed("ZIP without its end-of-central-directory record".into())
            }
            Pattern::Range(ByteRange::Closed { first, last })
                if u128::from(got) > closed_len(first, last) =>
            {
                Outcome::Failed(format!(
                    "range of {} bytes answered with {got}",
                    closed_len(first, last)
                ))
            }
            _ => Outcome::Done,
        }
    }
}

/// Bytes in `first-last`, without overflow (`0-18446744073709551615` is a
/// valid range: all of it). A server clamps a range to the file, so fewer
/// bytes are a right answer; more mean it ignored the range.
fn closed_len(first: u64, last: u64) -> u128 {
    u128::from(last) - u128::from(first) + 1
}

/// The end-of-central-directory record is 22 bytes plus a comment of at
/// most 65,535.
const EOCD_SEARCH: usize = 22 + 65_535;

fn has_eocd(tail: &[u8]) -> bool {
    let start = tail.len().saturating_sub(EOCD_SEARCH);
    tail[start..].windows(4).rev().any(|w| w == b"PK\x05\x06")
}

/// hyper's errors wrap the interesting part (refused, reset) a few levels
/// down; the summary shows that.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
