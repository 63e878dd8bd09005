//! Cloudflare cache purge: `POST {api}/zones/{zone_id}/purge_cache` with a bearer API token and
//! one kind of operation per call (`files`, `tags` or `prefixes`), at most
//! `max_operations_per_request` of them. Answers come in Cloudflare's envelope
//! (`{"success", "errors": [{"code", "message"}], "messages", "result": {"id"}}`); a 429 carries
//! `Retry-After`. Built on hyper with rustls (the platform's roots), like the S3 transport.
//! (Cloudflare API: "Purge Cached Content", and the purge limits on the "Purge cache" page.)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::CloudflarePurgeSettings;

/// One purge call's operations: a single kind, as the API takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Public URLs.
    Files(Vec<String>),
    /// Cache-Tag values.
    Tags(Vec<String>),
    /// `host/path/` prefixes (no scheme).
    Prefixes(Vec<String>),
}

impl Purge {
    pub fn len(&self) -> usize {
        match self {
            Purge::Files(v) | Purge::Tags(v) | Purge::Prefixes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Purge::Files(v) => serde_json::json!({ "files": v }),
            Purge::Tags(v) => serde_json::json!({ "tags": v }),
            Purge::Prefixes(v) => serde_json::json!({ "prefixes": v }),
        }
    }
}

/// A refused or failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeError {
    /// Cloudflare's error code (e.g. 10000 authentication), or the HTTP status when the body
    /// has none; 0 when no answer came.
    pub code: i64,
    pub message: String,
    pub status: Option<u16>,
    /// From a 429's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl PurgeError {
    /// Whether trying again later can help: rate limits, Cloudflare's 5xx and transport
    /// failures can; a refused token or a request the API rejects cannot (no retry storm).
    pub fn transient(&self) -> bool {
        match self.status {
            None => true,
            Some(429) => true,
            Some(s) => s >= 500,
        }
    }
}

impl std::fmt::Display for PurgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "Cloudflare {s}, code {}: {}", self.code, self.message),
            None => write!(f, "Cloudflare unreachable: {}", self.message),
        }
    }
}

/// Splits operations into calls of at most `max` each (one kind per call).
pub fn calls(purges: Vec<Purge>, max: usize) -> Vec<Purge> {
    let max = max.max(1);
    let mut out = Vec::new();
    type Make = fn(Vec<String>) -> Purge;
    for p in purges {
        let (kind, items): (Make, Vec<String>) = match p {
            Purge::Files(v) => (Purge::Files, v),
            Purge::Tags(v) => (Purge::Tags, v),
            Purge::Prefixes(v) => (Purge::Prefixes, v),
        };
        for chunk in items.chunks(max) {
            out.push(kind(chunk.to_vec()));
        }
    }
    out
}

pub struct Cloudflare {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: String,
    token: String,
}

impl Cloudflare {
    pub fn new(s: &CloudflarePurgeSettings) -> std::io::Result<Cloudflare> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Cloudflare {
            client: Client::builder(TokioExecutor::new()).build(https),
            endpoint: format!(
                "{}/zones/{}/purge_cache",
                s.api_url.trim_end_matches('/'),
                s.zone_id
            ),
            token: s.api_token.expose().to_owned(),
        })
    }

    /// One purge call; `Ok` with Cloudflare's id for it.
    pub async fn purge(&self, p: &Purge) -> Result<String, PurgeError> {
        let unreachable = |message: String| PurgeError {
            code: 0,
            message,
            status: None,
            retry_after: None,
        };
        let req = http::Request::post(&self.endpoint)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(p.body().to_string())))
            .map_err(|_| unreachable("the request could not be built".into()))?;
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            let resp = self.client.request(req).await.map_err(|e| {
                // The error chain names the address or TLS problem, never the token.
                unreachable(format!("{e}"))
            })?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|_| unreachable("the answer could not be read".into()))?
                .to_bytes();
            Ok::<_, PurgeError>((status, retry_after, body))
        })
        .await
        .map_err(|_| unreachable("no answer within 30 s".into()))??;
        let (status, retry_after, body) = answer;
        let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if (200..300).contains(&status) && envelope["success"] == true {
            return Ok(envelope["result"]["id"].as_str().unwrap_or("").to_owned());
        }
        let first = &envelope["errors"][0];
        Err(PurgeError {
            code: first["code"].as_i64().unwrap_or(i64::from(status)),
            message: first["message"]
                .as_str()
                .unwrap_or("no error message in the answer")
                .chars()
                .take(300)
                .collect(),
            status: Some(status),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_one_kind_and_at_most_the_limit() {
        let files: Vec<String> = (0..250).map(|i| format!("https://x/{i}")).collect();
        let out = calls(
            vec![Purge::Files(files), Purge::Tags(vec!["file:a".into()])],
            100,
        );
        assert_eq!(
            out.iter().map(Purge::len).collect::<Vec<_>>(),
            vec![100, 100, 50, 1]
        );
        assert!(matches!(out[3], Purge::Tags(_)));
        assert_eq!(
            Purge::Prefixes(vec!["h/v/".into()]).body(),
            serde_json::json!({"prefixes": ["h/v/"]})
        );
    }

    #[test]
    fn which_failures_are_worth_retrying() {
        let e = |status: Option<u16>| PurgeError {
            code: 0,
            message: String::new(),
            status,
            retry_after: None,
        };
        assert!(e(None).transient());
        assert!(e(Some(429)).transient());
        assert!(e(Some(503)).transient());
        assert!(!e(Some(403)).transient(), "a refused token is not retried");
        assert!(!e(Some(400)).transient());
    }
}
