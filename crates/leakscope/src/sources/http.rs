//! The one HTTP operation the sources need: GET with a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: not a valid URL")]
    BadUrl { url: String },
    #[error("{url}: the answer is longer than {limit} bytes; not read further")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {message}")]
    Failed { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// The most a source's answer may be. Real ones are far smaller (a
/// `/metrics` page, the agent's JSON, a gzipped heap profile or task dump of
/// a few MB); an endpoint that streams without end must not take the
/// recorder's memory with it (one took 2.5 GB within a 1 s timeout).
pub const MAX_BODY: usize = 32 << 20;

/// GETs `url`, reading at most [`MAX_BODY`] bytes within `timeout`; a
/// non-2xx answer is an error carrying the start of its body (the agent
/// explains refusals there).
pub async fn get(client: &HttpClient, url: &str, timeout: Duration) -> Result<Bytes, HttpError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| HttpError::BadUrl { url: url.into() })?;
    let fetch = async {
        let resp = client.get(uri).await.map_err(|e| HttpError::Failed {
            url: url.into(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge {
                        url: url.into(),
                        limit: MAX_BODY,
                    }
                } else {
                    HttpError::Failed {
                        url: url.into(),
                        message: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            return Err(HttpError::Status {
                url: url.into(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.into(),
            timeout,
        })?
}
