//! `GET /ws`: the player's presence socket (RFC 6455 over hyper's HTTP/1.1 upgrade).
//!
//! The page connects with `?session=<id>&video=<path>` and sends a JSON heartbeat every few
//! seconds; each is answered with what the origin served that session. No heartbeat for
//! `player.session_timeout_secs` closes the socket and ends the session. Malformed frames are
//! ignored and counted; a frame over `player.max_frame_bytes` closes the socket.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::sessions::{session_from_query, Heartbeat, Refusal};
use crate::app::App;
use crate::observe::metrics::Metrics;
use crate::storage::body::OriginBody;

fn refuse(status: StatusCode, why: &str) -> Response<OriginBody> {
    crate::reply::error_response(
        status,
        &format!("{why}\n"),
        &HeaderValue::from_static("no-store"),
        SystemTime::now(),
    )
}

fn header_has<B>(req: &Request<B>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Answers the upgrade request and spawns the socket task.
pub fn accept<B>(app: Arc<App>, mut req: Request<B>, client: IpAddr) -> Response<OriginBody> {
    if req.method() != http::Method::GET {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let query = req.uri().query().unwrap_or("");
    let Some(session) = session_from_query(query).map(str::to_owned) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad request: `session` must be 8-64 of A-Z a-z 0-9 -",
        );
    };
    let video = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("video="))
        .map(|v| {
            crate::http::percent::decode_once(v)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| v.to_owned())
        })
        .unwrap_or_default();
    if !header_has(&req, header::UPGRADE, "websocket")
        || !header_has(&req, header::CONNECTION, "upgrade")
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad request: expected a WebSocket upgrade",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "bad request: Sec-WebSocket-Version must be 13",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad request: missing Sec-WebSocket-Key",
        );
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let player = &app.settings.player;
    if let Err(why) = app.sessions.open(
        &session,
        client,
        &video,
        player.max_sessions_per_client,
        player.max_sessions,
    ) {
        Metrics::count(&app.metrics.ws_closed, "refused");
        let status = match why {
            Refusal::Duplicate => StatusCode::CONFLICT,
            Refusal::PerClient => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Full => StatusCode::SERVICE_UNAVAILABLE,
        };
        return refuse(status, why.as_str());
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_app = Arc::clone(&app);
    tokio::spawn(async move {
        let app = task_app;
        let _end = EndSession {
            app: Arc::clone(&app),
            id: session.clone(),
        };
        match on_upgrade.await {
            Ok(upgraded) => {
                let cfg = WebSocketConfig::default()
                    .max_message_size(Some(app.settings.player.max_frame_bytes))
                    .max_frame_size(Some(app.settings.player.max_frame_bytes));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(cfg),
                )
                .await;
                let reason = run(&app, ws, &session).await;
                Metrics::count(&app.metrics.ws_closed, reason);
                tracing::debug!(session = %session, reason, "player session ended");
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut r = Response::new(OriginBody::Empty);
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// Removes the session however the socket task ends.
struct EndSession {
    app: Arc<App>,
    id: String,
}

impl Drop for EndSession {
    fn drop(&mut self) {
        self.app.sessions.close(&self.id);
    }
}

/// Serves one socket until it closes; returns why it ended.
///
/// Only a valid heartbeat (a text frame the page sends) keeps the session alive: pings, pongs
/// and malformed frames do not move the deadline. A reply the client does not read within
/// `server.write_stall_timeout_secs` ends the socket.
async fn run<S>(app: &App, mut ws: WebSocketStream<S>, session: &str) -> &'static str
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let timeout = Duration::from_secs(app.settings.player.session_timeout_secs);
    let stall = Duration::from_secs(app.settings.server.write_stall_timeout_secs);
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                let _ = tokio::time::timeout(stall, ws.close(None)).await;
                return "heartbeat_timeout";
            }
            Ok(None) => return "client_closed",
            Ok(Some(Err(WsError::Capacity(_)))) => return "oversize",
            Ok(Some(Err(_))) => return "protocol_error",
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(text) => match Heartbeat::parse(text.as_str()) {
                Some(hb) => {
                    deadline = tokio::time::Instant::now() + timeout;
                    if let Some(stats) = app.sessions.heartbeat(session, hb) {
                        let reply = serde_json::to_string(&stats).unwrap_or_default();
                        match tokio::time::timeout(stall, ws.send(Message::text(reply))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return "client_closed",
                            Err(_) => return "write_stall",
                        }
                    }
                }
                None => app.sessions.bad_frame(),
            },
            Message::Binary(_) => app.sessions.bad_frame(),
            Message::Close(_) => return "client_closed",
            // Pings are answered by tungstenite itself; they do not count as heartbeats.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}
