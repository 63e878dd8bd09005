//! `AssetStore`: from a normalized asset path to an open file and its metadata.
//!
//! Hot path: an open-file cache (like nginx's `open_file_cache`) keeps recently served files
//! open. A hit costs one `stat` of the path, compared with the identity (inode, size, mtime,
//! ctime) the cached descriptor was vetted with; if they differ (replaced, rewritten, a symlink
//! re-pointed) the entry is dropped and the slow path runs. A path can only produce a hit if it
//! resolves to the very inode that the slow path already proved to be inside the root.
//!
//! Slow path, on the blocking pool: resolve symlinks, refuse anything outside the root, open,
//! fstat, then the `MetadataCache` (digest). Cached descriptors are shared by all responses
//! (reads are positional) and closed when evicted (capacity, idle time) and no response still
//! streams from them. A small file's entry also holds a sealed in-memory copy of its version
//! (`snapshot`), which its bodies are sent from.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

pub mod beneath;
pub mod front;
pub mod metadata;
pub mod open;
pub mod read;
pub mod snapshot;
pub mod watch;

use self::metadata::{FileIdentity, FileMeta, MetadataCache};
use self::open::{is_fd_exhaustion, open_under_root, OpenError};
use self::snapshot::{Budget, Snapshot};
use super::path::AssetPath;

#[derive(Clone)]
pub struct OpenAsset {
    pub file: Arc<File>,
    pub meta: Arc<FileMeta>,
    /// A sealed in-memory copy of this version, which bodies are sent from (small files).
    pub copy: Option<Arc<Snapshot>>,
}

pub struct AssetStore {
    /// Canonical asset root.
    pub root: Arc<PathBuf>,
    pub metadata: MetadataCache,
    open: Option<Cache<String, OpenAsset>>,
    /// Each thread's recent hits of `open`, asked first (`front`).
    front: front::Front,
    /// Counted by every hit from both workers: per-thread slots, not one shared line.
    open_hits: crate::observe::sharded::ShardedCounter,
    /// Bytes per disk read of a body (after the small first chunks).
    read_size: usize,
    /// In-memory copies of small files; `None` when off (or without the open-file cache,
    /// whose entries hold them).
    copies: Option<Arc<Budget>>,
}

impl super::Stored for OpenAsset {
    fn len(&self) -> u64 {
        self.meta.len()
    }

    fn modified(&self) -> std::time::SystemTime {
        self.meta.modified()
    }

    fn etag(&self) -> Option<&crate::http::etag::EntityTag> {
        self.meta.etag()
    }

    fn content_type(&self) -> &'static str {
        self.meta.content_type
    }
}

impl super::Backend for AssetStore {
    type Resource = OpenAsset;

    async fn lookup(&self, asset: &AssetPath) -> Result<OpenAsset, super::LookupError> {
        use super::LookupError;
        match self.open(asset, false).await {
            Ok(opened) => Ok(opened),
            Err(OpenError::NotFound) => Err(LookupError::NotFound),
            Err(OpenError::Escapes(real)) => {
                tracing::warn!(path = asset.as_str(), real = %real.display(), "path resolves outside the asset root");
                Err(LookupError::NotFound)
            }
            Err(OpenError::Io(e)) if is_fd_exhaustion(&e) => Err(LookupError::Exhausted(e)),
            // A file that keeps changing under us, or a real IO fault: ours, not the client's.
            Err(OpenError::Io(e)) => Err(LookupError::Failed(e)),
        }
    }

    async fn body(
        &self,
        resource: &OpenAsset,
        segments: Vec<super::Segment>,
    ) -> Result<super::OriginBody, super::LookupError> {
        Ok(super::OriginBody::File(match &resource.copy {
            Some(copy) => {
                read::FileStream::from_copy(Arc::clone(&copy.file), segments, self.read_size)
            }
            None => read::FileStream::new(
                Arc::clone(&resource.file),
                resource.meta.identity,
                segments,
                self.read_size,
            ),
        }))
    }

    async fn evict(&self, asset: &str) {
        if let Some(open) = &self.open {
            open.invalidate(asset).await;
            open.run_pending_tasks().await;
        }
        self.metadata.evict(asset).await;
        self.front.retire_all();
    }
}

thread_local! {
    static STAT_PATH: std::cell::RefCell<PathBuf> = const { std::cell::RefCell::new(PathBuf::new()) };
}

impl AssetStore {
    /// `open_files` = 0 disables the open-file cache (every request opens its own descriptor),
    /// and with it the in-memory copies that its entries hold (`copies`: see `snapshot`).
    pub fn new(
        root: PathBuf,
        metadata: MetadataCache,
        open_files: u64,
        open_idle: Duration,
        read_size: usize,
        copies: Option<Arc<Budget>>,
    ) -> Self {
        let open = (open_files > 0).then(|| {
            Cache::builder()
                .max_capacity(open_files)
                .time_to_idle(open_idle)
                .build()
        });
        AssetStore {
            root: Arc::new(root),
            metadata,
            open,
            front: front::Front::new(),
            open_hits: Default::default(),
            read_size,
            copies: if open_files > 0 { copies } else { None },
        }
    }

    /// Opens `asset` and returns it with its metadata. With `wait_for_digest` (admin replace,
    /// warm-up) a large file's digest is computed before returning instead of in the background.
    pub async fn open(
        &self,
        asset: &AssetPath,
        wait_for_digest: bool,
    ) -> Result<OpenAsset, OpenError> {
        if let Some(hit) = self.cached(asset).await {
            // A pending digest completes in place; only a caller that must have it now asks
            // the metadata cache to hash.
            if hit.meta.is_hashed() || !wait_for_digest {
                return Ok(hit);
            }
        }
        // Boxed: opening and the caches' insert paths are futures of several KiB, and a hit
        // (nearly every request) would otherwise carry their size in its state, which is
        // allocated and copied with every request.
        Box::pin(self.open_missed(asset, wait_for_digest)).await
    }

    /// [`Self::open`] for an asset the open-file cache does not hold (or holds without the
    /// digest the caller must have).
    async fn open_missed(
        &self,
        asset: &AssetPath,
        wait_for_digest: bool,
    ) -> Result<OpenAsset, OpenError> {
        let Some(open) = &self.open else {
            return self.open_fresh(asset, wait_for_digest).await;
        };
        if !wait_for_digest {
            // Concurrent first requests of one path (a replaced video's viewers arriving
            // together, a cold start) share one open and one metadata lookup: each used to take
            // a blocking thread, and 2,000 at once filled the whole blocking pool.
            return open
                .try_get_with(
                    asset.as_str().to_owned(),
                    self.open_fresh(asset, wait_for_digest),
                )
                .await
                .map_err(|shared| shared.copy());
        }
        let opened = self.open_fresh(asset, wait_for_digest).await?;
        // A request and the library watcher may open the same new version at once: the first
        // descriptor cached is kept and the other closed now, never left to linger in the
        // cache's pending work.
        let identity = opened.meta.identity;
        let candidate = opened.clone();
        let kept = open
            .entry(asset.as_str().to_owned())
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(e) if e.value().meta.identity == identity => moka::ops::compute::Op::Nop,
                    _ => moka::ops::compute::Op::Put(candidate),
                })
            })
            .await;
        use moka::ops::compute::CompResult;
        if matches!(kept, CompResult::ReplacedWith(_)) {
            self.front.retire_all();
        }
        Ok(match kept {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                e.into_value()
            }
            _ => opened,
        })
    }

    /// Opens `asset` on the blocking pool and looks up its metadata (not cached here).
    async fn open_fresh(
        &self,
        asset: &AssetPath,
        wait_for_digest: bool,
    ) -> Result<OpenAsset, OpenError> {
        // The file may change between open and hashing; a reopen settles it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let root = Arc::clone(&self.root);
            let a = asset.clone();
            let copies = self.copies.clone();
            let (file, identity, copy) = tokio::task::spawn_blocking(move || {
                let (file, fs_meta) = open_under_root(&root, &a)?;
                let identity = FileIdentity::of(&fs_meta);
                let copy = copies.and_then(|b| b.copy(&file, identity)).map(Arc::new);
                Ok::<_, OpenError>((file, identity, copy))
            })
            .await
            .map_err(|e| OpenError::Io(io::Error::other(e)))??;
            let file = Arc::new(file);
            match self
                .metadata
                .get(asset.as_str(), &file, identity, wait_for_digest)
                .await
            {
                Ok(meta) => return Ok(OpenAsset { file, meta, copy }),
                Err(e) if attempt < 3 => {
                    tracing::debug!(path = asset.as_str(), error = %e, "metadata retry");
                }
                Err(e) => return Err(OpenError::Io(e)),
            }
        }
    }

    /// An open-file cache hit whose path still resolves to the same, unchanged file.
    async fn cached(&self, asset: &AssetPath) -> Option<OpenAsset> {
        let open = self.open.as_ref()?;
        let now_ms = crate::clock::now_ms();
        let hit = match self.front.get(asset.as_str(), now_ms) {
            Some(hit) => hit,
            None => {
                let generation = self.front.generation();
                let hit = open.get(asset.as_str()).await?;
                self.front.put(asset.as_str(), &hit, generation, now_ms);
                hit
            }
        };
        // One stat of a path whose dentry is hot (it was just served): cheap enough to run
        // inline, and it is what catches replacement by rename or a re-pointed symlink.
        let now = STAT_PATH
            .with_borrow_mut(|full| {
                // Built in a buffer kept per thread: `root.join` allocated (and grew) a path
                // on every request.
                full.as_mut_os_string().clear();
                full.push(&*self.root);
                full.push(asset.as_str());
                std::fs::metadata(&*full)
            })
            .ok();
        if now.is_some_and(|m| FileIdentity::of(&m) == hit.meta.identity) {
            self.open_hits.inc();
            return Some(hit);
        }
        open.invalidate(asset.as_str()).await;
        self.front.retire_all();
        // moka drops removed values lazily; run its housekeeping now so the replaced file's
        // descriptor is closed promptly (rare: only when a file changed).
        open.run_pending_tasks().await;
        None
    }

    /// Cache statistics: metadata lookups plus requests answered by the open-file cache.
    pub async fn stats(&self) -> crate::storage::local::metadata::CacheStats {
        self.metadata.run_pending().await;
        let mut st = self.metadata.stats();
        st.hits += self.open_hits.get();
        st
    }

    /// Bytes held by in-memory copies of small files (for metrics and tests).
    pub fn copy_bytes(&self) -> u64 {
        self.copies.as_ref().map_or(0, |b| b.used())
    }

    /// Number of open-file cache entries (for metrics and tests).
    pub fn open_entries(&self) -> u64 {
        self.open.as_ref().map_or(0, |c| c.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn store(dir: &std::path::Path, open_files: u64) -> AssetStore {
        AssetStore::new(
            std::fs::canonicalize(dir).unwrap(),
            MetadataCache::new(100, Duration::from_secs(60), HashMap::new()),
            open_files,
            Duration::from_secs(30),
            256 * 1024,
            Budget::new(1 << 20, 64 * 1024),
        )
    }

    fn asset(p: &str) -> AssetPath {
        crate::storage::path::normalize(p).unwrap()
    }

    /// A store whose `a.mp4` ("one") was opened twice, the second time from the cache (checked):
    /// the folder, the store and the first open.
    async fn a_cached_file() -> (tempfile::TempDir, AssetStore, OpenAsset) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"one").unwrap();
        let s = store(dir.path(), 16);
        let first = s.open(&asset("a.mp4"), false).await.unwrap();
        let second = s.open(&asset("a.mp4"), false).await.unwrap();
        assert!(
            Arc::ptr_eq(&first.file, &second.file),
            "cached descriptor reused"
        );
        (dir, s, first)
    }

    #[tokio::test]
    async fn hit_reuses_descriptor_and_replacement_is_noticed() {
        let (dir, s, first) = a_cached_file().await;
        // Replace by rename: new inode, the cache must not serve the old file.
        std::fs::write(dir.path().join(".tmp"), b"two!").unwrap();
        std::fs::rename(dir.path().join(".tmp"), dir.path().join("a.mp4")).unwrap();
        let third = s.open(&asset("a.mp4"), false).await.unwrap();
        assert!(!Arc::ptr_eq(&first.file, &third.file));
        assert_eq!(third.meta.len(), 4);
        assert_ne!(first.meta.etag(), third.meta.etag());
    }

    /// The per-thread front (`front`) answers a repeat at once, and never past an eviction:
    /// after one the next open is a fresh descriptor, and the evicted one is closed once its
    /// last holder lets go (the front holds it only weakly).
    #[tokio::test]
    async fn an_evicted_entry_is_not_answered_from_the_front() {
        use crate::storage::Backend as _;
        let (_dir, s, first) = a_cached_file().await;
        s.evict("a.mp4").await;
        let after = s.open(&asset("a.mp4"), false).await.unwrap();
        assert!(
            !Arc::ptr_eq(&first.file, &after.file),
            "answered from before the eviction"
        );
        let old = Arc::downgrade(&first.file);
        drop(first);
        assert!(
            old.upgrade().is_none(),
            "the evicted descriptor is still open"
        );
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"one").unwrap();
        let s = store(dir.path(), 16);
        let a = asset("a.mp4");
        let all = futures_util::future::join_all((0..200).map(|_| s.open(&a, false))).await;
        let first = all[0].as_ref().unwrap();
        for opened in &all {
            assert!(Arc::ptr_eq(&first.file, &opened.as_ref().unwrap().file));
        }
        let st = s.metadata.stats();
        assert_eq!(
            st.hits + st.misses,
            1,
            "one open and one metadata lookup for 200 requests"
        );
        // A missing file is not remembered: each later request looks again.
        let missing = asset("b.mp4");
        let all = futures_util::future::join_all((0..20).map(|_| s.open(&missing, false))).await;
        assert!(all.iter().all(|r| matches!(r, Err(OpenError::NotFound))));
        std::fs::write(dir.path().join("b.mp4"), b"now").unwrap();
        assert!(s.open(&missing, false).await.is_ok());
    }

    #[test]
    fn a_shared_error_keeps_its_os_code() {
        let e = OpenError::Io(io::Error::from_raw_os_error(libc::EMFILE)).copy();
        assert!(matches!(&e, OpenError::Io(e) if is_fd_exhaustion(e)));
        assert!(matches!(OpenError::NotFound.copy(), OpenError::NotFound));
    }

    #[tokio::test]
    async fn repointed_symlink_is_revalidated() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.mp4"), b"inside").unwrap();
        std::os::unix::fs::symlink("in.mp4", dir.path().join("link.mp4")).unwrap();
        let s = store(dir.path(), 16);
        assert!(s.open(&asset("link.mp4"), false).await.is_ok());
        std::fs::remove_file(dir.path().join("link.mp4")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link.mp4"))
            .unwrap();
        assert!(matches!(
            s.open(&asset("link.mp4"), false).await,
            Err(OpenError::Escapes(_))
        ));
    }

    async fn body_bytes(s: &AssetStore, opened: &OpenAsset) -> Vec<u8> {
        use super::super::Backend as _;
        use http_body_util::BodyExt as _;
        let whole = crate::storage::segment::Segment::File {
            start: 0,
            end: opened.meta.len(),
        };
        match s.body(opened, vec![whole]).await.ok().unwrap() {
            super::super::OriginBody::File(f) => f.collect().await.unwrap().to_bytes().to_vec(),
            _ => panic!("not a file body"),
        }
    }

    #[tokio::test]
    async fn small_files_are_sent_from_a_sealed_copy_of_their_version() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        std::fs::write(&path, b"version one").unwrap();
        let s = store(dir.path(), 16);
        let first = s.open(&asset("a.mp4"), false).await.unwrap();
        assert!(first.copy.is_some());
        assert_eq!(s.copy_bytes(), 11);
        // Rewritten in place (same inode, same size, later mtime): a response of the first
        // version still sends that version, whole; the next request gets the new one.
        std::thread::sleep(Duration::from_millis(20));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"VERSION TWO", 0).unwrap();
        drop(f);
        assert_eq!(body_bytes(&s, &first).await, b"version one");
        let second = s.open(&asset("a.mp4"), false).await.unwrap();
        assert!(second.copy.is_some());
        assert_ne!(first.meta.etag(), second.meta.etag());
        assert_eq!(body_bytes(&s, &second).await, b"VERSION TWO");
        drop(first);
        assert_eq!(
            s.copy_bytes(),
            11,
            "the first version's copy went with its last holder"
        );

        // Above the per-file limit: read from the file itself, checked as ever.
        std::fs::write(dir.path().join("big.mp4"), vec![5u8; 64 * 1024 + 1]).unwrap();
        let big = s.open(&asset("big.mp4"), false).await.unwrap();
        assert!(big.copy.is_none());
        assert_eq!(body_bytes(&s, &big).await, vec![5u8; 64 * 1024 + 1]);
        // Without the open-file cache there is nothing to hold a copy.
        let uncached = store(dir.path(), 0);
        assert!(uncached
            .open(&asset("a.mp4"), false)
            .await
            .unwrap()
            .copy
            .is_none());
        assert_eq!(uncached.copy_bytes(), 0);
    }

    #[tokio::test]
    async fn disabled_cache_opens_each_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"one").unwrap();
        let s = store(dir.path(), 0);
        let a = s.open(&asset("a.mp4"), false).await.unwrap();
        let b = s.open(&asset("a.mp4"), false).await.unwrap();
        assert!(!Arc::ptr_eq(&a.file, &b.file));
        assert_eq!(s.open_entries(), 0);
    }
}
