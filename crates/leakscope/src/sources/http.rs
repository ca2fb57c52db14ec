//! The one HTTP operation the sources need: GET with a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
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

/// GETs `url`; a non-2xx answer is an error carrying the start of its body
/// (the agent explains refusals there).
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
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Failed {
                url: url.into(),
                message: e.to_string(),
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
