//! Sealed in-memory copies of small files, which the plain path sends with `sendfile`.
//!
//! Why: sending straight from the page cache (`sendfile`, as nginx does) saves the two copies a
//! response otherwise makes through user space, which on whole small files (segments,
//! thumbnails, playlists) is about a third of the server's CPU. But `sendfile` from the served
//! file itself can only check the file's identity after the bytes are on their way, so an
//! in-place rewrite could put bytes of the new version into a response carrying the old ETag.
//! A copy taken once per version into a `memfd`, checked against the version's identity and
//! then sealed against every write, cannot change: it is sent without copying and without any
//! check, and a response started before a rewrite ends with the old version's bytes, whole.
//!
//! Bounded by a byte budget over all copies (each copy also holds one descriptor). A copy lives
//! as long as the open-file cache entry that holds it (and any response still sending from it);
//! its pages are shared memory, counted against a container's memory limit, not page cache that
//! the kernel could reclaim.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::metadata::FileIdentity;

/// What copies may take: at most `max_bytes` in all, none of a file above `file_max_bytes`.
pub struct Budget {
    max_bytes: u64,
    file_max_bytes: u64,
    used: AtomicU64,
}

/// A sealed copy of one version of a file. Its bytes return to the budget when it is dropped.
pub struct Snapshot {
    pub file: Arc<File>,
    len: u64,
    budget: Arc<Budget>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl Budget {
    /// `None` when copies are off (`max_bytes` or `file_max_bytes` 0).
    pub fn new(max_bytes: u64, file_max_bytes: u64) -> Option<Arc<Budget>> {
        (max_bytes > 0 && file_max_bytes > 0).then(|| {
            Arc::new(Budget {
                max_bytes,
                file_max_bytes,
                used: AtomicU64::new(0),
            })
        })
    }

    /// Bytes held by live copies.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A sealed copy of `file`, which must be the version `identity` describes, if it is small
    /// enough and the budget has room; `None` otherwise, or when the file changed while it was
    /// copied (the response then reads the file itself, checked as ever). Blocking: call from
    /// the blocking pool.
    pub fn copy(self: &Arc<Self>, file: &File, identity: FileIdentity) -> Option<Snapshot> {
        let len = identity.len;
        // The budget is checked before and reserved after the memfd is made: a full budget
        // costs no descriptor, and a failed memfd_create leaves nothing reserved.
        if len == 0 || len > self.file_max_bytes || self.used().saturating_add(len) > self.max_bytes
        {
            return None;
        }
        let memfd = match rustix::fs::memfd_create(
            "video-origin-copy",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        ) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(error = %e, "memfd_create failed: served from the file");
                return None;
            }
        };
        if !self.reserve(len) {
            return None;
        }
        // From here the reservation belongs to `snapshot`: dropping it on any failure below
        // returns it.
        let snapshot = Snapshot {
            file: Arc::new(File::from(memfd)),
            len,
            budget: Arc::clone(self),
        };
        match fill(file, &snapshot, identity) {
            Ok(()) => Some(snapshot),
            Err(e) => {
                tracing::debug!(error = %e, "no in-memory copy");
                None
            }
        }
    }

    fn reserve(&self, len: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(len).filter(|&n| n <= self.max_bytes)
            })
            .is_ok()
    }
}

/// Copies `file` into the snapshot, checks that it still is the version `identity` describes,
/// and seals the copy against any change of its bytes or size.
fn fill(file: &File, snapshot: &Snapshot, identity: FileIdentity) -> io::Result<()> {
    let len = snapshot.len;
    let mut out = &*snapshot.file;
    let mut buf = vec![0u8; (len as usize).min(256 * 1024)];
    let mut at = 0u64;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while copied",
            ));
        }
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    // A write moves the mtime before it changes any byte, so one that touched a byte read
    // shows here (ctime is not compared: a rename over the path changes only that).
    if identity.content_changed(&FileIdentity::of(&file.metadata()?)) {
        return Err(io::Error::other("file changed while copied"));
    }
    use rustix::fs::SealFlags;
    rustix::fs::fcntl_add_seals(
        &*snapshot.file,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File, FileIdentity) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let f = File::open(&path).unwrap();
        let id = FileIdentity::of(&f.metadata().unwrap());
        (dir, f, id)
    }

    fn read_all(f: &File) -> Vec<u8> {
        let mut v = vec![0u8; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn a_copy_has_the_files_bytes_and_cannot_be_changed() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (_d, f, id) = file_with(&data);
        let budget = Budget::new(1 << 20, 1 << 20).unwrap();
        let s = budget.copy(&f, id).expect("copied");
        assert_eq!(read_all(&s.file), data);
        assert_eq!(budget.used(), data.len() as u64);
        // Sealed: neither its bytes nor its size can change, whoever holds the descriptor.
        assert!((&*s.file).write_all(b"x").is_err());
        assert!(s.file.write_at(b"x", 0).is_err());
        assert!(s.file.set_len(1).is_err());
        assert!(s.file.set_len(data.len() as u64 + 1).is_err());
        assert_eq!(read_all(&s.file), data);
        drop(s);
        assert_eq!(budget.used(), 0, "a dropped copy returns its bytes");
    }

    #[test]
    fn the_budget_and_the_file_limit_are_kept() {
        let (_d, f, id) = file_with(&[7u8; 1000]);
        let budget = Budget::new(2500, 1000).unwrap();
        let a = budget.copy(&f, id).expect("first fits");
        let b = budget.copy(&f, id).expect("second fits");
        assert!(
            budget.copy(&f, id).is_none(),
            "a third would pass 2,500 bytes"
        );
        assert_eq!(budget.used(), 2000);
        drop(a);
        let _c = budget.copy(&f, id).expect("room again once one is dropped");
        drop(b);
        let (_d2, big, big_id) = file_with(&[1u8; 1001]);
        assert!(
            budget.copy(&big, big_id).is_none(),
            "above the per-file limit"
        );
        assert_eq!(budget.used(), 1000);
        assert!(Budget::new(0, 1000).is_none() && Budget::new(1000, 0).is_none());
    }

    #[test]
    fn a_file_that_is_not_the_expected_version_is_not_copied() {
        let (dir, f, id) = file_with(b"version one");
        // Rewritten in place after its identity was taken (a later mtime, another size).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("f"), b"version two, longer").unwrap();
        let budget = Budget::new(1 << 20, 1 << 20).unwrap();
        assert!(budget.copy(&f, id).is_none());
        assert_eq!(budget.used(), 0, "the failed copy returned its reservation");
        let (_d, empty, empty_id) = file_with(b"");
        assert!(budget.copy(&empty, empty_id).is_none(), "nothing to copy");
    }
}
