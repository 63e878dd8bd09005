//! `multipart/byteranges` framing (RFC 9110 §14.6, spec http-origin R-25..R-33).
//!
//! The plan holds every framing byte up front so the exact `Content-Length` is known before the
//! first byte is sent; the body streamer then interleaves these prebuilt heads with
//! file ranges. Layout is Go's: no CRLF before the first boundary.

use bytes::Bytes;

use super::range::ByteRange;

/// One part: its framing head (boundary line + headers + blank line) and the range it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub head: Bytes,
    pub range: ByteRange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartPlan {
    pub boundary: String,
    pub parts: Vec<Part>,
    /// `CRLF --boundary-- CRLF`
    pub tail: Bytes,
    pub content_length: u64,
}

impl MultipartPlan {
    pub fn new(
        ranges: &[ByteRange],
        complete_len: u64,
        content_type: &str,
        boundary: String,
    ) -> Self {
        let parts: Vec<Part> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let lead = if i == 0 { "" } else { "\r\n" };
                let head = format!(
                    "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                    r.content_range(complete_len)
                );
                Part {
                    head: Bytes::from(head),
                    range: *r,
                }
            })
            .collect();
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let content_length = parts
            .iter()
            .map(|p| p.head.len() as u64 + p.range.len())
            .sum::<u64>()
            + tail.len() as u64;
        MultipartPlan {
            boundary,
            parts,
            tail,
            content_length,
        }
    }

    /// The top-level `Content-Type`; the boundary is unquoted.
    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }
}

/// A fresh boundary: 32 random bytes as 64 hex chars, so it cannot plausibly occur in the data
/// (R-29 asks for at least 30).
pub fn random_boundary() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_length_is_363() {
        // spec: http-origin R-32 / RT-15
        let plan = MultipartPlan::new(
            &[
                ByteRange { start: 0, end: 99 },
                ByteRange {
                    start: 900,
                    end: 999,
                },
            ],
            1000,
            "video/mp4",
            "BOUNDARY".into(),
        );
        assert_eq!(plan.content_length, 363);
        assert_eq!(
            &plan.parts[0].head[..],
            b"--BOUNDARY\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-99/1000\r\n\r\n"
        );
        assert_eq!(
            &plan.parts[1].head[..],
            b"\r\n--BOUNDARY\r\nContent-Type: video/mp4\r\nContent-Range: bytes 900-999/1000\r\n\r\n"
        );
        assert_eq!(&plan.tail[..], b"\r\n--BOUNDARY--\r\n");
        assert_eq!(
            plan.content_type(),
            "multipart/byteranges; boundary=BOUNDARY"
        );
    }

    #[test]
    fn formula_matches_for_many_parts() {
        // spec: http-origin R-31, computed independently from the closed form
        let ranges: Vec<ByteRange> = (0..7)
            .map(|i| ByteRange {
                start: i * 1000,
                end: i * 1000 + i * 13,
            })
            .collect();
        let (b, ct, n) = ("xyz123", "application/octet-stream", 123_456u64);
        let plan = MultipartPlan::new(&ranges, n, ct, b.into());
        let expected: u64 = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cr = r.content_range(n).len() as u64;
                (if i > 0 { 2 } else { 0 })
                    + 2
                    + b.len() as u64
                    + 2
                    + 14
                    + ct.len() as u64
                    + 2
                    + 15
                    + cr
                    + 2
                    + 2
                    + r.len()
            })
            .sum::<u64>()
            + 2
            + 2
            + b.len() as u64
            + 2
            + 2;
        assert_eq!(plan.content_length, expected);
    }

    #[test]
    fn boundary_is_valid() {
        let b = random_boundary();
        assert_eq!(b.len(), 64);
        assert!(b.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(b, random_boundary());
    }
}
