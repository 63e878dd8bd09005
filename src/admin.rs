//! The admin API, on its own listener (never the public port).
//!
//! Every route but `/healthz` needs `Authorization: Bearer <token>`; tokens are compared in
//! constant time against each configured one, and only the matching token's *id* is logged.
//! Bodies are JSON, size-limited; malformed JSON or wrong fields are a 400 that names the
//! field. Responses carry `Cache-Control: private, no-store`.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::links::{LinkFormat, LinkRequest};
use crate::storage::body::OriginBody;
use crate::App;

static PRIVATE_NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");

fn json(status: StatusCode, value: serde_json::Value) -> Response<OriginBody> {
    let body = Bytes::from(format!("{value}\n"));
    let mut r = Response::new(OriginBody::Bytes(None));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, PRIVATE_NO_STORE.clone());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(
        header::DATE,
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
            .unwrap_or(HeaderValue::from_static("")),
    );
    *r.body_mut() = OriginBody::Bytes(Some(body));
    r
}

fn error(status: StatusCode, message: &str) -> Response<OriginBody> {
    json(status, serde_json::json!({ "error": message }))
}

/// The id of the bearer token presented, if it matches a configured one.
fn authenticate<B>(app: &App, req: &Request<B>) -> Option<String> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    // Compare digests so that length differences leak nothing either; check every token.
    use sha2::Digest;
    let p = sha2::Sha256::digest(presented.as_bytes());
    let mut found = None;
    for (id, token) in &app.settings.admin.tokens {
        let t = sha2::Sha256::digest(token.expose().as_bytes());
        if crate::signing::ct_eq(&p, &t) && found.is_none() {
            found = Some(id.clone());
        }
    }
    found
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    path: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    ip: Option<std::net::IpAddr>,
    #[serde(default)]
    format: LinkFormat,
}

/// Routes one request on the admin listener.
pub async fn route(
    app: &App,
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<OriginBody> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return json(StatusCode::OK, serde_json::json!({"status": "ok"}));
    }
    let Some(who) = authenticate(app, &req) else {
        tracing::warn!(target: "audit", %peer, path = %path, outcome = "unauthorized", "admin request refused");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"video-origin admin\""),
        );
        return r;
    };
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/admin/sign") => {
            let limit = app.settings.admin.max_body_bytes;
            let body = match http_body_util::Limited::new(req.into_body(), limit)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("body larger than {limit} bytes"),
                    )
                }
            };
            let sign: SignBody = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"))
                }
            };
            let request = LinkRequest {
                path: sign.path.clone(),
                ttl_secs: sign
                    .ttl_secs
                    .unwrap_or(app.settings.signing.default_ttl_secs),
                prefix: sign.prefix,
                ip: sign.ip,
                format: sign.format,
            };
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match app.minter.mint(&request, now) {
                Ok(link) => {
                    tracing::info!(target: "audit", who = %who, action = "sign", path = %sign.path, prefix = sign.prefix, format = ?sign.format, expires_at = link.expires_at, outcome = "ok");
                    json(
                        StatusCode::OK,
                        serde_json::json!({"url": link.url, "expires_at": link.expires_at}),
                    )
                }
                Err(reason) => {
                    tracing::info!(target: "audit", who = %who, action = "sign", path = %sign.path, outcome = "refused", reason = %reason);
                    error(StatusCode::BAD_REQUEST, &reason)
                }
            }
        }
        (_, "/admin/sign") => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin route"),
    }
}
