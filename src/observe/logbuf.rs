//! Buffered log output, like nginx's `access_log ... buffer=32k flush=1s`.
//!
//! Worker threads format log lines into a buffer of their own and write it to stderr in one
//! syscall when it fills, on their periodic flush tick (`log.flush_ms`, run by the worker's
//! runtime, which is what bounds a line's age), and when the worker stops. Nothing crosses
//! threads, so logging a request costs no wakeup of another thread, and no clock read: a
//! line does not look at the buffer's age. Threads that never opted in (main, blocking pool)
//! write each line straight through.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

struct ThreadBuffer {
    buf: Vec<u8>,
    capacity: usize,
}

thread_local! {
    static BUFFER: RefCell<Option<ThreadBuffer>> = const { RefCell::new(None) };
}

/// Buffers this thread's log lines (up to `capacity` bytes); the caller runs
/// [`flush_this_thread`] on a tick. A capacity of 0 leaves the thread writing straight through.
pub fn buffer_this_thread(capacity: usize) {
    if capacity == 0 {
        return;
    }
    BUFFER.with(|b| {
        *b.borrow_mut() = Some(ThreadBuffer {
            buf: Vec::with_capacity(capacity),
            capacity,
        })
    });
}

/// Writes out whatever this thread has buffered.
pub fn flush_this_thread() {
    BUFFER.with(|b| {
        if let Some(tb) = b.borrow_mut().as_mut() {
            drain(tb);
        }
    });
}

fn drain(tb: &mut ThreadBuffer) {
    if !tb.buf.is_empty() {
        // Logging must never take the server down; a failed write loses those lines only.
        let _ = io::stderr().lock().write_all(&tb.buf);
        tb.buf.clear();
    }
}

/// The `MakeWriter` given to tracing-subscriber.
#[derive(Clone, Copy, Default)]
pub struct ThreadBufferedStderr;

pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let buffered = BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            let Some(tb) = b.as_mut() else { return false };
            tb.buf.extend_from_slice(data);
            if tb.buf.len() >= tb.capacity {
                drain(tb);
            }
            true
        });
        if !buffered {
            io::stderr().lock().write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ThreadBufferedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_until_capacity_then_flushes() {
        std::thread::spawn(|| {
            buffer_this_thread(64);
            let mut w = LineWriter;
            w.write_all(b"0123456789\n").unwrap();
            let len = BUFFER.with(|b| b.borrow().as_ref().unwrap().buf.len());
            assert_eq!(len, 11, "kept in the buffer");
            for _ in 0..6 {
                w.write_all(b"0123456789\n").unwrap();
            }
            let len = BUFFER.with(|b| b.borrow().as_ref().unwrap().buf.len());
            assert!(len < 64, "written out once full (left {len})");
            flush_this_thread();
            assert_eq!(BUFFER.with(|b| b.borrow().as_ref().unwrap().buf.len()), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn unregistered_threads_write_through() {
        std::thread::spawn(|| {
            LineWriter.write_all(b"").unwrap();
            assert!(BUFFER.with(|b| b.borrow().is_none()));
        })
        .join()
        .unwrap();
    }
}
