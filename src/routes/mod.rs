//! Routing: which handler answers a request. Each listener runs one tower `Service` over
//! `http::Request`: [`PublicService`] (health, readiness, metrics, the player, `/ws` and the
//! video mount) and [`AdminService`] (health, readiness, metrics and the admin API). The server
//! runs them through that interface, and a Rust backend can mount them in its own axum or hyper
//! application and wrap them in tower layers (see the README, *Embedding*).
//!
//! The client address comes from the connection layer as a [`ClientAddr`] extension; without
//! one (an embedding that does not set it) the client is the unspecified address, so per-client
//! caps lump such requests together and IP-bound links are refused.

pub mod admin;
pub mod public;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

pub use admin::AdminService;
pub use public::PublicService;

use crate::app::App;
use crate::reply;
use crate::storage::body::OriginBody;

/// What both services' `call` returns: the routed answer, boxed (one allocation a request).
pub type RouteFuture =
    Pin<Box<dyn Future<Output = Result<Response<OriginBody>, Infallible>> + Send>>;

/// Boxes a routing future as a never-failing service answer.
fn answer(routed: impl Future<Output = Response<OriginBody>> + Send + 'static) -> RouteFuture {
    Box::pin(async move { Ok(routed.await) })
}

/// The client's address as the connection layer resolved it (through trusted proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The request's [`ClientAddr`], or the unspecified address.
pub fn client_of<B>(req: &Request<B>) -> IpAddr {
    req.extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0)
}

/// `GET /metrics` (both listeners): OpenMetrics text, never cached.
pub async fn metrics_response(app: &App, method: &Method) -> Response<OriginBody> {
    if method != Method::GET && method != Method::HEAD {
        return reply::method_not_allowed("GET, HEAD", SystemTime::now());
    }
    let text = app.render_metrics().await;
    let mut r = reply::text(method, StatusCode::OK, &text, SystemTime::now());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::observe::metrics::CONTENT_TYPE),
    );
    r
}

/// `GET /readyz` as text (public) or JSON (admin).
pub fn readiness(app: &App) -> (StatusCode, &'static str) {
    if app.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
