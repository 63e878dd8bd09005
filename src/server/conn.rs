//! Per-connection timeouts: header read (slowloris), idle keep-alive, and write stall.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its next
//! request, which makes the idle timeout no longer than the header timeout. So the connection's
//! socket is wrapped in [`TrackedIo`], which notes when bytes move, and a watchdog beside the
//! connection applies [`verdict`] (pure) to that record:
//!
//! - no request in progress and no byte of a new one: closed after `idle`;
//! - the first bytes of a request head arrived but not the whole head: closed `header` after
//!   the first byte;
//! - a write has been waiting on the client (socket buffer full) for `stall`: closed, which
//!   drops the response body and so closes its file.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock::now_ms;

/// What the watchdog knows about one connection. Shared by the socket wrapper, the request
/// handler and the response body, possibly on different tasks.
pub struct ConnState {
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    write_blocked_since: AtomicU64,
    write_blocked: AtomicBool,
    /// Response bodies not yet finished, and when one last moved (a frame handed to hyper or
    /// bytes written). HTTP/2 flow control stops a stream without any blocked socket write:
    /// this is what notices that client.
    bodies: AtomicUsize,
    last_delivery: AtomicU64,
    /// Whatever must live exactly as long as the connection's socket, upgrades included (the
    /// connection count): the socket wrapper holds this state, and a WebSocket keeps the socket.
    _lease: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnState")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl ConnState {
    /// State for a connection whose socket holds `lease` until the last owner lets go.
    pub fn holding(lease: impl std::any::Any + Send + Sync) -> ConnState {
        ConnState {
            _lease: Some(Box::new(lease)),
            ..ConnState::default()
        }
    }
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_started: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            bodies: AtomicUsize::new(0),
            last_delivery: AtomicU64::new(0),
            _lease: None,
        }
    }
}

impl ConnState {
    /// A request head was parsed and handed to the service.
    pub fn request_started(&self) {
        self.head_started.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Its response body was finished or dropped.
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    pub(super) fn read_some(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A response body starts streaming.
    pub fn body_started(&self) {
        self.last_delivery.store(now_ms(), Ordering::Relaxed);
        self.bodies.fetch_add(1, Ordering::AcqRel);
    }

    /// A body frame was handed to the connection.
    pub fn body_frame(&self) {
        self.last_delivery.store(now_ms(), Ordering::Relaxed);
    }

    pub fn body_finished(&self) {
        self.bodies.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn write_progress(&self) {
        if self.bodies.load(Ordering::Relaxed) > 0 {
            self.last_delivery.store(now_ms(), Ordering::Relaxed);
        }
        if self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked.store(false, Ordering::Relaxed);
        }
    }

    pub(super) fn write_pending(&self) {
        if !self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked_since.store(now_ms(), Ordering::Relaxed);
            self.write_blocked.store(true, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_flight: self.in_flight.load(Ordering::Acquire),
            idle_since: self.idle_since.load(Ordering::Relaxed),
            head_started: self.head_started.load(Ordering::Relaxed),
            write_blocked_since: self
                .write_blocked
                .load(Ordering::Relaxed)
                .then(|| self.write_blocked_since.load(Ordering::Relaxed)),
            delivering_since: (self.bodies.load(Ordering::Acquire) > 0)
                .then(|| self.last_delivery.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub in_flight: usize,
    pub idle_since: u64,
    /// When the first byte of a request head arrived (0: none pending).
    pub head_started: u64,
    /// Since when a write has been waiting for the client to read.
    pub write_blocked_since: Option<u64>,
    /// With a response body in progress: when it last moved.
    pub delivering_since: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub stall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection; look again at this time (ms, `now_ms` clock).
    CheckAt(u64),
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Idle,
    HeaderTimeout,
    WriteStall,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::WriteStall => "write_stall",
        }
    }
}

/// Whether to close the connection now, and if not, when to look again.
pub fn verdict(s: Snapshot, now: u64, t: Timeouts) -> Verdict {
    let ms = |d: Duration| d.as_millis() as u64;
    // Deadlines can be missed by at most this much; it bounds wakeups per connection too.
    let mut next = now + ms(t.header.min(t.idle).min(t.stall) / 4).max(250);
    for since in [s.write_blocked_since, s.delivering_since]
        .into_iter()
        .flatten()
    {
        let due = since + ms(t.stall);
        if now >= due {
            return Verdict::Close(CloseReason::WriteStall);
        }
        next = next.min(due);
    }
    if s.in_flight == 0 {
        let (due, reason) = if s.head_started != 0 {
            (s.head_started + ms(t.header), CloseReason::HeaderTimeout)
        } else {
            (s.idle_since + ms(t.idle), CloseReason::Idle)
        };
        if now >= due {
            return Verdict::Close(reason);
        }
        next = next.min(due);
    }
    Verdict::CheckAt(next)
}

/// A socket that reports reads and write progress to its [`ConnState`].
pub struct TrackedIo<S> {
    inner: S,
    state: std::sync::Arc<ConnState>,
    /// Bytes already taken from the socket that its next reads give again (the plain path
    /// hands a connection to hyper with the head it read).
    replay: bytes::Bytes,
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, state: std::sync::Arc<ConnState>) -> Self {
        TrackedIo {
            inner,
            state,
            replay: bytes::Bytes::new(),
        }
    }

    /// This socket with `read` given again before anything new from the peer.
    pub fn replaying(mut self, read: Vec<u8>) -> Self {
        self.replay = read.into();
        self
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            bytes::Buf::advance(&mut self.replay, n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> TrackedIo<S> {
    fn note(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => self.state.write_pending(),
            Poll::Ready(Ok(n)) if *n > 0 => self.state.write_progress(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        stall: Duration::from_secs(30),
    };

    fn snap(
        in_flight: usize,
        idle_since: u64,
        head_started: u64,
        blocked: Option<u64>,
    ) -> Snapshot {
        Snapshot {
            in_flight,
            idle_since,
            head_started,
            write_blocked_since: blocked,
            delivering_since: None,
        }
    }

    #[test]
    fn idle_connection_closes_after_idle_timeout() {
        let s = snap(0, 1_000, 0, None);
        assert!(matches!(verdict(s, 60_999, T), Verdict::CheckAt(_)));
        assert_eq!(verdict(s, 61_000, T), Verdict::Close(CloseReason::Idle));
    }

    #[test]
    fn partial_head_closes_after_header_timeout_not_idle() {
        let s = snap(0, 1_000, 5_000, None);
        assert!(matches!(verdict(s, 14_999, T), Verdict::CheckAt(t) if t <= 15_000));
        assert_eq!(
            verdict(s, 15_000, T),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn busy_connection_is_never_idle() {
        let s = snap(1, 1_000, 0, None);
        assert!(matches!(verdict(s, 10_000_000, T), Verdict::CheckAt(_)));
    }

    #[test]
    fn stalled_writer_closes_even_mid_response() {
        let s = snap(1, 1_000, 0, Some(100_000));
        assert!(matches!(verdict(s, 129_999, T), Verdict::CheckAt(t) if t <= 130_000));
        assert_eq!(
            verdict(s, 130_000, T),
            Verdict::Close(CloseReason::WriteStall)
        );
    }

    #[test]
    fn body_that_stops_moving_is_a_stall_without_a_blocked_write() {
        // HTTP/2 flow control: nothing pending on the socket, but the body has not moved.
        let s = Snapshot {
            delivering_since: Some(100_000),
            ..snap(1, 1_000, 0, None)
        };
        assert!(matches!(verdict(s, 129_999, T), Verdict::CheckAt(t) if t <= 130_000));
        assert_eq!(
            verdict(s, 130_000, T),
            Verdict::Close(CloseReason::WriteStall)
        );
    }

    #[test]
    fn next_check_is_bounded() {
        let s = snap(1, 1_000, 0, None);
        // min(timeouts)/4 = 2.5 s
        assert_eq!(verdict(s, 50_000, T), Verdict::CheckAt(52_500));
    }

    #[test]
    fn state_transitions() {
        let c = ConnState::default();
        c.read_some();
        assert_ne!(c.snapshot().head_started, 0, "first bytes of a head");
        c.request_started();
        assert_eq!(c.snapshot().head_started, 0);
        c.read_some(); // request body bytes: not a new head
        assert_eq!(c.snapshot().head_started, 0);
        c.write_pending();
        assert!(c.snapshot().write_blocked_since.is_some());
        c.write_progress();
        assert!(c.snapshot().write_blocked_since.is_none());
        c.body_started();
        let since = c.snapshot().delivering_since.unwrap();
        // The clock is coarse (a tick, 4 ms here, and a busy machine may update it late): wait
        // until it has moved on, however long that takes, rather than for a fixed time.
        let waited = std::time::Instant::now();
        while now_ms() <= since {
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "now_ms never moved"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        c.body_frame();
        assert!(
            c.snapshot().delivering_since.unwrap() > since,
            "a frame is progress"
        );
        c.body_finished();
        assert!(c.snapshot().delivering_since.is_none());
        c.request_finished();
        assert_eq!(c.snapshot().in_flight, 0);
    }
}
