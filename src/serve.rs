//! The video pipeline: one call per step, in the order of the product picture.
//!
//! 1. `storage::path::normalize`: decode once, refuse climbing paths (400) and dotfiles (404).
//! 2. `storage::path::open_under_root`: resolve symlinks, stay inside the root, open (404/503).
//! 3. `MetadataCache::get`: size, mtime, content-hash ETag for exactly the opened file.
//! 4. `http::response::decide`: preconditions, then Range (pure).
//! 5. `http::response::build_head`: status + headers with the resource's cache policy.
//! 6. `storage::body`: the bounded stream (nothing for HEAD, 304 or errors).

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::access::{Access, TokenRequest};
use crate::http::cache_policy::ResponseClass;
use crate::http::conditional::{effective_last_modified, ConditionalHeaders};
use crate::http::multipart::random_boundary;
use crate::http::response::{
    build_head, decide, error_head, error_text, Decision, RangeOptions, Resource,
};
use crate::metrics::Metrics;
use crate::server::AccessNote;
use crate::storage::body::{FileStream, OriginBody, Segment};
use crate::storage::path::{self, is_fd_exhaustion, OpenError, PathRejection};
use crate::App;

static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Where a request points, as received.
pub struct Target<'a> {
    /// The whole URL path, still percent-encoded (what signed links are checked against).
    pub raw_path: &'a str,
    /// The raw query string (token parameters live here; never logged, never in cache keys).
    pub query: &'a str,
    /// The URL path after the mount prefix, still percent-encoded.
    pub asset: &'a str,
    /// The client address (resolved through trusted proxies).
    pub client: std::net::IpAddr,
}

static PRIVATE_NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");

/// Serves one GET/HEAD for `target`.
pub async fn serve_asset(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    target: &Target<'_>,
) -> Response<OriginBody> {
    let now = SystemTime::now();
    let raw_path = target.asset;
    let asset = match path::normalize(raw_path) {
        Ok(a) => a,
        Err(PathRejection::BadRequest(reason)) => {
            tracing::debug!(path = raw_path, reason, "path rejected");
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("bad request: {reason}\n"),
                &NO_STORE,
                now,
            );
        }
        Err(PathRejection::NotFound) => return not_found(app, raw_path, now),
    };

    // Signed links are checked before the file is looked up: a refused request learns nothing
    // about what exists (spec http-origin §2.3 step 0, K-3).
    let unix_now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token_request = TokenRequest {
        raw_path: target.raw_path,
        query: target.query,
        client: Some(target.client),
        now: unix_now,
    };
    let mut note = AccessNote::default();
    let access = match app.access.check(asset.as_str(), &token_request) {
        Ok(a) => {
            if matches!(a, Access::Granted { .. }) {
                note.token = Some("ok");
                Metrics::count_result(&app.metrics.tokens, "ok");
            }
            a
        }
        Err(rejection) => {
            let reason = rejection.reason.as_str();
            Metrics::count_result(&app.metrics.tokens, reason);
            tracing::info!(
                path = asset.as_str(),
                reason = rejection.reason.as_str(),
                detail = rejection.detail.as_str(),
                "signed link refused"
            );
            let body = format!("{reason}\n");
            let mut r = error_response(StatusCode::FORBIDDEN, &body, &NO_STORE, now);
            note.token = Some(reason);
            r.extensions_mut().insert(note);
            return r;
        }
    };
    let (file, meta) = match app.store.open(&asset).await {
        Ok(opened) => (opened.file, opened.meta),
        Err(OpenError::NotFound) => return not_found(app, asset.as_str(), now),
        Err(OpenError::Escapes(real)) => {
            tracing::warn!(path = asset.as_str(), real = %real.display(), "path resolves outside the asset root");
            return not_found(app, asset.as_str(), now);
        }
        Err(OpenError::Io(e)) if is_fd_exhaustion(&e) => {
            app.metrics.fd_exhaustion.inc();
            tracing::error!(error = %e, "out of file descriptors");
            return unavailable(now);
        }
        Err(OpenError::Io(e)) => {
            // A file that keeps changing under us, or a real IO fault: ours, not the client's.
            tracing::error!(path = asset.as_str(), error = %e, "cannot open asset");
            return unavailable(now);
        }
    };

    let resource = Resource {
        len: meta.len(),
        etag: &meta.etag,
        last_modified: effective_last_modified(meta.modified(), now),
        content_type: meta.content_type,
    };
    let is_get = method == Method::GET;
    let ranges: Vec<&[u8]> = headers
        .get_all(header::RANGE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let conditionals = conditional_headers(headers);
    let opts = RangeOptions {
        max_ranges: app.settings.ranges.max_ranges,
        coalesce_gap: app.settings.ranges.coalesce_gap,
    };
    let decision = decide(
        is_get,
        &ranges,
        &conditionals,
        &resource,
        opts,
        now,
        random_boundary,
    );
    let policy = match access {
        // Verified at the origin: no shared cache may store it (K-1, H-19).
        Access::Granted {
            edge_verified: false,
        } => {
            vec![(header::CACHE_CONTROL, PRIVATE_NO_STORE.clone())]
        }
        _ => {
            let (headers, rule) = app.policy.apply(asset.as_str(), ResponseClass::Success);
            note.cache_rule = rule.cloned();
            headers
        }
    };
    let (status, head) = build_head(&decision, &resource, &policy, now);

    let segments = match &decision {
        _ if !is_get => None,
        Decision::Full if !meta.is_empty() => Some(vec![Segment::File {
            start: 0,
            end: meta.len(),
        }]),
        Decision::Partial(r) => Some(vec![Segment::File {
            start: r.start,
            end: r.end + 1,
        }]),
        Decision::Multipart(plan) => {
            let mut segs = Vec::with_capacity(plan.parts.len() * 2 + 1);
            for part in &plan.parts {
                segs.push(Segment::Bytes(part.head.clone()));
                segs.push(Segment::File {
                    start: part.range.start,
                    end: part.range.end + 1,
                });
            }
            segs.push(Segment::Bytes(plan.tail.clone()));
            Some(segs)
        }
        _ => None,
    };
    // Load shedding: only responses that stream file bytes take a slot.
    let permit = match &segments {
        Some(_) => match app.streams.acquire_or_wait(target.client).await {
            Ok(p) => Some(p),
            Err(shed) => {
                Metrics::count(&app.metrics.shed, shed.as_str());
                tracing::warn!(client = %target.client, reason = shed.as_str(), active = app.streams.active(), "stream shed");
                let mut r = unavailable(now);
                if let Ok(v) =
                    HeaderValue::from_str(&app.settings.limits.retry_after_secs.to_string())
                {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
        },
        None => None,
    };
    let body = match (&decision, segments) {
        (_, Some(segs)) => {
            let stream =
                FileStream::new(file, meta.identity, segs, app.settings.streaming.read_size);
            OriginBody::File(match permit {
                Some(p) => stream.holding(p),
                None => stream,
            })
        }
        (Decision::PreconditionFailed | Decision::RangeNotSatisfiable, None) if is_get => {
            OriginBody::text(error_text(status))
        }
        _ => OriginBody::Empty,
    };
    let mut resp = with_head(status, head, body);
    resp.extensions_mut().insert(note);
    resp
}

fn conditional_headers(h: &HeaderMap) -> ConditionalHeaders {
    let all = |name: header::HeaderName| -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    ConditionalHeaders {
        if_match: all(header::IF_MATCH),
        if_none_match: all(header::IF_NONE_MATCH),
        if_modified_since: all(header::IF_MODIFIED_SINCE),
        if_unmodified_since: all(header::IF_UNMODIFIED_SINCE),
        if_range: all(header::IF_RANGE),
    }
}

fn with_head(status: StatusCode, head: HeaderMap, body: OriginBody) -> Response<OriginBody> {
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
pub fn not_found(app: &App, path: &str, now: SystemTime) -> Response<OriginBody> {
    let text = error_text(StatusCode::NOT_FOUND);
    let mut head = error_head(text, &NO_STORE, now);
    head.remove(header::CACHE_CONTROL);
    for (name, value) in app
        .policy
        .headers(path.trim_start_matches('/'), ResponseClass::NotFound)
    {
        head.append(name, value);
    }
    with_head(StatusCode::NOT_FOUND, head, OriginBody::text(text))
}

fn unavailable(now: SystemTime) -> Response<OriginBody> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_text(StatusCode::SERVICE_UNAVAILABLE),
        &NO_STORE,
        now,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
