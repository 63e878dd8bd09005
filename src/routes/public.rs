//! The public listener's service: health and readiness, origin protection, metrics, the
//! player page and its `/ws` socket, CORS, and the video mount (`pipeline`).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::{answer, client_of, metrics_response, readiness, RouteFuture};
use crate::app::App;
use crate::http::response::WireSlot;
use crate::observe::access_log::AccessNote;
use crate::pipeline::serve_asset;
use crate::reply::{self, NO_STORE};
use crate::storage::body::OriginBody;

/// The public listener's routes as a tower service (any request body type: the video routes
/// read none, and `/ws` takes the connection over through hyper's upgrade extension).
#[derive(Clone)]
pub struct PublicService {
    app: Arc<App>,
}

impl PublicService {
    pub fn new(app: Arc<App>) -> PublicService {
        PublicService { app }
    }
}

impl<B: Send + 'static> tower::Service<Request<B>> for PublicService {
    type Response = Response<OriginBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> RouteFuture {
        let app = Arc::clone(&self.app);
        answer(async move {
            let client = client_of(&req);
            let mut note = AccessNote::default();
            let mut resp = route(&app, req, client, &mut note, &mut WireSlot::default()).await;
            resp.extensions_mut().insert(note);
            resp
        })
    }
}

/// Routes one request on the public listener from `client` (resolved through trusted proxies);
/// what the access log should add goes into `note`, and an asset's kept head in wire form into
/// `wire` when the writer asked for one (the response's map then holds only later fields).
pub async fn route<B>(
    app: &Arc<App>,
    req: Request<B>,
    client: IpAddr,
    note: &mut AccessNote,
    wire: &mut WireSlot,
) -> Response<OriginBody> {
    let now = SystemTime::now();
    let path = req.uri().path();
    if path == "/healthz" {
        return reply::text(req.method(), StatusCode::OK, "ok\n", now);
    }
    if path == "/readyz" {
        let (status, text) = readiness(app);
        return reply::text(req.method(), status, &format!("{text}\n"), now);
    }
    // Origin protection comes before any other work (spec http-origin F-14).
    if let Some(refused) = origin_refusal(app, &req, client) {
        return refused;
    }
    if path == "/metrics" && app.settings.metrics.public {
        return metrics_response(app, req.method()).await;
    }
    if app.settings.player.enabled {
        if path == "/ws" {
            return crate::player::ws::accept(Arc::clone(app), req, client);
        }
        if path.starts_with("/player/") {
            return match *req.method() {
                Method::GET | Method::HEAD => {
                    crate::player::page_response(&app.player_page, path, req.method())
                }
                _ => reply::method_not_allowed("GET, HEAD", now),
            };
        }
    }
    let Some(rest) = path
        .strip_prefix(app.settings.assets.mount.as_str())
        .and_then(|r| r.strip_prefix('/'))
    else {
        return reply::not_found(&app.policy, path, now);
    };
    let origin = cors_origin(app, &req);
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
            let mut resp = {
                let target = crate::pipeline::Target {
                    raw_path: path,
                    query: req.uri().query().unwrap_or(""),
                    asset: rest,
                    client,
                    cookies: req
                        .headers()
                        .get_all(header::COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect(),
                };
                serve_asset(app, req.method(), req.headers(), &target, note, wire, now).await
            };
            add_cors(app, origin, resp.headers_mut());
            // The request's field map is reused for the next request this thread parses.
            crate::http::response::recycle_headers(req.into_parts().0.headers);
            resp
        }
        _ => reply::method_not_allowed("GET, HEAD", now),
    }
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
    Some(reply::error_response(
        StatusCode::FORBIDDEN,
        crate::http::response::error_text(StatusCode::FORBIDDEN),
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
    let mut r = reply::text(&Method::OPTIONS, StatusCode::NO_CONTENT, "", now);
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
