//! Listeners, connections, access log and graceful shutdown.
//!
//! Workers: one thread per core, each running its own single-threaded tokio runtime with its
//! own `SO_REUSEPORT` listening socket on the same address (nginx's model). The kernel spreads
//! connections over the sockets, and a request never hops between threads, which on a loaded
//! origin costs more than the work itself (wakeups between work-stealing workers). Shared state
//! (`App`: caches, settings) is behind `Arc`s and thread-safe.
//!
//! Shutdown: when `shutdown` resolves we stop accepting, ask every connection to finish
//! (hyper closes idle keep-alives and lets in-flight responses complete), and wait up to the
//! grace period before returning; whatever is still running then is cut off.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::AccessFormat;
use crate::conn::{verdict, ConnState, Timeouts, TrackedIo, Verdict};
use crate::metrics::Route;
use crate::routes::route;
use crate::storage::body::OriginBody;
use crate::App;

/// What a handler tells the access log beyond status and bytes (a response extension).
#[derive(Debug, Clone, Default)]
pub struct AccessNote {
    /// The cache rule that set the caching headers.
    pub cache_rule: Option<Arc<str>>,
    /// Signed-link outcome on protected paths: `ok` or the refusal reason.
    pub token: Option<&'static str>,
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
}

struct AccessRecord {
    method: http::Method,
    version: http::Version,
    path: String,
    status: u16,
    peer: SocketAddr,
    client: IpAddr,
    range: Option<String>,
    started: Instant,
    route: Route,
    note: AccessNote,
    cdn: Option<(&'static str, Option<String>)>,
    /// The player's session id (`?session=`), grouping a viewer's requests.
    session: Option<String>,
    user_agent: Option<String>,
    referer: Option<String>,
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
                    this.conn.body_frame();
                    if !this.first_byte {
                        this.first_byte = true;
                        this.app
                            .metrics
                            .first_byte(this.record.started.elapsed().as_secs_f64());
                    }
                    this.sent += d.len() as u64;
                    if let Some(id) = &this.record.session {
                        this.app
                            .sessions
                            .add_bytes(id, this.record.client, d.len() as u64);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                tracing::warn!(path = this.record.path.as_str(), error = %e, "response body aborted");
            }
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
        match self.app.settings.log.access_format {
            AccessFormat::Off => {}
            AccessFormat::Structured => tracing::info!(
                target: "access",
                client = %r.client,
                peer = %r.peer,
                method = %r.method,
                path = r.path.as_str(),
                proto = ?r.version,
                status = r.status,
                bytes = self.sent,
                range = r.range.as_deref().unwrap_or("-"),
                complete,
                duration_ms = r.started.elapsed().as_secs_f64() * 1e3,
                cache_rule = r.note.cache_rule.as_deref().unwrap_or("-"),
                token = r.note.token.unwrap_or("-"),
                cdn = r.cdn.as_ref().map_or("-", |c| c.0),
                cdn_pop = r.cdn.as_ref().and_then(|c| c.1.as_deref()).unwrap_or("-"),
                session = r.session.as_deref().unwrap_or("-"),
            ),
            AccessFormat::Combined => {
                use std::io::Write;
                let line = combined_line(r, self.sent, complete, std::time::SystemTime::now());
                let _ = crate::logbuf::LineWriter.write_all(line.as_bytes());
            }
        }
    }
}

/// `client - - [day/Mon/year:HH:MM:SS +0000] "METHOD path PROTO" status bytes "referer" "ua"`
/// (nginx/Apache combined), then our extras as key=value.
fn combined_line(
    r: &AccessRecord,
    sent: u64,
    complete: bool,
    now: std::time::SystemTime,
) -> String {
    // "Tue, 24 Nov 2026 11:00:00 GMT" -> "24/Nov/2026:11:00:00 +0000"
    let date = httpdate::fmt_http_date(now);
    let f: Vec<&str> = date.split(' ').collect();
    let stamp = match f.as_slice() {
        [_, d, m, y, t, _] => format!("{d}/{m}/{y}:{t} +0000"),
        _ => date.clone(),
    };
    format!(
        "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" rt={:.3} range=\"{}\" rule={} token={} cdn={} pop={} session={} peer={} complete={}\n",
        r.client,
        stamp,
        r.method,
        escape(&r.path),
        r.version,
        r.status,
        sent,
        escape(r.referer.as_deref().unwrap_or("-")),
        escape(r.user_agent.as_deref().unwrap_or("-")),
        r.started.elapsed().as_secs_f64(),
        escape(r.range.as_deref().unwrap_or("-")),
        r.note.cache_rule.as_deref().unwrap_or("-"),
        r.note.token.unwrap_or("-"),
        r.cdn.as_ref().map_or("-", |c| c.0),
        escape(r.cdn.as_ref().and_then(|c| c.1.as_deref()).unwrap_or("-")),
        r.session.as_deref().unwrap_or("-"),
        r.peer,
        complete,
    )
}

/// Quotes, backslashes and non-printable bytes as `\xHH` (as nginx does), so a crafted header
/// cannot forge log fields or lines.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Which route table a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
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

async fn handle(
    app: Arc<App>,
    which: Listener,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    conn.request_started();
    let started = Instant::now();
    let h = req.headers();
    let client = app.clients.client(peer.ip(), h);
    let text = |name: http::header::HeaderName| {
        h.get(name).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(200)
                .collect::<String>()
        })
    };
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
        cdn: crate::proxy::detect_cdn(h).map(|c| (c.cdn, c.pop.map(str::to_owned))),
        session: (route_kind == Route::Asset)
            .then(|| req.uri().query())
            .flatten()
            .and_then(crate::player::sessions::session_from_query)
            .map(str::to_owned),
        user_agent: combined.then(|| text(http::header::USER_AGENT)).flatten(),
        referer: combined.then(|| text(http::header::REFERER)).flatten(),
    };
    let resp = if head_size(&req) > app.settings.server.max_header_bytes {
        head_too_large()
    } else if which == Listener::Public && app.settings.player.enabled && req.uri().path() == "/ws"
    {
        match crate::routes::origin_refusal(&app, &req, client) {
            Some(refused) => refused,
            None => crate::player::ws::accept(Arc::clone(&app), req, client),
        }
    } else {
        match which {
            Listener::Public => route(&app, &req, client).await,
            Listener::Admin => crate::admin::route(&app, req, client).await,
        }
    };
    let (mut parts, inner) = resp.into_parts();
    if let Some(note) = parts.extensions.remove::<AccessNote>() {
        record.note = note;
    }
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
        },
    ))
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
    crate::serve::error_response(
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request header fields too large\n",
        &http::HeaderValue::from_static("no-store"),
        std::time::SystemTime::now(),
    )
}

/// How one listener talks: TLS or not, HTTP/2 or not, connection cap.
#[derive(Clone)]
pub struct ListenerSpec {
    pub which: Listener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Serve HTTP/2 (by ALPN with TLS, by prior knowledge without).
    pub http2: bool,
    /// 0 = unlimited.
    pub max_connections: usize,
}

fn timeouts(app: &App) -> Timeouts {
    let s = &app.settings.server;
    Timeouts {
        header: Duration::from_secs(s.header_read_timeout_secs),
        idle: Duration::from_secs(s.idle_timeout_secs),
        stall: Duration::from_secs(s.write_stall_timeout_secs),
    }
}

/// Counts an open connection for as long as it lives.
struct ConnGuard {
    app: Arc<App>,
    public: bool,
}

impl ConnGuard {
    fn new(app: &Arc<App>, which: Listener) -> ConnGuard {
        app.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let public = which == Listener::Public;
        if public {
            app.public_connections.fetch_add(1, Ordering::AcqRel);
        }
        ConnGuard {
            app: Arc::clone(app),
            public,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.app.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        if self.public {
            self.app.public_connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then drains for at most `grace`.
pub async fn serve(
    app: Arc<App>,
    spec: ListenerSpec,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper queues up to ~400 KiB of body per connection by default before it stops asking
    // for more; for thousands of stalled viewers that is the memory bill. 64 KiB still fills
    // any socket buffer (and bounds request headers to 64 KiB). Header, idle and stall
    // timeouts are ours (`conn`), not hyper's.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        // hyper's default 30 s header timer also runs between keep-alive requests; ours
        // (`conn`) distinguishes the two.
        .header_read_timeout(None)
        // Also bounds an incomplete head; must be able to hold the largest one allowed.
        .max_buf_size((64 * 1024).max(app.settings.server.max_header_bytes + 8192))
        .max_headers(app.settings.server.max_headers);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let limits = timeouts(&app);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        if e.raw_os_error().is_some_and(|c| c == libc::EMFILE || c == libc::ENFILE) {
                            app.metrics.fd_exhaustion.inc();
                        }
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if spec.max_connections > 0
                    && app.public_connections.load(Ordering::Acquire) >= spec.max_connections
                {
                    crate::metrics::Metrics::count(&app.metrics.connections_closed, "over_limit");
                    tokio::spawn(refuse_connection(stream, app.settings.limits.retry_after_secs));
                    continue;
                }
                // Counted for as long as the socket lives, past a WebSocket upgrade too.
                let state = Arc::new(ConnState::holding(ConnGuard::new(&app, spec.which)));
                let io = TrackedIo::new(stream, Arc::clone(&state));
                let task = Connection {
                    refuse_h2: !spec.http2,
                    app: Arc::clone(&app),
                    which: spec.which,
                    peer,
                    state,
                    builder: Arc::clone(&builder),
                    watcher: graceful.watcher(),
                    limits,
                };
                match spec.tls.clone() {
                    None => {
                        tokio::spawn(async move {
                            if !task.refuse_h2 || !h2_preface(&io, limits).await {
                                task.run(io).await;
                            }
                        });
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            // The handshake is bounded by the header timeout (TLS slowloris).
                            match tokio::time::timeout(limits.header, acceptor.accept(io)).await {
                                Ok(Ok(tls)) => task.run(tls).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => {
                                    crate::metrics::Metrics::count(&task.app.metrics.connections_closed, "header_timeout");
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                }
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Whether a plain connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`), which is
/// refused when h2c is off. Waits for the first bytes at most the header timeout.
async fn h2_preface(io: &TrackedIo<tokio::net::TcpStream>, limits: Timeouts) -> bool {
    const PRI: &[u8] = b"PRI * HTTP/2.0";
    let wait = limits.header.min(limits.idle);
    let peeked = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 14];
        loop {
            match io.get_ref().peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= PRI.len() || buf[..n] != PRI[..n] => return buf[..n] == *PRI,
                // A prefix of the preface so far: wait for more.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    // On timeout, let the connection's own header/idle timeouts deal with it.
    peeked.unwrap_or(false)
}

/// Over the connection cap: a short 503 and close, without reading the request.
async fn refuse_connection(mut stream: tokio::net::TcpStream, retry_after: u64) {
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after}\r\nCache-Control: no-store\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\nservice unavailable\n"
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

struct Connection {
    /// Plain TCP without h2c: an HTTP/2 preface is refused (the upgrade-capable builder would
    /// otherwise detect and serve it).
    refuse_h2: bool,
    app: Arc<App>,
    which: Listener,
    peer: SocketAddr,
    state: Arc<ConnState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    limits: Timeouts,
}

impl Connection {
    /// Serves HTTP on `io` beside a watchdog that closes it on idle, header or stall timeout.
    async fn run<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            refuse_h2: _,
            app,
            which,
            peer,
            state,
            builder,
            watcher,
            limits,
        } = self;
        let service = {
            let app = Arc::clone(&app);
            let state = Arc::clone(&state);
            service_fn(move |req| handle(Arc::clone(&app), which, peer, Arc::clone(&state), req))
        };
        // With upgrades, for the player's WebSocket (HTTP/1.1 only).
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        loop {
            let wake = match verdict(state.snapshot(), crate::conn::now_ms(), limits) {
                Verdict::Close(reason) => {
                    crate::metrics::Metrics::count(
                        &app.metrics.connections_closed,
                        reason.as_str(),
                    );
                    tracing::debug!(%peer, reason = reason.as_str(), "closing connection");
                    return;
                }
                Verdict::CheckAt(t) => t,
            };
            let sleep = Duration::from_millis(wake.saturating_sub(crate::conn::now_ms()));
            tokio::select! {
                r = &mut conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with error");
                    }
                    return;
                }
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

/// Binds `n` listening sockets to `addr` with `SO_REUSEPORT`, one per worker. With port 0 the
/// first socket picks the port and the others join it.
pub fn bind_listeners(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let listener: std::net::TcpListener = s.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Runs one worker per listener, each on its own thread and single-threaded runtime, until
/// `shutdown` resolves; then every worker drains for at most `grace`. Returns when all are done.
pub fn run_workers(
    app: Arc<App>,
    public: ListenerSpec,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    cert: Option<Arc<crate::tls::ReloadingCert>>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let per_worker_blocking =
        (app.settings.streaming.blocking_threads / listeners.len().max(1)).max(4);
    let log_buffer = app.settings.log.buffer_bytes;
    let log_flush = Duration::from_millis(app.settings.log.flush_ms.max(1));
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let app = Arc::clone(&app);
        let spec = public.clone();
        let mut rx = rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(per_worker_blocking)
                    .thread_name(format!("worker-{i}-blocking"))
                    .build()?;
                crate::logbuf::buffer_this_thread(log_buffer, log_flush);
                let result = rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    // Flush idle workers' log buffers so lines never wait long.
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(log_flush);
                        loop {
                            tick.tick().await;
                            crate::logbuf::flush_this_thread();
                        }
                    });
                    let stop = async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    };
                    serve(app, spec, listener, stop, grace).await;
                    Ok(())
                });
                crate::logbuf::flush_this_thread();
                result
            })?;
        threads.push(handle);
    }
    // The calling thread runs the admin listener (light traffic) and waits for the signal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let Some(cert) = cert {
            tokio::spawn(crate::tls::watch(
                cert,
                Duration::from_secs(app.settings.tls.reload_check_secs),
                Arc::clone(&app.metrics),
            ));
        }
        let admin_task = match admin {
            Some(l) => {
                let l = TcpListener::from_std(l)?;
                let mut rx = rx.clone();
                let stop = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                Some(tokio::spawn(serve(
                    Arc::clone(&app),
                    ListenerSpec {
                        which: Listener::Admin,
                        tls: None,
                        http2: false,
                        max_connections: 0,
                    },
                    l,
                    stop,
                    grace,
                )))
            }
            None => None,
        };
        shutdown.await;
        // Readiness goes first: load balancers see 503 on /readyz and stop sending, then the
        // listeners close and in-flight responses get the grace period.
        app.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let drain = Duration::from_secs(app.settings.server.drain_secs);
        if !drain.is_zero() {
            tracing::info!(secs = drain.as_secs(), "draining: /readyz answers 503");
            tokio::time::sleep(drain).await;
        }
        let _ = tx.send(true);
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        Ok::<(), std::io::Error>(())
    })?;
    for t in threads {
        match t.join() {
            Ok(result) => result?,
            Err(_) => return Err(std::io::Error::other("a worker thread panicked")),
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
