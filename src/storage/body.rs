//! Response bodies: a small fixed body, a stream of segments (multipart framing and file
//! bytes) read from a local file, or chunks a remote backend's reader hands over one at a time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

pub use super::local::read::FileStream;
pub use super::segment::Segment;

/// The body of any response this server sends.
pub enum OriginBody {
    Empty,
    Bytes(Option<Bytes>),
    File(FileStream),
    Chunks(ChunkStream),
}

/// A body whose bytes arrive from a reader task through a one-chunk channel: the reader waits
/// until the previous chunk is taken, so a viewer that stops reading stops the reader too.
pub struct ChunkStream {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    /// Bytes still owed; the body ends in an error if the reader stops before.
    remaining: u64,
    _guard: Option<Box<dyn std::any::Any + Send>>,
}

impl ChunkStream {
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>, len: u64) -> Self {
        ChunkStream {
            rx,
            remaining: len,
            _guard: None,
        }
    }

    /// The next chunk, waiting for the reader; `None` at the end. A reader that stops early
    /// or sends more than owed is an error (the response ends short, never padded).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) if b.len() as u64 <= self.remaining => {
                self.remaining -= b.len() as u64;
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Ok(_))) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(io::Error::other(
                    "store sent more bytes than asked",
                ))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "store read ended early",
                ))))
            }
        }
    }

    pub async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

impl OriginBody {
    pub fn text(s: impl Into<Bytes>) -> Self {
        OriginBody::Bytes(Some(s.into()))
    }

    /// Keeps `guard` (a load-shedding permit) alive exactly as long as a streamed body.
    pub fn holding(self, guard: impl std::any::Any + Send) -> Self {
        match self {
            OriginBody::File(f) => OriginBody::File(f.holding(guard)),
            OriginBody::Chunks(mut c) => {
                c._guard = Some(Box::new(guard));
                OriginBody::Chunks(c)
            }
            other => other,
        }
    }
}

impl http_body::Body for OriginBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            OriginBody::Empty => Poll::Ready(None),
            OriginBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            OriginBody::File(f) => Pin::new(f).poll_frame(cx),
            OriginBody::Chunks(c) => c.poll_chunk(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Empty => true,
            OriginBody::Bytes(b) => b.is_none(),
            OriginBody::File(f) => f.is_end_stream(),
            OriginBody::Chunks(c) => c.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Empty => SizeHint::with_exact(0),
            OriginBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            OriginBody::File(f) => f.size_hint(),
            OriginBody::Chunks(c) => SizeHint::with_exact(c.remaining),
        }
    }
}
