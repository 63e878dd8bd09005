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
use std::net::SocketAddr;
use std::pin::Pin;
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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::routes::route;
use crate::storage::body::OriginBody;
use crate::App;

/// One access-log line per request, written when the response body is finished or dropped,
/// so it carries the bytes really sent and whether the body completed.
pub struct LoggedBody {
    inner: OriginBody,
    sent: u64,
    failed: bool,
    record: AccessRecord,
}

struct AccessRecord {
    method: http::Method,
    path: String,
    status: u16,
    peer: SocketAddr,
    range: Option<String>,
    started: Instant,
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
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                tracing::warn!(path = %this.record.path, error = %e, "response body aborted");
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
        let r = &self.record;
        let complete = !self.failed && self.inner.is_end_stream();
        tracing::info!(
            target: "access",
            method = %r.method,
            path = %r.path,
            status = r.status,
            bytes = self.sent,
            range = r.range.as_deref().unwrap_or("-"),
            complete,
            duration_ms = r.started.elapsed().as_secs_f64() * 1e3,
            peer = %r.peer,
        );
    }
}

/// Which route table a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

async fn handle(
    app: Arc<App>,
    which: Listener,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    // The path only: query strings may carry signed-URL tokens and never reach the log.
    let path = req.uri().path().to_owned();
    let range = req.headers().get(http::header::RANGE).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(100)
            .collect()
    });
    let resp = match which {
        Listener::Public => route(&app, &req, peer).await,
        Listener::Admin => crate::admin::route(&app, req, peer).await,
    };
    let (parts, inner) = resp.into_parts();
    let record = AccessRecord {
        method,
        path,
        status: parts.status.as_u16(),
        peer,
        range,
        started,
    };
    Ok(Response::from_parts(
        parts,
        LoggedBody {
            inner,
            sent: 0,
            failed: false,
            record,
        },
    ))
}

/// Serves `listener` until `shutdown` resolves, then drains for at most `grace`.
pub async fn serve(
    app: Arc<App>,
    which: Listener,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper queues up to ~400 KiB of body per connection by default before it stops asking
    // for more; for thousands of stalled viewers that is the memory bill. 64 KiB still fills
    // any socket buffer (and bounds request headers to 64 KiB).
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_buf_size(64 * 1024)
        .header_read_timeout(Duration::from_secs(
            app.settings.server.header_read_timeout_secs,
        ))
        .max_headers(app.settings.server.max_headers);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = service_fn(move |req| handle(Arc::clone(&app), which, peer, req));
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with error");
                    }
                });
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
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
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
                    serve(app, Listener::Public, listener, stop, grace).await;
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
        let admin_task = match admin {
            Some(l) => {
                let l = TcpListener::from_std(l)?;
                let mut rx = rx.clone();
                let stop = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                Some(tokio::spawn(serve(
                    Arc::clone(&app),
                    Listener::Admin,
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
