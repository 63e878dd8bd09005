//! The local backend's response body: a bounded stream of file bytes (and multipart framing).
//!
//! Memory per response is one chunk (`read_size`) in flight: a read is only started when hyper
//! polls for more, which it does only when the connection can take it (backpressure).
//!
//! Reads are positional. Each is first tried inline with `preadv2(RWF_NOWAIT)`, which succeeds
//! only when the bytes are already in the page cache and never waits for the disk; otherwise
//! (cold data, or a filesystem without RWF_NOWAIT) the read goes to the blocking pool. So a hot
//! file costs no thread hop, and a cold disk still never stalls a runtime worker.
//!
//! Consistency: the stream reads from the descriptor whose identity the ETag was computed for.
//! A replacement by rename leaves that inode intact, so the old bytes finish cleanly. An
//! in-place rewrite or truncation is noticed by an `fstat` after every read; the stream then
//! fails, hyper aborts the connection, and the client sees a body shorter than Content-Length
//! rather than a splice of two versions. A body sent from a sealed in-memory copy of a small
//! file (`snapshot`) needs neither check nor blocking pool: the copy cannot change and is
//! memory. Dropping the body (client gone) drops the last reference to the file, closing it.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use super::metadata::FileIdentity;
use crate::storage::segment::Segment;

/// Chunk size for the start of every response, and how far the start reaches.
///
/// A viewer that stops reading stalls once the kernel's socket buffers (a few hundred KiB)
/// are full; whatever chunk is then in flight stays in our memory for as long as the viewer
/// dawdles. Small chunks at the start keep that to 32 KiB per stalled viewer, and a client
/// that reads at full speed reaches full-size chunks after half a megabyte.
const START_CHUNK: u64 = 32 * 1024;
const START_BYTES: u64 = 512 * 1024;

/// Inline (page-cache) reads never return Pending, and a fast socket rarely does, so one
/// response could stream a whole file in a single poll while every other connection on the
/// worker waits. After this many bytes the stream yields once (like nginx's
/// sendfile_max_chunk), which keeps per-connection latency fair.
const YIELD_EVERY: u64 = 1024 * 1024;

/// Where a body's bytes come from, and so how it knows they are the version it started with.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The served file itself: checked against this identity after every read.
    File(FileIdentity),
    /// A sealed copy in memory (`snapshot`): it cannot change, and reading it never waits for
    /// a disk.
    Sealed,
}

pub struct FileStream {
    file: Arc<File>,
    source: Source,
    segments: VecDeque<Segment>,
    read_size: usize,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
    remaining: u64,
    sent: u64,
    since_yield: u64,
    /// Dropped with the stream (a load-shedding permit): released when the body ends or the
    /// client goes away.
    _guard: Option<Box<dyn std::any::Any + Send>>,
}

impl FileStream {
    pub fn new(
        file: Arc<File>,
        identity: FileIdentity,
        segments: Vec<Segment>,
        read_size: usize,
    ) -> Self {
        Self::reading(file, Source::File(identity), segments, read_size)
    }

    /// A body sent from a sealed in-memory copy of the file (see `snapshot`).
    pub fn from_copy(copy: Arc<File>, segments: Vec<Segment>, read_size: usize) -> Self {
        Self::reading(copy, Source::Sealed, segments, read_size)
    }

    fn reading(file: Arc<File>, source: Source, segments: Vec<Segment>, read_size: usize) -> Self {
        let remaining = segments.iter().map(Segment::len).sum();
        FileStream {
            file,
            source,
            segments: segments.into(),
            read_size: read_size.max(1),
            pending: None,
            remaining,
            sent: 0,
            since_yield: 0,
            _guard: None,
        }
    }

    /// Keeps `guard` alive exactly as long as this stream.
    pub fn holding(mut self, guard: impl std::any::Any + Send) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.segments.clear();
        self.remaining = 0;
        Poll::Ready(Some(Err(e)))
    }
}

/// What [`FileStream::fill_cached`] placed in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many bytes, the body's next ones.
    Bytes(usize),
    /// The next file bytes are not in the page cache (or the filesystem cannot say without
    /// waiting): read them with [`FileStream::read_blocking`] off the runtime.
    Cold,
    /// Nothing is left.
    End,
}

/// For a writer that copies bytes to its socket itself and takes only what the socket accepts
/// (`server::plain`): nothing is consumed until [`FileStream::advance`], so the bytes a slow
/// socket did not take are read again later instead of being held in memory.
impl FileStream {
    /// Copies the body's next bytes into `buf` if that needs no disk wait: framing, or file
    /// bytes already in the page cache (checked unchanged after the read, as every read is).
    pub fn fill_cached(&self, buf: &mut [u8]) -> io::Result<Fill> {
        match self.segments.iter().find(|s| !s.is_empty()) {
            None => Ok(Fill::End),
            Some(Segment::Bytes(b)) => {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                Ok(Fill::Bytes(n))
            }
            Some(Segment::File { start, end }) => {
                let len = ((end - start) as usize).min(buf.len());
                match pread_nowait(&self.file, self.source, &mut buf[..len], *start) {
                    // Not cached, or no RWF_NOWAIT here: the blocking read decides.
                    None => Ok(Fill::Cold),
                    Some(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file truncated while streaming",
                    )),
                    Some(n) => {
                        check_unchanged(&self.file, self.source)?;
                        Ok(Fill::Bytes(n))
                    }
                }
            }
        }
    }

    /// A blocking read of at most `max` of the body's next file bytes (for the blocking pool,
    /// after [`Fill::Cold`]); framing never needs it.
    pub fn read_blocking(&self, max: usize) -> impl FnOnce() -> io::Result<Bytes> + Send + 'static {
        let next = match self.segments.iter().find(|s| !s.is_empty()) {
            Some(Segment::File { start, end }) => Some((*start, ((end - start) as usize).min(max))),
            _ => None,
        };
        let (file, source) = (Arc::clone(&self.file), self.source);
        move || match next {
            Some((offset, len)) => read_chunk(&file, source, offset, len.max(1)),
            None => Ok(Bytes::new()),
        }
    }

    /// The body's next bytes when they are file bytes (for `sendfile`): the descriptor, the
    /// offset and how many follow there, provided the last of the first `max` is in the page
    /// cache (the kernel's read-ahead fills in order, so then the rest is too); `Ok(None)`
    /// when the next bytes are framing or not cached.
    pub fn next_cached_file_bytes(&self, max: usize) -> Option<(&File, u64, usize)> {
        let Some(Segment::File { start, end }) = self.segments.iter().find(|s| !s.is_empty())
        else {
            return None;
        };
        let len = ((end - start) as usize).min(max);
        let last = start + len as u64 - 1;
        let cached = match self.source {
            Source::Sealed => true,
            Source::File(_) => {
                pread_nowait(&self.file, self.source, &mut [0u8; 1], last) == Some(1)
            }
        };
        cached.then_some((&*self.file, *start, len))
    }

    /// Whether the file still is the version this body started with (after a `sendfile`).
    pub fn check_unchanged(&self) -> io::Result<()> {
        check_unchanged(&self.file, self.source)
    }

    /// Whether the bytes come from a sealed copy, which can be sent by `sendfile` with no
    /// check (they cannot change) and never wait for a disk.
    pub fn is_sealed_copy(&self) -> bool {
        matches!(self.source, Source::Sealed)
    }

    /// Marks the next `n` bytes as sent.
    pub fn advance(&mut self, mut n: usize) {
        use bytes::Buf;
        self.remaining = self.remaining.saturating_sub(n as u64);
        self.sent += n as u64;
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            let take = (front.len() as usize).min(n);
            match front {
                Segment::Bytes(b) => b.advance(take),
                Segment::File { start, .. } => *start += take as u64,
            }
            n -= take;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
    }
}

/// Reads exactly `len` bytes at `offset` only if they are all in the page cache.
/// `None` means "would have to wait for the disk (or unsupported)": use the blocking pool.
fn read_cached(file: &File, source: Source, offset: u64, len: usize) -> Option<io::Result<Bytes>> {
    let mut buf = vec![0u8; len];
    if pread_nowait(file, source, &mut buf, offset) != Some(len) {
        // Not cached, no RWF_NOWAIT, or a short read (partly cached, or truncated): the
        // blocking path retries and reports truncation properly.
        return None;
    }
    Some(check_unchanged(file, source).map(|()| Bytes::from(buf)))
}

/// One `preadv2(RWF_NOWAIT)` into `buf` at `offset`: how many bytes came (0 at the end of the
/// file), or `None` when it would wait for the disk (EAGAIN), the filesystem cannot say
/// (EOPNOTSUPP/ENOSYS/EINVAL), or it failed otherwise (the blocking read reports that).
///
/// A sealed copy is memory (which refuses RWF_NOWAIT): a plain read never waits there.
fn pread_nowait(file: &File, source: Source, buf: &mut [u8], offset: u64) -> Option<usize> {
    use std::os::fd::AsRawFd;
    if let Source::Sealed = source {
        return file.read_at(buf, offset).ok();
    }
    let offset = i64::try_from(offset).ok()?;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` points at `buf`, valid for writes of `buf.len()` bytes for the whole call;
    // the fd is owned by `file` and open for the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).ok()
}

fn check_unchanged(file: &File, source: Source) -> io::Result<()> {
    let Source::File(identity) = source else {
        return Ok(());
    };
    if identity.content_changed(&FileIdentity::of(&file.metadata()?)) {
        return Err(io::Error::other("file changed while streaming"));
    }
    Ok(())
}

/// One positional read of exactly `len` bytes, then a check that the file is unchanged.
fn read_chunk(file: &File, source: Source, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file truncated while streaming",
            )
        } else {
            e
        }
    })?;
    check_unchanged(file, source)?;
    Ok(Bytes::from(buf))
}

impl http_body::Body for FileStream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(handle) = self.pending.as_mut() {
                let joined = ready!(Pin::new(handle).poll(cx));
                self.pending = None;
                return match joined {
                    Ok(Ok(bytes)) => {
                        self.remaining -= bytes.len() as u64;
                        self.sent += bytes.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(bytes))))
                    }
                    Ok(Err(e)) => self.fail(e),
                    Err(e) => self.fail(io::Error::other(e)),
                };
            }
            let read_size = if self.sent < START_BYTES {
                START_CHUNK.min(self.read_size as u64)
            } else {
                self.read_size as u64
            };
            if self.since_yield >= YIELD_EVERY
                && matches!(self.segments.front(), Some(Segment::File { .. }))
            {
                self.since_yield = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.segments.front_mut() {
                None => return Poll::Ready(None),
                Some(Segment::Bytes(_)) => {
                    let Some(Segment::Bytes(b)) = self.segments.pop_front() else {
                        unreachable!("front was Bytes")
                    };
                    self.remaining -= b.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Segment::File { start, end }) if *start >= *end => {
                    self.segments.pop_front();
                }
                Some(Segment::File { start, end }) => {
                    let offset = *start;
                    let len = (*end - *start).min(read_size);
                    *start += len;
                    self.since_yield += len;
                    if let Some(done) = read_cached(&self.file, self.source, offset, len as usize) {
                        return match done {
                            Ok(bytes) => {
                                self.remaining -= bytes.len() as u64;
                                self.sent += bytes.len() as u64;
                                Poll::Ready(Some(Ok(Frame::data(bytes))))
                            }
                            Err(e) => self.fail(e),
                        };
                    }
                    let (file, source) = (Arc::clone(&self.file), self.source);
                    self.pending = Some(tokio::task::spawn_blocking(move || {
                        read_chunk(&file, source, offset, len as usize)
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    fn stream(path: &std::path::Path, segs: Vec<Segment>, read_size: usize) -> FileStream {
        let f = File::open(path).unwrap();
        let id = FileIdentity::of(&f.metadata().unwrap());
        FileStream::new(Arc::new(f), id, segs, read_size)
    }

    #[tokio::test]
    async fn chunks_start_small_then_reach_read_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 2 << 20]).unwrap();
        let mut s = stream(
            &p,
            vec![Segment::File {
                start: 0,
                end: 2 << 20,
            }],
            256 * 1024,
        );
        let mut sizes = Vec::new();
        while let Some(frame) = s.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 2 << 20);
        assert!(sizes[..16].iter().all(|&n| n == 32 * 1024), "{sizes:?}");
        assert!(sizes[16..].iter().all(|&n| n == 256 * 1024), "{sizes:?}");
    }

    #[tokio::test]
    async fn streams_segments_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let mut s = stream(
            &p,
            vec![
                Segment::Bytes(Bytes::from_static(b"<head>")),
                Segment::File {
                    start: 100,
                    end: 5100,
                },
                Segment::Bytes(Bytes::from_static(b"<tail>")),
            ],
            1024,
        );
        assert_eq!(s.size_hint().exact(), Some(5012));
        let mut out = Vec::new();
        while let Some(frame) = s.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= 1024, "chunk of {} bytes", chunk.len());
            out.extend_from_slice(&chunk);
        }
        let mut want = b"<head>".to_vec();
        want.extend_from_slice(&data[100..5100]);
        want.extend_from_slice(b"<tail>");
        assert_eq!(out, want);
        assert!(s.is_end_stream());
    }

    #[tokio::test]
    async fn truncation_mid_stream_is_an_error_not_a_splice() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; 4096]).unwrap();
        let mut s = stream(
            &p,
            vec![Segment::File {
                start: 0,
                end: 4096,
            }],
            1024,
        );
        let first = s.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], &[b'a'; 1024][..]);
        // Rewrite in place with different bytes of the same length.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, vec![b'b'; 4096]).unwrap();
        let next = s.frame().await.unwrap();
        assert!(next.is_err(), "a changed file must end the stream");
        assert!(s.frame().await.is_none());
    }

    #[tokio::test]
    async fn shrinking_file_falls_back_and_reports_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; 8192]).unwrap();
        let mut s = stream(
            &p,
            vec![Segment::File {
                start: 0,
                end: 8192,
            }],
            4096,
        );
        assert_eq!(
            s.frame().await.unwrap().unwrap().into_data().unwrap().len(),
            4096
        );
        // Shrink: the inline read comes back short, so the blocking path runs and names it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(5000)
            .unwrap();
        let err = s.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
