//! Plaintext HTTP/1.x for the requests that make up nearly all of an origin's traffic (`GET` and
//! `HEAD` without a body), without hyper; everything else on the connection goes to hyper.
//!
//! Why: hyper keeps polling a response body while its write queue has room, so every stalled
//! viewer holds a queued chunk plus hyper's buffers (hundreds of KiB each, hundreds of MiB for a
//! few thousand slow mobile viewers), and an idle keep-alive connection keeps its read and
//! write buffers. Here a connection holds no buffer it is not using:
//!
//! - between requests it waits for readability with nothing allocated; a head is read through a
//!   per-thread scratch buffer and kept only while incomplete (or pipelined);
//! - a file body is copied through a per-thread buffer straight into the socket, and only the
//!   bytes the socket took count as sent: what it refused is read again when it has room (from
//!   the page cache), so a stalled viewer holds no body bytes at all. Every read is checked
//!   against the file's identity before its bytes are written, as on the hyper path, so an
//!   in-place rewrite still ends the response short instead of splicing two versions.
//!
//! A request this path does not take (another method, a body, `Expect`, an upgrade, HTTP/2's
//! preface, an oversized or malformed head) hands the connection to hyper with the bytes read so
//! far, so hyper's behaviour for everything unusual is unchanged. TLS and HTTP/2 stay on hyper.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::conn::{ConnState, TrackedIo};
use super::exchange::{handle, LoggedBody, Routes};
use crate::app::App;
use crate::http::response::{push_field, WireHead};
use crate::storage::body::OriginBody;
use crate::storage::local::read::Fill;

/// Headers parsed on the stack; a head with more goes to hyper (which applies the limit).
const MAX_PARSED_HEADERS: usize = 128;
/// Per-thread scratch for reading heads.
const READ_SCRATCH: usize = 8 * 1024;
/// Smallest read for a body chunk, however little a slow socket took last time.
const MIN_CHUNK: usize = 16 * 1024;
/// A body rest larger than this is read only as far as the socket has room for it.
const ASK_ROOM_ABOVE: u64 = 64 * 1024;
/// A response yields to the other connections of its worker after this many bytes (nginx's
/// sendfile_max_chunk), so one fast client cannot hold the thread.
const YIELD_EVERY: u64 = 1024 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SCRATCH]);
    static CHUNK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How the plain path left the connection.
pub enum Outcome {
    /// Done: the caller shuts the socket down.
    Close,
    /// A request for hyper: these bytes were read and must be replayed to it first.
    Handoff(Vec<u8>),
}

/// What one connection's plain path needs.
pub struct Plain {
    pub app: Arc<App>,
    pub routes: Routes,
    pub peer: SocketAddr,
    pub state: Arc<ConnState>,
    pub stopping: watch::Receiver<bool>,
}

/// A parsed head this path serves.
#[derive(Debug)]
pub struct Simple {
    pub request: Request<http_body_util::Empty<Bytes>>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub keep_alive: bool,
}

#[derive(Debug)]
pub enum Parsed {
    Partial,
    Simple(Box<Simple>),
    /// Not for this path (valid or not): hyper decides.
    Other,
}

/// Parses a request head at the start of `buf` (pure). The request's target and field values
/// are slices of `buf`, not copies: one shared buffer per request instead of an allocation per
/// field.
pub fn parse(buf: &Bytes, max_headers: usize) -> Parsed {
    // Left uninitialized: zeroing room for 128 fields cost more than parsing a short head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_PARSED_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Parsed::Other,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Other;
    };
    let Ok(uri) = http::Uri::from_maybe_shared(buf.slice_ref(path.as_bytes())) else {
        return Parsed::Other;
    };
    if req.headers.len() > max_headers {
        return Parsed::Other;
    }
    // A map an earlier request or response on this thread no longer needs, when there is one.
    let mut map = crate::http::response::spare_headers();
    let (mut close, mut keep) = (false, false);
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_maybe_shared(buf.slice_ref(h.value)),
        ) else {
            return Parsed::Other;
        };
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
        {
            return Parsed::Other;
        }
        if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        map.append(name, value);
    }
    let mut request = Request::new(http_body_util::Empty::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    let keep_alive = !close && (version == Version::HTTP_11 || keep);
    Parsed::Simple(Box::new(Simple {
        request,
        len,
        keep_alive,
    }))
}

/// Encoded heads already sent, cleared, kept on this thread for the next response's head (a
/// `Vec` per response was one allocation each).
const SPARE_HEADS: usize = 16;
/// A head grown past this (a very long header field) is freed, not kept.
const SPARE_HEAD_BYTES: usize = 4096;

thread_local! {
    static HEADS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn spare_head() -> Vec<u8> {
    HEADS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(512))
}

/// Hands a sent head back for the next response on this thread.
fn recycle_head(mut head: Vec<u8>) {
    if head.capacity() > SPARE_HEAD_BYTES {
        return;
    }
    head.clear();
    HEADS.with_borrow_mut(|heads| {
        if heads.len() < SPARE_HEADS {
            heads.push(head);
        }
    });
}

/// Whether a response with this status may carry a body (RFC 9110 §6.4.1).
fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The response head as sent (pure). `body_len` is the exact body length when known; without
/// one the body is delimited by closing the connection, so `keep_alive` must then be false.
/// `wire`: the handler's head in wire form (with `Date` and any `Content-Length`), then
/// followed by the fields of `parts` added after it.
pub fn encode_head(
    parts: &http::response::Parts,
    wire: Option<&WireHead>,
    version: Version,
    body_len: Option<u64>,
    head_request: bool,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = spare_head();
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(wire) = wire {
        wire.write_fields(&mut out);
    }
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            continue;
        }
        push_field(&mut out, name, value);
    }
    if wire.is_none() && !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = body_len.filter(|_| wire.is_none()) {
        if !head_request
            && !bodiless(parts.status)
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {len}\r\n");
        }
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The head to send for `response`, its body, whether the connection stays open after it, and
/// whether the body is sent at all.
fn prepare(
    response: http::Response<LoggedBody>,
    version: Version,
    head_request: bool,
    keep_alive: bool,
) -> (Vec<u8>, LoggedBody, bool, bool) {
    let (parts, mut body) = response.into_parts();
    let wire = body.take_wire();
    let body_len = http_body::Body::size_hint(&body).exact();
    let keep_alive = keep_alive
        && body_len.is_some()
        && !parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let head = encode_head(
        &parts,
        wire.as_ref(),
        version,
        body_len,
        head_request,
        keep_alive,
    );
    let send_body = !head_request && !bodiless(parts.status);
    crate::http::response::recycle_headers(parts.headers);
    (head, body, keep_alive, send_body)
}

impl Plain {
    /// Serves requests on `io` until the client closes, asks to close, sends something for
    /// hyper, or the server stops.
    pub async fn serve(mut self, io: &TrackedIo<TcpStream>) -> io::Result<Outcome> {
        let sock = io.get_ref();
        // Bytes of a head not yet complete, or of pipelined requests: empty (no allocation)
        // while the connection is idle.
        let mut pending: Vec<u8> = Vec::new();
        // Whether the last read filled the scratch buffer, leaving the read readiness set.
        let mut filled = false;
        loop {
            let simple = loop {
                if !pending.is_empty() {
                    // Parsed from a shared buffer the request's fields can point into; the
                    // bytes go back into `pending` (without a copy) when they are not a
                    // request for this path.
                    let buf = Bytes::from(std::mem::take(&mut pending));
                    match parse(&buf, self.app.settings.server.max_headers) {
                        Parsed::Simple(s) => {
                            // Pipelined requests: copied out, the head's buffer stays with
                            // the request.
                            if buf.len() > s.len {
                                pending = buf[s.len..].to_vec();
                            }
                            break s;
                        }
                        Parsed::Other => return Ok(Outcome::Handoff(Vec::from(buf))),
                        Parsed::Partial => {
                            pending = Vec::from(buf);
                            if pending.len() > self.app.settings.server.read_buffer_limit() {
                                return Ok(Outcome::Handoff(pending));
                            }
                        }
                    }
                }
                if *self.stopping.borrow() && pending.is_empty() {
                    return Ok(Outcome::Close);
                }
                tokio::select! {
                    // In order: a fair select draws a random number on every poll.
                    biased;
                    ready = sock.readable() => ready?,
                    _ = self.stopping.changed(), if pending.is_empty() => return Ok(Outcome::Close),
                }
                let read = SCRATCH.with_borrow_mut(|scratch| {
                    let n = sock.try_read(scratch)?;
                    pending.extend_from_slice(&scratch[..n]);
                    if n > 0 && n < scratch.len() {
                        // A short read took all the socket had, and anything arriving later
                        // raises a new edge: readiness is cleared now, as nginx does, instead
                        // of by a read that finds nothing after the answer (a third of the
                        // requests under load paid that system call). A peer's FIN stays
                        // reported (tokio never clears READ_CLOSED).
                        let _ = sock.try_io(tokio::io::Interest::READABLE, || {
                            Err::<(), _>(io::ErrorKind::WouldBlock.into())
                        });
                    }
                    Ok::<_, io::Error>(n)
                });
                match read {
                    Ok(0) => return Ok(Outcome::Close),
                    Ok(n) => {
                        filled = n == READ_SCRATCH;
                        self.state.read_some();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            };
            // Boxed: a connection between requests (most of them, most of the time) then holds
            // only the small state above, not room for a request in progress.
            if !self.boxed_exchange(sock, *simple).await? {
                return Ok(Outcome::Close);
            }
            // One request per turn, as nginx's event loop does: a client that sends its next
            // request as soon as it has the answer would otherwise keep the worker (socket
            // readiness and try_read use no scheduling budget), and the other connections of
            // this worker would wait for it. After a short read that cleared the readiness,
            // the next request waits for the event loop's next turn anyway, so only bytes
            // already here (pipelined) or a read that filled the buffer need the yield: it
            // cost every request another poll of its task.
            if !pending.is_empty() || filled {
                tokio::task::yield_now().await;
            }
        }
    }

    /// One request's exchange, built on the heap (a future built inside an `async fn` and then
    /// boxed still takes room in its state, and so does every local of an `async fn` until
    /// its scope ends: hence the routing future is made here and the locals below are scoped).
    fn boxed_exchange<'a>(
        &'a self,
        sock: &'a TcpStream,
        simple: Simple,
    ) -> Pin<Box<dyn Future<Output = io::Result<bool>> + Send + 'a>> {
        let Simple {
            request,
            keep_alive,
            ..
        } = simple;
        let version = request.version();
        let head_request = request.method() == Method::HEAD;
        let keep_alive = keep_alive && !*self.stopping.borrow();
        let routed = Box::pin(handle(
            Arc::clone(&self.app),
            self.routes.clone(),
            self.peer,
            Arc::clone(&self.state),
            request,
            true,
        ));
        Box::pin(self.exchange(sock, routed, version, head_request, keep_alive))
    }

    /// Answers one request; whether the connection stays open.
    async fn exchange(
        &self,
        sock: &TcpStream,
        routed: Pin<
            Box<dyn Future<Output = Result<http::Response<LoggedBody>, Infallible>> + Send>,
        >,
        version: Version,
        head_request: bool,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (head, mut body, keep_alive, send_body) = {
            let response = match routed.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            prepare(response, version, head_request, keep_alive)
        };
        self.write(sock, &head, if send_body { Some(&mut body) } else { None })
            .await?;
        recycle_head(head);
        Ok(keep_alive)
    }

    /// Writes `head` and then the body, taking for the body only what the socket accepts.
    async fn write(
        &self,
        sock: &TcpStream,
        head: &[u8],
        mut body: Option<&mut LoggedBody>,
    ) -> io::Result<()> {
        // Sent from the caller's Vec itself: a `Bytes` made from it would cost another
        // allocation.
        let mut head = head;
        // Bytes of a blocking (cold) read not yet taken by the socket.
        let mut cold = Bytes::new();
        let streaming = &self.app.settings.streaming;
        let mut pace = Pace::new(streaming.read_size);
        // File bytes go by `sendfile` when configured, and always from a sealed in-memory copy
        // (which cannot change, so it needs no check before its bytes are sent).
        let zero_copy = streaming.sendfile
            || matches!(
                body.as_deref_mut().map(LoggedBody::origin_mut),
                Some(OriginBody::File(f)) if f.is_sealed_copy()
            );
        loop {
            // Read no more file bytes than the socket can take now: what it refused would be
            // read again (a bulk download would copy many bytes twice). A rest of up to
            // ASK_ROOM_ABOVE is offered without the two system calls that ask: at worst what
            // the socket refused is read once more, and a small object (a segment, a
            // thumbnail) is usually taken whole. At least a little is always offered: only a
            // refused write makes the kernel report room again (it sets SOCK_NOSPACE), so a
            // wait without one would hang. `sendfile` reads nothing the socket refuses, so it
            // need not ask.
            let large = !zero_copy
                && body
                    .as_deref()
                    .is_some_and(|b| http_body::Body::size_hint(b).lower() > ASK_ROOM_ABOVE);
            let take = match large.then(|| socket_room(sock)).flatten() {
                Some(room) => pace
                    .want
                    .min(room.saturating_sub(head.len()))
                    .max(MIN_OFFER),
                None => pace.want,
            };
            // A remote store's chunk: wait for the next one only once the last is all sent.
            if cold.is_empty() {
                if let Some(OriginBody::Chunks(c)) = body.as_deref_mut().map(LoggedBody::origin_mut)
                {
                    match c.next_chunk().await {
                        Some(Ok(chunk)) => cold = chunk,
                        Some(Err(e)) => {
                            if let Some(b) = body.as_deref_mut() {
                                b.abort(&e);
                            }
                            return Err(e);
                        }
                        None => {}
                    }
                }
            }
            if zero_copy && head.is_empty() && cold.is_empty() {
                if let Some(b) = body.as_deref_mut() {
                    if let Some(sent) = send_file(sock, b, take)? {
                        match sent {
                            Sent::Some(n, full) => {
                                self.state.write_progress();
                                if full {
                                    pace.took_all(n).await;
                                    continue;
                                }
                                pace.took_some(n);
                            }
                            Sent::Blocked => {}
                        }
                        self.state.write_pending();
                        wait_writable(sock).await?;
                        continue;
                    }
                }
            }
            let step = CHUNK.with_borrow_mut(|chunk| -> io::Result<Step> {
                if chunk.len() < streaming.read_size {
                    chunk.resize(streaming.read_size, 0);
                }
                // Whether the head goes alone with file bytes to follow by `sendfile`.
                let mut file_follows = false;
                let data: &[u8] = match body.as_deref_mut().map(LoggedBody::origin_mut) {
                    None | Some(OriginBody::Empty) | Some(OriginBody::Bytes(None)) => &[],
                    Some(OriginBody::Bytes(Some(b))) => &b[..],
                    Some(OriginBody::File(_)) if !cold.is_empty() => &cold[..],
                    Some(OriginBody::Chunks(_)) => &cold[..],
                    // With sendfile, the head goes alone; the file bytes follow by sendfile.
                    Some(OriginBody::File(f))
                        if zero_copy
                            && !head.is_empty()
                            && f.next_cached_file_bytes(take).is_some() =>
                    {
                        file_follows = true;
                        &[]
                    }
                    Some(OriginBody::File(f)) => match f.fill_cached(&mut chunk[..take]) {
                        Ok(Fill::Bytes(n)) => &chunk[..n],
                        Ok(Fill::End) => &[],
                        Ok(Fill::Cold) if head.is_empty() => return Ok(Step::Cold),
                        // Send the head first; the disk read comes after.
                        Ok(Fill::Cold) => &[],
                        Err(e) => return Err(e),
                    },
                };
                if head.is_empty() && data.is_empty() {
                    return Ok(Step::Done);
                }
                let slices = [io::IoSlice::new(head), io::IoSlice::new(data)];
                let offered = head.len() + data.len();
                let sent = if file_follows {
                    // Held back (MSG_MORE) to leave in one segment with the first file bytes,
                    // as nginx's tcp_nopush does: alone, it cost the client a wake-up of its
                    // own, and both sides a packet, per response.
                    sock.try_io(tokio::io::Interest::WRITABLE, || {
                        rustix::net::send(sock, head, rustix::net::SendFlags::MORE)
                            .map_err(io::Error::from)
                    })
                } else {
                    sock.try_write_vectored(&slices)
                };
                let n = match sent {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Ok(Step::Gone(e)),
                };
                Ok(Step::Wrote {
                    head: n.min(head.len()),
                    body: n.saturating_sub(head.len()),
                    full: n == offered,
                    offered_body: data.len(),
                })
            });
            let step = match step {
                Ok(step) => step,
                Err(e) => {
                    // Storage failed mid-body (truncated, rewritten): cut the connection.
                    if let Some(b) = body.as_deref_mut() {
                        b.abort(&e);
                    }
                    return Err(e);
                }
            };
            match step {
                Step::Done => return Ok(()),
                Step::Gone(e) => return Err(e),
                Step::Cold => {
                    let Some(OriginBody::File(f)) = body.as_deref_mut().map(LoggedBody::origin_mut)
                    else {
                        unreachable!("only file bodies go cold")
                    };
                    match tokio::task::spawn_blocking(f.read_blocking(pace.want)).await {
                        Ok(Ok(bytes)) => cold = bytes,
                        Ok(Err(e)) => {
                            if let Some(b) = body.as_deref_mut() {
                                b.abort(&e);
                            }
                            return Err(e);
                        }
                        Err(e) => return Err(io::Error::other(e)),
                    }
                }
                Step::Wrote {
                    head: h,
                    body: n,
                    full,
                    offered_body,
                } => {
                    head.advance(h);
                    if n > 0 {
                        if let Some(b) = body.as_deref_mut() {
                            match b.origin_mut() {
                                OriginBody::Bytes(Some(bytes)) => {
                                    bytes.advance(n);
                                    if bytes.is_empty() {
                                        *b.origin_mut() = OriginBody::Bytes(None);
                                    }
                                }
                                OriginBody::File(f) => {
                                    f.advance(n);
                                    if !cold.is_empty() {
                                        cold.advance(n);
                                    }
                                }
                                OriginBody::Chunks(_) => cold.advance(n),
                                _ => {}
                            }
                            b.delivered(n);
                        }
                    }
                    if h + n > 0 {
                        self.state.write_progress();
                    }
                    if full {
                        pace.took_all(n).await;
                        continue;
                    }
                    if offered_body > 0 && n > 0 {
                        pace.took_some(n);
                    }
                    self.state.write_pending();
                    wait_writable(sock).await?;
                }
            }
        }
    }
}

/// Waits until the socket reports room again. A short write leaves tokio's readiness set, so
/// it is cleared first.
async fn wait_writable(sock: &TcpStream) -> io::Result<()> {
    let _ = sock.try_io(tokio::io::Interest::WRITABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
    sock.writable().await
}

/// The least a file body offers the socket, however full it looks.
const MIN_OFFER: usize = 4096;

/// Payload bytes the socket's send buffer can take now, roughly: its size less what is queued
/// (`SIOCOUTQ`), less a margin for the kernel's per-packet overhead, which the buffer size
/// counts too. `None` when the kernel does not say.
fn socket_room(sock: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one c_int through the pointer, which is valid for
    // the call; the descriptor is owned by `sock` and open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } != 0 {
        return None;
    }
    let size = socket2::SockRef::from(sock).send_buffer_size().ok()?;
    let free = size.saturating_sub(usize::try_from(queued).ok()?);
    Some(free - free / 8)
}

/// How much of a file body to offer next, and when to let the worker's other connections run.
struct Pace {
    want: usize,
    max: usize,
    since_yield: u64,
}

impl Pace {
    fn new(max: usize) -> Pace {
        Pace {
            want: max,
            max,
            since_yield: 0,
        }
    }

    /// The socket took all `n` bytes offered: offer more next time, and yield now and then.
    async fn took_all(&mut self, n: usize) {
        self.want = (self.want * 2).min(self.max);
        self.since_yield += n as u64;
        if self.since_yield >= YIELD_EVERY {
            self.since_yield = 0;
            tokio::task::yield_now().await;
        }
    }

    /// The socket took only `n`: it is full; next time offer about what it took this time.
    fn took_some(&mut self, n: usize) {
        self.want = n.clamp(MIN_CHUNK, self.max);
        self.since_yield += n as u64;
    }
}

enum Sent {
    /// This many bytes; whether that was all that was offered.
    Some(usize, bool),
    /// The socket took nothing.
    Blocked,
}

/// One `sendfile` of at most `max` of the body's next file bytes, if they are file bytes in the
/// page cache (`None`: framing or cold, which the copying path handles). The file is checked
/// unchanged after the call; a change ends the response short (the bytes of this one call may
/// already be of the new version: the one thing copying guarantees and this does not).
fn send_file(sock: &TcpStream, body: &mut LoggedBody, max: usize) -> io::Result<Option<Sent>> {
    let OriginBody::File(f) = body.origin_mut() else {
        return Ok(None);
    };
    let Some((file, offset, len)) = f.next_cached_file_bytes(max) else {
        return Ok(None);
    };
    let mut at = offset;
    let sent = sock.try_io(tokio::io::Interest::WRITABLE, || {
        rustix::fs::sendfile(sock, file, Some(&mut at), len).map_err(io::Error::from)
    });
    let n = match sent {
        Ok(0) => {
            let e = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file truncated while streaming",
            );
            body.abort(&e);
            return Err(e);
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(Sent::Blocked)),
        Err(e) => return Err(e),
    };
    if let Err(e) = f.check_unchanged() {
        body.abort(&e);
        return Err(e);
    }
    f.advance(n);
    body.delivered(n);
    Ok(Some(Sent::Some(n, n == len)))
}

enum Step {
    Wrote {
        head: usize,
        body: usize,
        full: bool,
        offered_body: usize,
    },
    Cold,
    Done,
    Gone(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(raw: &[u8]) -> Simple {
        match parse(&Bytes::copy_from_slice(raw), 100) {
            Parsed::Simple(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_gets_and_heads_are_taken() {
        let raw = b"GET /video/a.mp4?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\nGET /";
        let s = simple(raw);
        assert_eq!(s.len, raw.len() - 5);
        assert_eq!(s.request.uri().path(), "/video/a.mp4");
        assert_eq!(s.request.uri().query(), Some("x=1"));
        assert_eq!(s.request.headers()["range"], "bytes=0-1");
        assert!(s.keep_alive);
        let s = simple(b"HEAD / HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert_eq!(s.request.method(), Method::HEAD);
        assert!(!s.keep_alive);
    }

    /// A request's fields are its own even when its map was another head's before.
    #[test]
    fn a_reused_map_holds_only_the_new_requests_fields() {
        let old = simple(b"GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nCookie: c=1\r\n\r\n");
        crate::http::response::recycle_headers(old.request.into_parts().0.headers);
        let s = simple(b"GET /b HTTP/1.1\r\nHost: y\r\n\r\n");
        let fields: Vec<_> = (s.request.headers().iter())
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(fields, [("host", "y")]);
    }

    #[test]
    fn http_1_0_keeps_alive_only_when_asked() {
        assert!(!simple(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        let s = simple(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(s.keep_alive);
        assert_eq!(s.request.version(), Version::HTTP_10);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            &b"POST /admin HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(&Bytes::copy_from_slice(raw), 100), Parsed::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let many: String = (0..20).map(|i| format!("h{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let raw = Bytes::from(raw);
        assert!(matches!(parse(&raw, 10), Parsed::Other));
        assert!(matches!(parse(&raw, 100), Parsed::Simple(_)));
        assert!(matches!(
            parse(&Bytes::from_static(b"GET / HTTP/1.1\r\nHost:"), 100),
            Parsed::Partial
        ));
    }

    fn parts(
        status: StatusCode,
        headers: &[(&'static str, &'static str)],
    ) -> http::response::Parts {
        let mut r = http::Response::new(());
        *r.status_mut() = status;
        for (k, v) in headers {
            r.headers_mut().insert(*k, HeaderValue::from_static(v));
        }
        r.into_parts().0
    }

    /// A head handed back is reused empty: the next head is exactly what a fresh one would be.
    #[test]
    fn recycled_heads_start_empty() {
        let p = parts(StatusCode::OK, &[("etag", "\"x\"")]);
        let fresh = encode_head(&p, None, Version::HTTP_11, Some(10), false, true);
        let mut long = encode_head(&p, None, Version::HTTP_10, Some(123_456), false, true);
        long.extend_from_slice(b"left over");
        recycle_head(long);
        let next = encode_head(&p, None, Version::HTTP_11, Some(10), false, true);
        // The Date field may have moved on by a second between the two.
        let without_date = |h: &[u8]| {
            let h = String::from_utf8(h.to_vec()).unwrap();
            h.lines()
                .filter(|l| !l.starts_with("date: "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_date(&next), without_date(&fresh));
    }

    #[test]
    fn heads_carry_length_date_and_connection() {
        let p = parts(StatusCode::PARTIAL_CONTENT, &[("etag", "\"x\"")]);
        let h = String::from_utf8(encode_head(
            &p,
            None,
            Version::HTTP_11,
            Some(10),
            false,
            true,
        ))
        .unwrap();
        assert!(
            h.starts_with("HTTP/1.1 206 Partial Content\r\netag: \"x\"\r\ndate: "),
            "{h}"
        );
        assert!(h.ends_with("content-length: 10\r\n\r\n"), "{h}");
        let h = String::from_utf8(encode_head(
            &p,
            None,
            Version::HTTP_10,
            Some(10),
            false,
            true,
        ))
        .unwrap();
        assert!(h.starts_with("HTTP/1.0 206"), "{h}");
        assert!(h.ends_with("connection: keep-alive\r\n\r\n"), "{h}");
        let h =
            String::from_utf8(encode_head(&p, None, Version::HTTP_11, None, false, false)).unwrap();
        assert!(!h.contains("content-length"), "{h}");
        assert!(h.ends_with("connection: close\r\n\r\n"), "{h}");
    }

    /// A head sent in wire form is byte for byte the head encoded from the map the handler
    /// would have given instead, for every kept shape, with fields added after it (CORS),
    /// for GET and HEAD, HTTP/1.1 and 1.0, kept alive or not.
    #[test]
    fn wire_heads_are_the_heads_encoded_from_maps() {
        use crate::http::etag::EntityTag;
        use crate::http::range::ByteRange;
        use crate::http::response::{build_head, build_wire_head, Decision, Resource};
        use std::time::{Duration, UNIX_EPOCH};

        let tag = EntityTag::parse("\"abc\"").unwrap();
        let res = Resource {
            len: 1000,
            etag: Some(&tag),
            last_modified: UNIX_EPOCH + Duration::from_secs(1_600_000_000),
            content_type: "video/mp4",
        };
        let policy = vec![
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            ),
            (
                HeaderName::from_static("cache-tag"),
                HeaderValue::from_static("video,file:a.mp4"),
            ),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let decisions = [
            Decision::Full,
            Decision::NotModified,
            Decision::Partial(ByteRange { start: 0, end: 9 }),
            Decision::Partial(ByteRange {
                start: 10,
                end: 999,
            }),
        ];
        let mut compared = 0;
        for decision in &decisions {
            // The first build keeps the head; the wire form is a hit from then on.
            let _ = build_head(decision, &res, &policy, now);
            let (status, map) = build_head(decision, &res, &policy, now);
            let (wire_status, wire) = build_wire_head(decision, &res, &policy, now).unwrap();
            assert_eq!(status, wire_status);
            let body_len = match decision {
                Decision::Full => Some(1000),
                Decision::Partial(r) => Some(r.len()),
                _ => Some(0),
            };
            for cors in [false, true] {
                let mut from_map = http::Response::new(());
                *from_map.status_mut() = status;
                *from_map.headers_mut() = map.clone();
                let mut from_wire = http::Response::new(());
                *from_wire.status_mut() = status;
                if cors {
                    for r in [&mut from_map, &mut from_wire] {
                        r.headers_mut()
                            .append(header::VARY, HeaderValue::from_static("Origin"));
                        r.headers_mut().insert(
                            header::ACCESS_CONTROL_ALLOW_ORIGIN,
                            HeaderValue::from_static("*"),
                        );
                    }
                }
                let (from_map, from_wire) = (from_map.into_parts().0, from_wire.into_parts().0);
                for version in [Version::HTTP_11, Version::HTTP_10] {
                    for head_request in [false, true] {
                        for keep_alive in [true, false] {
                            let a = encode_head(
                                &from_map,
                                None,
                                version,
                                body_len,
                                head_request,
                                keep_alive,
                            );
                            let b = encode_head(
                                &from_wire,
                                Some(&wire),
                                version,
                                body_len,
                                head_request,
                                keep_alive,
                            );
                            assert_eq!(
                                String::from_utf8(a).unwrap(),
                                String::from_utf8(b).unwrap(),
                                "{decision:?} cors={cors} {version:?} head={head_request}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 4 * 2 * 2 * 2 * 2);
        // Not kept: another second, or a decision whose head is never kept.
        let later = now + Duration::from_secs(1);
        assert!(build_wire_head(&Decision::Full, &res, &policy, later).is_none());
        assert!(build_wire_head(&Decision::PreconditionFailed, &res, &policy, now).is_none());
    }

    #[test]
    fn bodiless_answers_get_no_added_length() {
        let p = parts(StatusCode::NOT_MODIFIED, &[("date", "x")]);
        let h = String::from_utf8(encode_head(
            &p,
            None,
            Version::HTTP_11,
            Some(0),
            false,
            true,
        ))
        .unwrap();
        assert_eq!(h, "HTTP/1.1 304 Not Modified\r\ndate: x\r\n\r\n");
        // HEAD: the service's own Content-Length stands, none is invented.
        let p = parts(StatusCode::OK, &[("date", "x"), ("content-length", "99")]);
        let h = String::from_utf8(encode_head(&p, None, Version::HTTP_11, Some(0), true, true))
            .unwrap();
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 99\r\n\r\n"
        );
        let p = parts(StatusCode::OK, &[("date", "x")]);
        let h = String::from_utf8(encode_head(&p, None, Version::HTTP_11, Some(0), true, true))
            .unwrap();
        assert_eq!(h, "HTTP/1.1 200 OK\r\ndate: x\r\n\r\n");
    }
}
