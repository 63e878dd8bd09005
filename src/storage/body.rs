//! Response bodies: a small fixed body, or a stream of segments (multipart framing and file
//! bytes) read by the storage backend that holds them.

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
}

impl OriginBody {
    pub fn text(s: impl Into<Bytes>) -> Self {
        OriginBody::Bytes(Some(s.into()))
    }

    /// Keeps `guard` (a load-shedding permit) alive exactly as long as a streamed body.
    pub fn holding(self, guard: impl std::any::Any + Send) -> Self {
        match self {
            OriginBody::File(f) => OriginBody::File(f.holding(guard)),
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Empty => true,
            OriginBody::Bytes(b) => b.is_none(),
            OriginBody::File(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Empty => SizeHint::with_exact(0),
            OriginBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            OriginBody::File(f) => f.size_hint(),
        }
    }
}
