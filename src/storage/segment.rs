//! A piece of a response body: prebuilt bytes (multipart framing) or a byte range of the
//! stored resource. What the pipeline hands a backend to stream.

use bytes::Bytes;

/// A piece of a response body.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Prebuilt bytes (multipart framing).
    Bytes(Bytes),
    /// File bytes `start..end` (end exclusive).
    File { start: u64, end: u64 },
}

impl Segment {
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { start, end } => end - start,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
