//! The connection layer: listeners, connections, their timeouts and caps, TLS, the client
//! address, and graceful shutdown. Each request is handed to the listener's tower service
//! (`routes`) by `exchange`.
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

pub mod client;
pub mod conn;
pub mod exchange;
pub mod listener;
pub mod plain;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use self::conn::{verdict, ConnState, Timeouts, TrackedIo, Verdict};
pub use self::exchange::Listener;
use self::exchange::{handle, Routes};
pub use self::listener::{already_served, bind_listeners};
use self::listener::{h2_preface, refuse_connection};
use self::plain::{Outcome, Plain};
use crate::app::App;

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
        .max_buf_size(app.settings.server.read_buffer_limit())
        .max_headers(app.settings.server.max_headers);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let routes = Routes::new(&app, spec.which);
    let limits = timeouts(&app);
    let graceful = GracefulShutdown::new();
    // Tells connections on the plain path (not hyper's) to finish their response and close.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
                    crate::observe::metrics::Metrics::count(&app.metrics.connections_closed, "over_limit");
                    tokio::spawn(refuse_connection(stream, app.settings.limits.retry_after_secs));
                    continue;
                }
                // Counted for as long as the socket lives, past a WebSocket upgrade too.
                let state = Arc::new(ConnState::holding(ConnGuard::new(&app, spec.which)));
                let io = TrackedIo::new(stream, Arc::clone(&state));
                let task = Connection {
                    refuse_h2: !spec.http2,
                    app: Arc::clone(&app),
                    routes: routes.clone(),
                    peer,
                    state,
                    builder: Arc::clone(&builder),
                    watcher: graceful.watcher(),
                    stopping: stop_rx.clone(),
                    limits,
                };
                match spec.tls.clone() {
                    None if spec.which == Listener::Public => {
                        tokio::spawn(task.run_plain(io));
                    }
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
                                    crate::observe::metrics::Metrics::count(&task.app.metrics.connections_closed, "header_timeout");
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
    let _ = stop_tx.send(true);
    // Every worker drains its own connections; the process says what shutdown does once.
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static CUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: listeners closed, in-flight responses get the grace period"
        );
    }
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("this worker's connections drained"),
        () = tokio::time::sleep(grace) => {
            if !CUT.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!("grace period over; closing remaining connections");
            }
        }
    }
}

struct Connection {
    /// Plain TCP without h2c: an HTTP/2 preface is refused (the upgrade-capable builder would
    /// otherwise detect and serve it).
    refuse_h2: bool,
    app: Arc<App>,
    routes: Routes,
    peer: SocketAddr,
    state: Arc<ConnState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    stopping: tokio::sync::watch::Receiver<bool>,
    limits: Timeouts,
}

impl Connection {
    /// Serves HTTP on `io` (hyper) beside a watchdog that closes it on idle, header or stall
    /// timeout.
    async fn run<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, peer, state, limits) = (
            Arc::clone(&self.app),
            self.peer,
            Arc::clone(&self.state),
            self.limits,
        );
        watchdog(Box::pin(self.hyper(io)), app, peer, state, limits).await;
    }

    /// Serves a plaintext connection on the plain path until it needs hyper, all under one
    /// watchdog. (Not an `async fn`: the task is then the watchdog's future alone, without a
    /// second copy of what it holds.)
    fn run_plain(self, io: TrackedIo<TcpStream>) -> impl Future<Output = ()> + Send {
        let (app, peer, state, limits) = (
            Arc::clone(&self.app),
            self.peer,
            Arc::clone(&self.state),
            self.limits,
        );
        let plain = Plain {
            app: Arc::clone(&self.app),
            routes: self.routes.clone(),
            peer: self.peer,
            state: Arc::clone(&self.state),
            stopping: self.stopping.clone(),
        };
        let work = async move {
            match plain.serve(&io).await {
                Ok(Outcome::Close) => {
                    let mut io = io;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                }
                Ok(Outcome::Handoff(read)) => {
                    if self.refuse_h2 && read.starts_with(b"PRI * HTTP/2.0") {
                        return;
                    }
                    self.boxed_hyper(io.replaying(read)).await;
                }
                Err(e) => tracing::debug!(error = %e, %peer, "connection ended with error"),
            }
        };
        // On the heap: the watchdog's own state then holds a pointer, not a second copy.
        watchdog(Box::pin(work), app, peer, state, limits)
    }

    /// [`Connection::hyper`] built on the heap: only connections handed over pay for its state.
    fn boxed_hyper<S>(self, io: S) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Box::pin(self.hyper(io))
    }

    /// hyper on `io`, with upgrades (the player's WebSocket, HTTP/1.1 only).
    fn hyper<S>(self, io: S) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            routes,
            peer,
            state,
            builder,
            watcher,
            ..
        } = self;
        let service = service_fn(move |req| {
            handle(
                Arc::clone(&app),
                routes.clone(),
                peer,
                Arc::clone(&state),
                req,
                false,
            )
        });
        async move {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "connection ended with error");
            }
        }
    }
}

/// Runs `work` (a connection) until it ends or [`verdict`] closes it.
async fn watchdog(
    mut work: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    app: Arc<App>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    limits: Timeouts,
) {
    loop {
        let wake = match verdict(state.snapshot(), crate::clock::now_ms(), limits) {
            Verdict::Close(reason) => {
                crate::observe::metrics::Metrics::count(
                    &app.metrics.connections_closed,
                    reason.as_str(),
                );
                tracing::debug!(%peer, reason = reason.as_str(), "closing connection");
                return;
            }
            Verdict::CheckAt(t) => t,
        };
        let sleep = Duration::from_millis(wake.saturating_sub(crate::clock::now_ms()));
        tokio::select! {
            // In order: the connection is polled on every wake-up, the timer rarely fires, and
            // a fair select draws a random number per poll to choose.
            biased;
            () = &mut work => return,
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Runs one worker per listener, each on its own thread and single-threaded runtime, until
/// `shutdown` resolves; then every worker drains for at most `grace`. Returns when all are done.
pub fn run_workers(
    app: Arc<App>,
    public: ListenerSpec,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    cert: Option<Arc<crate::server::tls::ReloadingCert>>,
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
                crate::observe::logbuf::buffer_this_thread(log_buffer);
                let result = rt.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    // Flush idle workers' log buffers so lines never wait long.
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(log_flush);
                        loop {
                            tick.tick().await;
                            crate::observe::logbuf::flush_this_thread();
                        }
                    });
                    let stop = async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    };
                    serve(app, spec, listener, stop, grace).await;
                    Ok(())
                });
                crate::observe::logbuf::flush_this_thread();
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
            tokio::spawn(crate::server::tls::watch(
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
    tracing::info!("shut down: every worker stopped");
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
