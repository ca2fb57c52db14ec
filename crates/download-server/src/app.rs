//! Routing and admission: which route, which method, and whether the client
//! may have it now (rate limit, signature, in-flight cap), in that order, so
//! that refused requests cost as little as possible and unauthenticated ones
//! never take an in-flight slot.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use crate::body::Body;
use crate::config::Config;
use crate::limits::{Inflight, PerIpRate};
use crate::metrics::{self, Metrics};
use crate::response::{path_error, plain};
use crate::root::{RelPath, ServeRoot};
use crate::scenarios::{self, Input, Scenario, Variant};
use crate::sendfile::Pending;
use crate::signing::Signer;
use crate::{files, zip_stream};

/// Shared state of one server.
pub struct App {
    pub(crate) root: Arc<ServeRoot>,
    pub(crate) metrics: Metrics,
    inflight: Arc<Inflight>,
    rate: Option<PerIpRate>,
    signer: Option<Signer>,
    zip_slots: Arc<Semaphore>,
    cache_control: HeaderValue,
    variant: Option<Variant>,
    scenario_state: scenarios::State,
}

#[derive(Clone, Copy)]
enum Route {
    Files,
    Zip,
    /// `/s/{name}/…`: a leak scenario of [`scenarios::ALL`].
    Scenario(&'static Scenario),
}

impl Route {
    /// What a signature covers before the decoded path.
    fn prefix(self) -> Vec<u8> {
        match self {
            Route::Files => b"/files/".to_vec(),
            Route::Zip => b"/zip/".to_vec(),
            Route::Scenario(s) => format!("/s/{}/", s.name).into_bytes(),
        }
    }

    fn takes_directory(self) -> bool {
        match self {
            Route::Files => false,
            Route::Zip => true,
            Route::Scenario(s) => s.input == Input::Directory,
        }
    }
}

impl App {
    pub fn new(config: &Config, root: ServeRoot) -> Self {
        let metrics = Metrics::new();
        let inflight = Inflight::new(config.max_inflight, metrics.inflight.clone());
        // Signed URLs are per-user: shared caches must not keep them.
        let cache_control = HeaderValue::from_static(if config.secret.is_some() {
            "private, no-cache"
        } else {
            "public, no-cache"
        });
        Self {
            root: Arc::new(root),
            metrics,
            inflight,
            rate: config.rate_per_ip.map(PerIpRate::new),
            signer: config.secret.clone().map(Signer::new),
            zip_slots: Arc::new(Semaphore::new(config.max_zip_streams)),
            cache_control,
            variant: config.variant,
            scenario_state: scenarios::State::default(),
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.current()
    }

    /// Called periodically so per-IP state does not grow without bound,
    /// and kept-open files nobody asks for are closed.
    pub fn prune(&self) {
        if let Some(rate) = &self.rate {
            rate.prune();
        }
        self.root.prune();
    }

    pub async fn handle<B>(self: Arc<Self>, peer: IpAddr, req: Request<B>) -> Response<Body> {
        let path = req.uri().path();
        let (label, response) = if path == "/healthz" {
            ("healthz", self.simple(&req, || plain(StatusCode::OK, "ok")))
        } else if path == "/metrics" {
            ("metrics", self.simple(&req, || self.metrics_response()))
        } else if let Some(rest) = path.strip_prefix("/files/") {
            let rest = rest.to_owned();
            (
                "files",
                self.download(Route::Files, &rest, peer, &req).await,
            )
        } else if path == "/zip" || path.starts_with("/zip/") {
            let rest = path.get(5..).unwrap_or_default();
            let rest = rest.strip_suffix('/').unwrap_or(rest).to_owned();
            ("zip", self.download(Route::Zip, &rest, peer, &req).await)
        } else if let Some(rest) = path.strip_prefix("/s/") {
            let (name, file) = rest.split_once('/').unwrap_or((rest, ""));
            let file = file.strip_suffix('/').unwrap_or(file).to_owned();
            let response = match Scenario::named(name) {
                Some(s) => self.download(Route::Scenario(s), &file, peer, &req).await,
                None => plain(
                    StatusCode::NOT_FOUND,
                    "no such scenario (download-server --list-scenarios lists them)",
                ),
            };
            ("scenario", response)
        } else {
            ("other", plain(StatusCode::NOT_FOUND, "no such route"))
        };
        self.metrics.record(label, response.status().as_u16());
        tracing::debug!(%peer, method = %req.method(), uri = %req.uri(), status = response.status().as_u16(), "request");
        response
    }

    fn simple<B>(&self, req: &Request<B>, f: impl FnOnce() -> Response<Body>) -> Response<Body> {
        match *req.method() {
            Method::GET => f(),
            Method::HEAD => f().map(|_| Body::empty()),
            _ => method_not_allowed(),
        }
    }

    fn metrics_response(&self) -> Response<Body> {
        let text = self.metrics.render();
        Response::builder()
            .header(header::CONTENT_TYPE, metrics::CONTENT_TYPE)
            .header(header::CONTENT_LENGTH, text.len())
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::full(text))
            .expect("static headers are valid")
    }

    async fn download<B>(
        &self,
        route: Route,
        raw: &str,
        peer: IpAddr,
        req: &Request<B>,
    ) -> Response<Body> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        if let Some(rate) = &self.rate {
            if let Err(wait) = rate.check(peer) {
                return retry_after(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded", wait);
            }
        }
        let variant = match (route, self.variant) {
            (Route::Scenario(_), None) => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "scenario routes need the server started with --variant leaky|fixed",
                )
            }
            (_, v) => v,
        };
        let rel = match RelPath::from_url(raw) {
            Ok(rel) if !route.takes_directory() && rel.is_root() => {
                return plain(StatusCode::NOT_FOUND, "no file named")
            }
            Ok(rel) => rel,
            Err(e) => return path_error(&e),
        };
        if let Some(signer) = &self.signer {
            let mut signed = route.prefix();
            signed.extend_from_slice(rel.as_bytes());
            if let Err(e) = signer.verify(&signed, req.uri().query(), SystemTime::now()) {
                return plain(StatusCode::FORBIDDEN, &e.to_string());
            }
        }
        let Some(slot) = self.inflight.try_acquire() else {
            return retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "server busy: too many downloads in flight",
                Duration::from_secs(1),
            );
        };
        let headers = req.headers();
        // Set per connection by the server; absent when a test calls
        // `handle` directly, and then file bodies are read and copied.
        let sendfile = req.extensions().get::<Pending>().cloned();
        let response = match route {
            Route::Files => {
                files::serve(
                    Arc::clone(&self.root),
                    rel,
                    method,
                    headers,
                    self.cache_control.clone(),
                    sendfile,
                )
                .await
            }
            Route::Zip => {
                zip_stream::serve(
                    Arc::clone(&self.root),
                    rel,
                    method,
                    req.uri().query(),
                    Arc::clone(&self.zip_slots),
                    self.metrics.zip_streams.clone(),
                )
                .await
            }
            Route::Scenario(scenario) => {
                let ctx = scenarios::Ctx {
                    root: Arc::clone(&self.root),
                    rel,
                    method,
                    headers,
                    query: req.uri().query(),
                    state: &self.scenario_state,
                    cache_control: self.cache_control.clone(),
                    zip_slots: Arc::clone(&self.zip_slots),
                    zip_gauge: self.metrics.zip_streams.clone(),
                    sendfile,
                };
                let variant = variant.expect("checked above");
                (scenario.handler)(variant, ctx).await
            }
        };
        let bytes_sent = self.metrics.bytes_sent.clone();
        response.map(|body| body.with_tracking(bytes_sent, Some(slot)))
    }
}

fn method_not_allowed() -> Response<Body> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn retry_after(status: StatusCode, message: &str, wait: Duration) -> Response<Body> {
    let mut response = plain(status, message);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}
