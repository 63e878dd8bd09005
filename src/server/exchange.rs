//! One request on a connection: resolve the client, bound the head, ask the listener's tower
//! service for the response, and wrap its body so that bytes, the first byte, the end (or the
//! client going away) reach the connection state, the metrics and the access log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::ServiceExt;

use super::conn::ConnState;
use crate::app::App;
use crate::config::AccessFormat;
use crate::http::response::{WireHead, WireSlot};
use crate::observe::access_log::{self, AccessNote, AccessRecord};
use crate::observe::metrics::Route;
use crate::routes::{AdminService, ClientAddr};
use crate::storage::body::OriginBody;

/// Which route table a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

/// What a listener runs its requests through: the public routes directly (nearly every
/// request), the admin routes through their tower service.
#[derive(Clone)]
pub enum Routes {
    Public,
    Admin(AdminService),
}

impl Routes {
    pub fn new(app: &Arc<App>, which: Listener) -> Routes {
        match which {
            Listener::Public => Routes::Public,
            Listener::Admin => Routes::Admin(AdminService::new(Arc::clone(app))),
        }
    }

    fn which(&self) -> Listener {
        match self {
            Routes::Public => Listener::Public,
            Routes::Admin(_) => Listener::Admin,
        }
    }
}

/// The response body as sent: counts bytes, notes the first byte, and on finish or drop writes
/// the access-log line, counts the response, and tells the connection its request is done.
pub struct LoggedBody {
    inner: OriginBody,
    /// Counted in the connection's bodies in progress (non-empty bodies only).
    streaming: bool,
    sent: u64,
    failed: bool,
    first_byte: bool,
    record: AccessRecord,
    app: Arc<App>,
    conn: Arc<ConnState>,
    /// The head in wire form, when the writer asked for it and the handler had it kept.
    wire: Option<WireHead>,
}

impl LoggedBody {
    /// The body being sent, for a writer that takes its bytes itself (`plain`).
    pub(super) fn origin_mut(&mut self) -> &mut OriginBody {
        &mut self.inner
    }

    /// The head in wire form, if the handler left one (`handle` with `wire_heads`): the
    /// response's map then holds only the fields added after it.
    pub(super) fn take_wire(&mut self) -> Option<WireHead> {
        self.wire.take()
    }

    /// `n` more body bytes reached the connection.
    pub(super) fn delivered(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.conn.body_frame();
        if !self.first_byte {
            self.first_byte = true;
            self.app
                .metrics
                .first_byte(self.record.started.elapsed().as_secs_f64());
        }
        self.sent += n as u64;
        if let Some(id) = &self.record.session {
            self.app
                .sessions
                .add_bytes(id, self.record.client, n as u64);
        }
    }

    /// The body could not be produced (a storage error): logged, and the line says incomplete.
    pub(super) fn abort(&mut self, e: &std::io::Error) {
        self.failed = true;
        tracing::warn!(path = self.record.path.as_str(), error = %e, "response body aborted");
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.delivered(d.len());
                }
            }
            Poll::Ready(Some(Err(e))) => this.abort(e),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if self.streaming {
            self.conn.body_finished();
        }
        self.conn.request_finished();
        let r = &self.record;
        self.app.metrics.response(r.route, r.status, self.sent);

        let complete = !self.failed && self.inner.is_end_stream();
        access_log::write(self.app.settings.log.access_format, r, self.sent, complete);
    }
}

fn route_label(app: &App, which: Listener, path: &str) -> Route {
    match path {
        "/healthz" | "/readyz" => Route::Health,
        "/metrics" => Route::Metrics,
        _ if which == Listener::Admin => Route::Admin,
        _ if path
            .strip_prefix(app.settings.assets.mount.as_str())
            .is_some_and(|r| r.starts_with('/')) =>
        {
            Route::Asset
        }
        _ => Route::Other,
    }
}

/// Answers one request of a connection from `peer` through `routes`. With `wire_heads` (a
/// writer that encodes heads itself and calls [`LoggedBody::take_wire`]) a kept head may come
/// in wire form, the response's map then holding only fields added after it.
pub async fn handle<B>(
    app: Arc<App>,
    routes: Routes,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    mut req: Request<B>,
    wire_heads: bool,
) -> Result<Response<LoggedBody>, std::convert::Infallible>
where
    B: Send + 'static,
    AdminService: tower::Service<Request<B>, Response = Response<OriginBody>, Error = Infallible>,
    <AdminService as tower::Service<Request<B>>>::Future: Send,
{
    let which = routes.which();
    conn.request_started();
    let started = Instant::now();
    let h = req.headers();
    let client = app.clients.client(peer.ip(), h);
    let text = |name: http::header::HeaderName| h.get(name).map(|v| logged_text(v.as_bytes()));
    let combined = app.settings.log.access_format == AccessFormat::Combined;
    let route_kind = route_label(&app, which, req.uri().path());
    let mut record = AccessRecord {
        method: req.method().clone(),
        version: req.version(),
        // The path only: query strings may carry signed-URL tokens and never reach the log.
        path: req.uri().path().to_owned(),
        status: 0,
        peer,
        client,
        range: text(http::header::RANGE),
        started,
        route: route_kind,
        note: AccessNote::default(),
        cdn: crate::server::client::detect_cdn(h).map(|c| (c.cdn, c.pop.map(str::to_owned))),
        session: (route_kind == Route::Asset)
            .then(|| req.uri().query())
            .flatten()
            .and_then(crate::player::sessions::session_from_query)
            .map(str::to_owned),
        user_agent: combined.then(|| text(http::header::USER_AGENT)).flatten(),
        referer: combined.then(|| text(http::header::REFERER)).flatten(),
    };
    let mut wire = WireSlot {
        wanted: wire_heads,
        head: None,
    };
    let resp = if head_size(&req) > app.settings.server.max_header_bytes {
        head_too_large()
    } else {
        match routes {
            // Not through `PublicService` (kept for embedding): its boxed future, Oneshot and
            // the client's extension cost allocations and moves per request.
            Routes::Public => {
                crate::routes::public::route(&app, req, client, &mut record.note, &mut wire).await
            }
            Routes::Admin(svc) => {
                req.extensions_mut().insert(ClientAddr(client));
                match svc.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        }
    };
    // The public routes wrote their note into `record.note`; the admin routes write none.
    let (parts, inner) = resp.into_parts();
    record.status = parts.status.as_u16();
    if let Some(id) = &record.session {
        app.sessions
            .response_started(id, client, record.status, record.range.as_deref());
    }
    let first_byte = inner.is_end_stream();
    if first_byte {
        app.metrics.first_byte(started.elapsed().as_secs_f64());
    } else {
        conn.body_started();
    }
    Ok(Response::from_parts(
        parts,
        LoggedBody {
            inner,
            streaming: !first_byte,
            sent: 0,
            failed: false,
            first_byte,
            record,
            app,
            conn,
            wire: wire.head,
        },
    ))
}

/// A request field's value as the access log keeps it: its first 200 characters (lossy UTF-8).
fn logged_text(value: &[u8]) -> String {
    const KEPT: usize = 200;
    match std::str::from_utf8(value) {
        // Nearly every value: valid and short, so no walk over its characters.
        Ok(s) if s.len() <= KEPT => s.to_owned(),
        _ => String::from_utf8_lossy(value).chars().take(KEPT).collect(),
    }
}

/// hyper's max_buf_size is checked only while a head is still incomplete, so a big head that
/// arrives in one read would pass it; this bounds the parsed head itself (HTTP/1 and HTTP/2).
fn head_size<B>(req: &Request<B>) -> usize {
    req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

fn head_too_large() -> Response<OriginBody> {
    crate::reply::error_response(
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request header fields too large\n",
        &http::HeaderValue::from_static("no-store"),
        std::time::SystemTime::now(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_fields_keep_their_first_200_characters() {
        assert_eq!(logged_text(b"bytes=0-99"), "bytes=0-99");
        let long = "é".repeat(150);
        assert_eq!(logged_text(long.as_bytes()), "é".repeat(150));
        let longer = "é".repeat(250);
        assert_eq!(logged_text(longer.as_bytes()), "é".repeat(200));
        assert_eq!(logged_text(b"a\xffb"), "a\u{fffd}b");
    }

    /// Every request's exchange is a heap allocation of this future's size, copied into place
    /// (see `plain::Plain::boxed_exchange`): a rare path that awaits a large future without
    /// boxing it (opening a file, the caches' insert paths, a remote store, the admin routes)
    /// makes every request pay for its size. It was 7,232 bytes before the open-file cache's
    /// miss path was boxed; 2,880 after.
    #[test]
    fn a_public_request_future_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::load(&crate::config::Overrides {
            config_file: None,
            listen: None,
            assets: Some(dir.path().to_owned()),
        })
        .unwrap();
        let app = Arc::new(App::new(Arc::new(settings)).unwrap());
        let request = Request::builder()
            .uri("/video/a.mp4")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let exchange = handle(
            app,
            Routes::Public,
            peer,
            Arc::new(ConnState::default()),
            request,
            true,
        );
        let size = std::mem::size_of_val(&exchange);
        assert!(size <= 4096, "a request's future takes {size} bytes");
    }
}
