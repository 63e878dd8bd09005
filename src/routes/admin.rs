//! The admin listener's service: health, readiness and metrics without a token, then the
//! admin API (`admin::api`) behind bearer tokens.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::{answer, client_of, metrics_response, readiness, RouteFuture};
use crate::admin::{AdminBody, BoxError};
use crate::app::App;
use crate::reply::json;
use crate::storage::body::OriginBody;

/// The admin API and its listener's health and metrics routes, as a tower service.
#[derive(Clone)]
pub struct AdminService {
    app: Arc<App>,
}

impl AdminService {
    pub fn new(app: Arc<App>) -> AdminService {
        AdminService { app }
    }
}

impl<B> tower::Service<Request<B>> for AdminService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<OriginBody>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> RouteFuture {
        let app = Arc::clone(&self.app);
        let (parts, body) = req.into_parts();
        let body: AdminBody = body
            .map_err(|e| std::io::Error::other(e.into()))
            .boxed_unsync();
        let req = Request::from_parts(parts, body);
        answer(async move { route(&app, req).await })
    }
}

async fn route(app: &App, req: Request<AdminBody>) -> Response<OriginBody> {
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/readyz" => {
            let (status, text) = readiness(app);
            json(status, serde_json::json!({ "status": text }))
        }
        "/metrics" if app.settings.metrics.admin => metrics_response(app, req.method()).await,
        _ => {
            let client = client_of(&req);
            crate::admin::api(app, req, client).await
        }
    }
}
