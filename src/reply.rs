//! The short replies every handler gives: text errors, 404 with the cache policy's 404
//! headers, 503 with `Retry-After`, 405 with `Allow`, and admin JSON. One place, below every
//! caller (server, routes, pipeline, admin, player), so nothing needs to import a handler to
//! answer.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::http::cache_policy::{CachePolicy, ResponseClass};
use crate::http::response::{error_head, error_text};
use crate::storage::body::OriginBody;

pub static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
pub static PRIVATE_NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");

/// A response from a status, a head and a body.
pub fn with_head(status: StatusCode, head: HeaderMap, body: OriginBody) -> Response<OriginBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = head;
    resp
}

/// A short text error with exact length and the given Cache-Control.
pub fn error_response(
    status: StatusCode,
    text: &str,
    cache_control: &HeaderValue,
    now: SystemTime,
) -> Response<OriginBody> {
    let head = error_head(text, cache_control, now);
    with_head(status, head, OriginBody::text(text.to_owned()))
}

/// 404 with the cache policy's 404 headers for `path` (H-20: short-lived, never long).
pub fn not_found(policy: &CachePolicy, path: &str, now: SystemTime) -> Response<OriginBody> {
    let text = error_text(StatusCode::NOT_FOUND);
    let mut head = error_head(text, &NO_STORE, now);
    head.remove(header::CACHE_CONTROL);
    for (name, value) in policy.headers(path.trim_start_matches('/'), ResponseClass::NotFound) {
        head.append(name, value);
    }
    with_head(StatusCode::NOT_FOUND, head, OriginBody::text(text))
}

/// 503 with `Retry-After` (a transient fault of ours, or load shedding).
pub fn unavailable(retry_after_secs: u64, now: SystemTime) -> Response<OriginBody> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_text(StatusCode::SERVICE_UNAVAILABLE),
        &NO_STORE,
        now,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

/// 405 with `Allow`.
pub fn method_not_allowed(allow: &'static str, now: SystemTime) -> Response<OriginBody> {
    let mut r = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        error_text(StatusCode::METHOD_NOT_ALLOWED),
        &NO_STORE,
        now,
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A fixed text answer (`no-store`), without a body for HEAD.
pub fn text(
    method: &Method,
    status: StatusCode,
    text: &str,
    now: SystemTime,
) -> Response<OriginBody> {
    let mut r = error_response(status, text, &NO_STORE, now);
    if method == Method::HEAD {
        *r.body_mut() = OriginBody::Empty;
    }
    r
}

/// A JSON answer (`private, no-store`), as the admin API gives.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response<OriginBody> {
    let body = Bytes::from(format!("{value}\n"));
    let mut r = Response::new(OriginBody::Empty);
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

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<OriginBody> {
    json(status, serde_json::json!({ "error": message }))
}
