//! Method + path → handler. Knows handlers, not their internals.

use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::http::response::error_text;
use crate::serve::{error_response, not_found, serve_asset};
use crate::storage::body::OriginBody;
use crate::App;

static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Routes one request on the public listener.
pub async fn route<B>(
    app: &App,
    req: &Request<B>,
    client: std::net::IpAddr,
) -> Response<OriginBody> {
    let now = SystemTime::now();
    let path = req.uri().path();
    if path == "/healthz" {
        return simple(req.method(), StatusCode::OK, "ok\n", now);
    }
    if path == "/readyz" {
        return match app.is_ready() {
            true => simple(req.method(), StatusCode::OK, "ready\n", now),
            false => simple(
                req.method(),
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\n",
                now,
            ),
        };
    }
    // Origin protection comes before any other work (spec http-origin F-14).
    if let Some(refused) = origin_refusal(app, req, client) {
        return refused;
    }
    if path == "/metrics" && app.settings.metrics.public {
        return metrics_response(app, req.method()).await;
    }
    if path.starts_with("/player/") && app.settings.player.enabled {
        return match *req.method() {
            Method::GET | Method::HEAD => crate::player::page_response(app, req.method()),
            _ => method_not_allowed(now),
        };
    }
    let Some(rest) = path
        .strip_prefix(app.settings.assets.mount.as_str())
        .and_then(|r| r.strip_prefix('/'))
    else {
        return not_found(app, path, now);
    };
    let origin = cors_origin(app, req);
    if *req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(app, origin, now);
    }
    match *req.method() {
        Method::GET | Method::HEAD => {
            let target = crate::serve::Target {
                raw_path: path,
                query: req.uri().query().unwrap_or(""),
                asset: rest,
                client,
            };
            let mut resp = serve_asset(app, req.method(), req.headers(), &target).await;
            add_cors(app, origin, resp.headers_mut());
            resp
        }
        _ => method_not_allowed(now),
    }
}

/// 405 for anything but GET/HEAD.
fn method_not_allowed(now: SystemTime) -> Response<OriginBody> {
    let mut r = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        error_text(StatusCode::METHOD_NOT_ALLOWED),
        &NO_STORE,
        now,
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// 403 (logged) when origin protection is on and the request lacks the CDN's secret.
pub fn origin_refusal<B>(
    app: &App,
    req: &Request<B>,
    client: std::net::IpAddr,
) -> Option<Response<OriginBody>> {
    if origin_secret_ok(app, req) {
        return None;
    }
    let path = req.uri().path();
    tracing::info!(%client, path, "origin protection: request without the CDN's secret header");
    Some(error_response(
        StatusCode::FORBIDDEN,
        error_text(StatusCode::FORBIDDEN),
        &NO_STORE,
        SystemTime::now(),
    ))
}

/// Whether the request carries one of the configured origin-protection values (constant time,
/// every value checked). Always true when protection is off.
fn origin_secret_ok<B>(app: &App, req: &Request<B>) -> bool {
    let op = &app.settings.origin_protection;
    if op.values.is_empty() {
        return true;
    }
    let Some(got) = req.headers().get(op.header.as_str()) else {
        return false;
    };
    use sha2::Digest;
    let got = sha2::Sha256::digest(got.as_bytes());
    let mut ok = false;
    for v in &op.values {
        ok |= crate::signing::ct_eq(&got, &sha2::Sha256::digest(v.expose().as_bytes()));
    }
    ok
}

/// The request's Origin if CORS allows it: `Some("*")` for a wildcard configuration.
fn cors_origin<B>(app: &App, req: &Request<B>) -> Option<HeaderValue> {
    let allowed = &app.settings.cors.allowed_origins;
    if allowed.is_empty() {
        return None;
    }
    let origin = req.headers().get(header::ORIGIN)?;
    if allowed.iter().any(|a| a == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let o = origin.to_str().ok()?;
    allowed.iter().any(|a| a == o).then(|| origin.clone())
}

static EXPOSE: HeaderValue =
    HeaderValue::from_static("Content-Range, Content-Length, Accept-Ranges, ETag");

/// CORS headers on a GET/HEAD answer. With a list of origins the answer depends on Origin, so
/// every response of the mount says `Vary: Origin` (the same on 200/206/304, H-21).
fn add_cors(app: &App, origin: Option<HeaderValue>, h: &mut http::HeaderMap) {
    let allowed = &app.settings.cors.allowed_origins;
    if allowed.is_empty() {
        return;
    }
    let wildcard = allowed.iter().any(|a| a == "*");
    if !wildcard {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE.clone());
    }
}

fn preflight(app: &App, origin: Option<HeaderValue>, now: SystemTime) -> Response<OriginBody> {
    let mut r = simple(&Method::OPTIONS, StatusCode::NO_CONTENT, "", now);
    *r.body_mut() = OriginBody::Empty;
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.remove(header::CONTENT_LENGTH);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Range, If-Range, If-None-Match, If-Modified-Since, If-Match, If-Unmodified-Since",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(app.settings.cors.max_age_secs),
    );
    add_cors(app, origin, h);
    r
}

/// `GET /metrics` (both listeners): OpenMetrics text, never cached.
pub async fn metrics_response(app: &App, method: &Method) -> Response<OriginBody> {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed(SystemTime::now());
    }
    let text = app.render_metrics().await;
    let mut r = error_response(StatusCode::OK, &text, &NO_STORE, SystemTime::now());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    if method == Method::HEAD {
        *r.body_mut() = OriginBody::Empty;
    }
    r
}

fn simple(
    method: &Method,
    status: StatusCode,
    text: &'static str,
    now: SystemTime,
) -> Response<OriginBody> {
    let mut r = error_response(status, text, &NO_STORE, now);
    if method == Method::HEAD {
        *r.body_mut() = OriginBody::Empty;
    }
    r
}
