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
    peer: std::net::SocketAddr,
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
    let Some(rest) = path
        .strip_prefix(app.settings.assets.mount.as_str())
        .and_then(|r| r.strip_prefix('/'))
    else {
        return not_found(app, path, now);
    };
    match *req.method() {
        Method::GET | Method::HEAD => {
            let target = crate::serve::Target {
                raw_path: path,
                query: req.uri().query().unwrap_or(""),
                asset: rest,
                peer: peer.ip(),
            };
            serve_asset(app, req.method(), req.headers(), &target).await
        }
        _ => {
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
    }
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
