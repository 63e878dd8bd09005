//! `MetadataCache`: what we know about each file (length, mtime, identity, SHA-256, content
//! type), kept in a moka cache keyed by asset path.
//!
//! Correctness rule: an entry is used only when its [`FileIdentity`] equals the identity from
//! an `fstat` of the file descriptor the request is about to stream from. Identity includes
//! inode, size, mtime and ctime; ctime cannot be set from user space, so a file rewritten with
//! the same size and a restored mtime still gets a new digest (spec http-origin CT-18).
//!
//! No viewer waits long for a hash. A file up to `inline_max` bytes (a few MiB: milliseconds)
//! is hashed on first request on the blocking pool, concurrent misses coalesced through moka's
//! per-key compute lock (single-flight). A larger one is answered at once with an entry that
//! has no digest yet (the response then carries no ETag, see README *ETags*), and is hashed by
//! a background hasher: `hash_threads` threads at low CPU and IO priority, one job per file
//! version, after which the entry gains its digest and responses their strong ETag. Digests
//! can be precomputed (`video-origin index`) into an index file consulted before hashing.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::content_type::content_type_for;
use crate::http::etag::EntityTag;

/// What identifies one version of a file on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileIdentity {
    pub fn of(m: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }

    /// The modification time this identity records.
    pub fn modified(&self) -> SystemTime {
        let ns = u64::try_from(self.mtime_ns).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// Whether the bytes behind an open descriptor may have changed since `self`: a write or
    /// truncation moves size or mtime. ctime is left out on purpose: renaming a new file over
    /// this one (the atomic replace) or unlinking it changes only its ctime and link count, and
    /// readers of the old inode must then finish cleanly with the old bytes. (The cache
    /// identity still includes ctime, so the ETag of a path changes after any rewrite.)
    pub fn content_changed(&self, now: &FileIdentity) -> bool {
        self.len != now.len || self.mtime_ns != now.mtime_ns
    }
}

/// Cached facts about one version of one file.
///
/// The digest can arrive after the entry is made: a background hash completes the entry in
/// place (every holder of it, the open-file cache included, sees it at once). A digest taken
/// from the index for a copy (size and mtime match, not the inode) is provisional until the
/// background hash confirms or replaces it.
///
/// Aligned to 128 bytes: every request for the file clones and drops its `Arc` from either
/// worker, and the reference counts must not share a cache line with `identity`, which every
/// request reads.
#[derive(Debug)]
#[repr(align(128))]
pub struct FileMeta {
    /// Size, mtime and the rest of what this version was read under.
    pub identity: FileIdentity,
    hashed: std::sync::OnceLock<([u8; 32], EntityTag)>,
    provisional: Option<([u8; 32], EntityTag)>,
    pub content_type: &'static str,
}

impl FileMeta {
    pub(super) fn new(
        identity: FileIdentity,
        hashed: Option<[u8; 32]>,
        provisional: Option<[u8; 32]>,
        content_type: &'static str,
    ) -> FileMeta {
        let tagged = |d: [u8; 32]| (d, EntityTag::from_digest(&d));
        let cell = std::sync::OnceLock::new();
        if let Some(d) = hashed {
            let _ = cell.set(tagged(d));
        }
        FileMeta {
            identity,
            hashed: cell,
            provisional: provisional.map(tagged),
            content_type,
        }
    }

    /// Records the digest a hash of this very version gave (first one wins).
    fn complete(&self, digest: [u8; 32]) {
        let _ = self.hashed.set((digest, EntityTag::from_digest(&digest)));
    }

    fn known(&self) -> Option<&([u8; 32], EntityTag)> {
        self.hashed.get().or(self.provisional.as_ref())
    }

    /// The SHA-256 of the bytes, when known.
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.known().map(|(d, _)| *d)
    }

    /// The strong ETag from the digest, when known.
    pub fn etag(&self) -> Option<&EntityTag> {
        self.known().map(|(_, t)| t)
    }

    /// Whether this version was hashed here (not only taken from the index by size and mtime).
    pub fn is_hashed(&self) -> bool {
        self.hashed.get().is_some()
    }

    pub fn len(&self) -> u64 {
        self.identity.len
    }

    pub fn is_empty(&self) -> bool {
        self.identity.len == 0
    }

    pub fn modified(&self) -> SystemTime {
        self.identity.modified()
    }
}

#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub digests_computed: AtomicU64,
    pub digest_micros: AtomicU64,
}

impl CacheCounters {
    fn count_digest(&self, started: Instant) {
        self.digests_computed.fetch_add(1, Ordering::Relaxed);
        self.digest_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// One file version to hash in the background, and the cache entry its digest completes.
struct Job {
    key: String,
    file: Arc<File>,
    meta: Arc<FileMeta>,
}

/// Background hashers: a bounded queue, one job per file version, threads at low CPU and IO
/// priority so hashing a library never competes with serving it.
struct Hasher {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    queued: Arc<std::sync::Mutex<std::collections::HashSet<(String, FileIdentity)>>>,
}

/// Jobs waiting at most; beyond it a job is dropped and asked for again by the next request.
const HASH_QUEUE: usize = 4096;

impl Hasher {
    fn spawn(threads: usize, counters: Arc<CacheCounters>) -> Hasher {
        let queued = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        if threads == 0 {
            return Hasher { tx: None, queued };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(HASH_QUEUE);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let (rx, counters, queued) =
                (Arc::clone(&rx), Arc::clone(&counters), Arc::clone(&queued));
            let spawned = std::thread::Builder::new()
                .name(format!("hasher-{i}"))
                .spawn(move || hash_jobs(&rx, &counters, &queued));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a background hasher");
            }
        }
        Hasher {
            tx: Some(tx),
            queued,
        }
    }

    /// Queues the version `meta` of `key` unless it is queued already.
    fn enqueue(&self, key: &str, file: &Arc<File>, meta: &Arc<FileMeta>) {
        let Some(tx) = &self.tx else { return };
        let id = (key.to_owned(), meta.identity);
        {
            let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            if !q.insert(id.clone()) {
                return;
            }
        }
        let job = Job {
            key: key.to_owned(),
            file: Arc::clone(file),
            meta: Arc::clone(meta),
        };
        if tx.try_send(job).is_err() {
            self.queued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
}

/// A hasher thread: lowers its own priority, then hashes jobs until the queue goes away.
fn hash_jobs(
    rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>,
    counters: &CacheCounters,
    queued: &std::sync::Mutex<std::collections::HashSet<(String, FileIdentity)>>,
) {
    lower_this_threads_priority();
    loop {
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let started = Instant::now();
        let hashed = hash_file(&job.file, job.meta.identity);
        queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(job.key.clone(), job.meta.identity));
        match hashed {
            Ok(digest) => {
                counters.count_digest(started);
                job.meta.complete(digest);
            }
            // Changed while hashing: the next request sees the new version and asks again.
            Err(e) => {
                tracing::debug!(path = job.key.as_str(), error = %e, "background hash abandoned")
            }
        }
    }
}

/// Nice 10 and the idle IO class, for this thread only (Linux applies both per thread).
fn lower_this_threads_priority() {
    // SAFETY: both calls only change this thread's scheduling attributes.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub digests_computed: u64,
    pub digest_seconds: f64,
}

pub struct MetadataCache {
    cache: Cache<String, Arc<FileMeta>>,
    counters: Arc<CacheCounters>,
    /// The digest index (`video-origin index`), swapped whole when the file is rewritten.
    index: std::sync::RwLock<Arc<HashMap<String, IndexEntry>>>,
    /// Files larger than this are hashed in the background, not on the request path.
    inline_max: u64,
    hasher: Hasher,
}

impl MetadataCache {
    /// Every file hashed inline (tests, tools); see [`MetadataCache::with_hashers`].
    pub fn new(capacity: u64, ttl: Duration, index: HashMap<String, IndexEntry>) -> Self {
        Self::with_hashers(capacity, ttl, index, u64::MAX, 0)
    }

    /// Files over `inline_max` bytes are hashed by `threads` background hashers.
    pub fn with_hashers(
        capacity: u64,
        ttl: Duration,
        index: HashMap<String, IndexEntry>,
        inline_max: u64,
        threads: usize,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .build();
        let counters = Arc::new(CacheCounters::default());
        MetadataCache {
            hasher: Hasher::spawn(threads, Arc::clone(&counters)),
            cache,
            counters,
            index: std::sync::RwLock::new(Arc::new(index)),
            inline_max,
        }
    }

    /// Puts a rewritten digest index in service (entries already cached stay as they are).
    pub fn replace_index(&self, index: HashMap<String, IndexEntry>) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    /// The index's digest for this version of `key`, if the index knows it: certain when the
    /// entry was made on this very file (same device, inode, ctime); provisional when it
    /// matches only by size and modification time (a copy made with `cp -a`, rsync or on
    /// another NFS client), to be confirmed by a background hash, which replaces it if the
    /// bytes differ (a rewrite that kept size and mtime).
    fn index_hint(&self, key: &str, identity: FileIdentity) -> Option<([u8; 32], bool)> {
        let index = Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()));
        let entry = index.get(key)?;
        if entry.identity == identity {
            return Some((entry.digest, true));
        }
        (entry.identity.len == identity.len && entry.identity.mtime_ns == identity.mtime_ns)
            .then_some((entry.digest, false))
    }

    /// Metadata for `key` as it is in `file` right now (`identity` from its fstat). With
    /// `wait_for_digest` (admin replace, warm-up) a large file is hashed before returning too.
    pub async fn get(
        &self,
        key: &str,
        file: &Arc<File>,
        identity: FileIdentity,
        wait_for_digest: bool,
    ) -> io::Result<Arc<FileMeta>> {
        if let Some(meta) = self.cache.get(key).await {
            if meta.identity == identity && (meta.is_hashed() || !wait_for_digest) {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                if !meta.is_hashed() {
                    // A job dropped from a full queue is asked for again.
                    self.hasher.enqueue(key, file, &meta);
                }
                return Ok(meta);
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let hint = self.index_hint(key, identity);
        let content_type = content_type_for(key);
        let background = match hint {
            Some((_, true)) => false,
            // A provisional digest is served at once and confirmed in the background.
            Some((_, false)) => !wait_for_digest,
            None => !wait_for_digest && identity.len > self.inline_max,
        };
        if background {
            // Answer now, hash in the background: no viewer waits for a large file's hash.
            let provisional = hint.map(|(d, _)| d);
            let fresh = Arc::new(FileMeta::new(identity, None, provisional, content_type));
            let result = self
                .cache
                .entry(key.to_owned())
                .and_compute_with(|current| {
                    let op = match current {
                        Some(e) if e.value().identity == identity => Op::Nop,
                        _ => Op::Put(Arc::clone(&fresh)),
                    };
                    std::future::ready(op)
                })
                .await;
            let meta = match result {
                CompResult::Inserted(e)
                | CompResult::ReplacedWith(e)
                | CompResult::Unchanged(e) => e.into_value(),
                _ => fresh,
            };
            if !meta.is_hashed() {
                self.hasher.enqueue(key, file, &meta);
            }
            return Ok(meta);
        }
        let file = Arc::clone(file);
        let counters = &self.counters;
        let result = self
            .cache
            .entry(key.to_owned())
            .and_try_compute_with(|current| async move {
                if let Some(entry) = current {
                    if entry.value().identity == identity && entry.value().is_hashed() {
                        // Someone else hashed this version while we waited for the key lock.
                        return Ok::<_, io::Error>(Op::Nop);
                    }
                }
                let digest = match hint {
                    Some((d, true)) => d,
                    _ => {
                        let started = Instant::now();
                        let d = tokio::task::spawn_blocking(move || hash_file(&file, identity))
                            .await
                            .map_err(io::Error::other)??;
                        counters.count_digest(started);
                        d
                    }
                };
                Ok(Op::Put(Arc::new(FileMeta::new(
                    identity,
                    Some(digest),
                    None,
                    content_type,
                ))))
            })
            .await?;
        match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e)
                if e.value().identity == identity =>
            {
                Ok(e.into_value())
            }
            _ => Err(io::Error::other(
                "file changed while its metadata was computed",
            )),
        }
    }

    /// Runs moka's deferred housekeeping so counts are exact (stats endpoints only).
    pub async fn run_pending(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Drops the entry for `key` (admin eviction, replaced files).
    pub async fn evict(&self, key: &str) {
        self.cache.invalidate(key).await;
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            entries: self.cache.entry_count(),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            digests_computed: c.digests_computed.load(Ordering::Relaxed),
            digest_seconds: c.digest_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// SHA-256 of the first `identity.len` bytes of `file`, failing if the file changes meanwhile.
pub fn hash_file(file: &File, identity: FileIdentity) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < identity.len {
        let want = (identity.len - offset).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while hashing",
            ));
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    if identity.content_changed(&FileIdentity::of(&file.metadata()?)) {
        return Err(io::Error::other("file changed while hashing"));
    }
    Ok(hasher.finalize().into())
}

/// One precomputed digest, valid only for the exact identity it was computed on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    pub identity: FileIdentity,
    #[serde(with = "hex_digest")]
    pub digest: [u8; 32],
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    entries: HashMap<String, IndexEntry>,
}

/// Loads a digest index; a missing file is an empty index, a corrupt one is an error.
pub fn load_index(path: &Path) -> io::Result<HashMap<String, IndexEntry>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let idx: IndexFile = serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            Ok(idx.entries)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

/// Where `build_index` is, for progress output: files and bytes done of the totals, and the
/// file just hashed with its digest.
pub struct IndexProgress<'a> {
    pub files_done: usize,
    pub files_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub path: &'a str,
    pub digest: &'a [u8; 32],
}

/// Walks `root` (canonical), hashes every servable regular file, and writes the index
/// atomically (temp file + rename), calling `progress` after each file. Returns the number of
/// files indexed. A running server picks the new index up without a restart.
pub fn build_index(
    root: &Path,
    out: &Path,
    progress: &mut dyn FnMut(&IndexProgress<'_>),
) -> io::Result<usize> {
    let files = crate::storage::walk_files(root);
    let sizes: Vec<u64> = files
        .iter()
        .map(|k| std::fs::metadata(root.join(k)).map_or(0, |m| m.len()))
        .collect();
    let bytes_total = sizes.iter().sum();
    let mut entries = HashMap::new();
    let mut bytes_done = 0;
    for (i, key) in files.iter().enumerate() {
        let file = File::open(root.join(key))?;
        let identity = FileIdentity::of(&file.metadata()?);
        let digest = hash_file(&file, identity)?;
        bytes_done += identity.len;
        progress(&IndexProgress {
            files_done: i + 1,
            files_total: files.len(),
            bytes_done,
            bytes_total,
            path: key,
            digest: &digest,
        });
        entries.insert(key.clone(), IndexEntry { identity, digest });
    }
    let count = entries.len();
    let body = serde_json::to_vec_pretty(&IndexFile {
        version: 1,
        entries,
    })
    .map_err(io::Error::other)?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, out)?;
    Ok(count)
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(String::deserialize(d)?, &mut out)
            .map_err(|_| serde::de::Error::custom("digest must be 64 hex characters"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &Path) -> (Arc<File>, FileIdentity) {
        let f = File::open(p).unwrap();
        let m = f.metadata().unwrap();
        (Arc::new(f), FileIdentity::of(&m))
    }

    #[tokio::test]
    async fn hit_miss_and_rewrite_detection() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.mp4");
        std::fs::write(&p, b"version one").unwrap();
        let cache = MetadataCache::new(100, Duration::from_secs(60), HashMap::new());
        let (f, id) = open(&p);
        let m1 = cache.get("a.mp4", &f, id, false).await.unwrap();
        assert_eq!(m1.content_type, "video/mp4");
        let m1b = cache.get("a.mp4", &f, id, false).await.unwrap();
        assert_eq!(m1.etag(), m1b.etag());
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(cache.stats().digests_computed, 1);

        // Same size, mtime restored: ctime still moves, so the digest is recomputed.
        let old_mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&p, b"version two").unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old_mtime)
            .unwrap();
        let (f2, id2) = open(&p);
        assert_eq!(id2.len, id.len);
        assert_eq!(id2.mtime_ns, id.mtime_ns);
        let m2 = cache.get("a.mp4", &f2, id2, false).await.unwrap();
        assert_ne!(m1.etag(), m2.etag());
        assert_eq!(cache.stats().digests_computed, 2);
    }

    #[tokio::test]
    async fn concurrent_misses_hash_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        std::fs::write(&p, vec![7u8; 8 << 20]).unwrap();
        let cache = Arc::new(MetadataCache::new(
            100,
            Duration::from_secs(60),
            HashMap::new(),
        ));
        let (f, id) = open(&p);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, f) = (Arc::clone(&cache), Arc::clone(&f));
                tokio::spawn(async move {
                    let meta = cache.get("big.bin", &f, id, false).await.unwrap();
                    meta.etag().cloned()
                })
            })
            .collect();
        let mut tags = Vec::new();
        for t in tasks {
            tags.push(t.await.unwrap());
        }
        assert!(tags.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.stats().digests_computed, 1, "single-flight");
    }

    #[tokio::test]
    async fn index_round_trip_skips_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("s")).unwrap();
        std::fs::write(root.join("s/a.mp4"), b"hello").unwrap();
        std::fs::write(root.join(".hidden"), b"x").unwrap();
        let idx_path = root.join(".video-origin-index.json");
        assert_eq!(build_index(&root, &idx_path, &mut |_| {}).unwrap(), 1);
        let index = load_index(&idx_path).unwrap();
        let cache = MetadataCache::new(100, Duration::from_secs(60), index);
        let (f, id) = open(&root.join("s/a.mp4"));
        let meta = cache.get("s/a.mp4", &f, id, false).await.unwrap();
        assert_eq!(cache.stats().digests_computed, 0);
        let expected: [u8; 32] = Sha256::digest(b"hello").into();
        assert_eq!(meta.digest(), Some(expected));
        // A corrupt index is an error, not silently ignored.
        std::fs::write(&idx_path, b"{not json").unwrap();
        assert!(load_index(&idx_path).is_err());
    }

    #[tokio::test]
    async fn large_files_are_answered_at_once_and_hashed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        std::fs::write(&p, vec![9u8; 2 << 20]).unwrap();
        let cache =
            MetadataCache::with_hashers(100, Duration::from_secs(60), HashMap::new(), 1 << 20, 1);
        let (f, id) = open(&p);
        let first = cache.get("big.bin", &f, id, false).await.unwrap();
        assert!(
            first.digest().is_none() && first.etag().is_none(),
            "no waiting"
        );
        let expected: [u8; 32] = Sha256::digest(vec![9u8; 2 << 20]).into();
        let mut hashed = None;
        for _ in 0..200 {
            let m = cache.get("big.bin", &f, id, false).await.unwrap();
            if m.digest().is_some() {
                hashed = Some(m);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            hashed.expect("hashed in the background").digest(),
            Some(expected)
        );
        assert_eq!(cache.stats().digests_computed, 1);
        // Waiting for the digest (admin replace) hashes on the spot.
        let p2 = dir.path().join("other.bin");
        std::fs::write(&p2, vec![1u8; 2 << 20]).unwrap();
        let (f2, id2) = open(&p2);
        assert!(cache
            .get("other.bin", &f2, id2, true)
            .await
            .unwrap()
            .digest()
            .is_some());
    }
}
