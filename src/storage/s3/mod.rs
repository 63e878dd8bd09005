//! The s3 backend: the library in an S3-compatible bucket, shared by any number of replicas.
//!
//! - Lookup is a `HeadObject` (never a GET), cached in moka for `metadata_ttl_secs`; a 404 is
//!   cached for `negative_ttl_secs`. Concurrent lookups of one key share one HEAD.
//! - A body is ranged GETs of exactly the bytes asked for, each pinned with `If-Match` to the
//!   store ETag the lookup saw. A reader task hands chunks over a one-chunk channel, so a
//!   viewer that stops reading stops the GET too (the store's connection is left unread).
//! - The first GET happens before the response head is sent: a store that fails (after the
//!   SDK's retries) gives 503 with `Retry-After`, and a version replaced between lookup and
//!   GET makes the pipeline look up again. A failure later ends the body short.
//! - Reachability: every call's outcome, and a `HeadBucket` from the readiness watch, set
//!   whether the store answers; `/readyz` says 503 while it does not.

pub mod client;
pub mod connector;
pub mod index;
pub mod object;
pub mod upload;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use moka::future::Cache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use self::client::{classify, StoreError};
use self::object::S3Object;
use super::body::{ChunkStream, OriginBody};
use super::path::AssetPath;
use super::segment::Segment;
use super::LookupError;
use crate::config::S3Settings;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreCallLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOperationLabels {
    pub operation: &'static str,
}

/// The store's metrics; `observe::metrics` registers them.
#[derive(Clone)]
pub struct StoreMetrics {
    pub calls: Family<StoreCallLabels, Counter>,
    pub latency: Family<StoreOperationLabels, Histogram>,
    pub bytes_read: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            calls: Family::default(),
            // 1 ms .. ~16 s.
            latency: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.001, 2.0, 15,
                ))
            }),
            bytes_read: Counter::default(),
        }
    }
}

impl StoreMetrics {
    fn record(&self, operation: &'static str, started: Instant, outcome: &'static str) {
        self.calls
            .get_or_create(&StoreCallLabels { operation, outcome })
            .inc();
        self.latency
            .get_or_create(&StoreOperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The store and what it shares between calls.
struct Shared {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    reachable: AtomicBool,
    metrics: StoreMetrics,
}

impl Shared {
    /// Records one call's outcome (metrics, reachability) and passes the result on.
    fn note<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.record(operation, started, outcome);
        let reachable = !matches!(
            result,
            Err(StoreError::Failed {
                reachable: false,
                ..
            })
        );
        if self.reachable.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                tracing::info!(
                    bucket = self.bucket.as_str(),
                    "object store reachable again"
                );
            } else {
                tracing::warn!(
                    bucket = self.bucket.as_str(),
                    operation,
                    "object store unreachable"
                );
            }
        }
        result
    }

    async fn head(&self, key: &str) -> Result<S3Object, StoreError> {
        let started = Instant::now();
        let got = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e));
        let got = self.note("head", started, got)?;
        let digest = got
            .metadata()
            .and_then(|m| m.get(object::DIGEST_FIELD))
            .and_then(|v| object::parse_digest(v));
        let store_etag = got.e_tag().unwrap_or_default().to_string();
        let modified = got
            .last_modified()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(S3Object {
            key: key.to_owned(),
            len: got.content_length().unwrap_or(0).max(0) as u64,
            modified,
            etag: object::validator(digest.as_ref(), &store_etag),
            store_etag,
            version_id: got.version_id().map(str::to_owned),
            digest,
            content_type: crate::http::content_type::content_type_for(key),
        })
    }

    /// A ranged GET of `start..end` of exactly `object`'s version.
    async fn get(
        &self,
        object: &S3Object,
        start: u64,
        end: u64,
    ) -> Result<aws_sdk_s3::primitives::ByteStream, StoreError> {
        let started = Instant::now();
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object.key)
            .range(object::range_header(start, end));
        req = match &object.version_id {
            Some(v) => req.version_id(v),
            None => req.if_match(&object.store_etag),
        };
        let got = req.send().await.map_err(|e| classify(&e));
        Ok(self.note("get", started, got)?.body)
    }
}

/// The s3 backend.
pub struct S3Store {
    shared: Arc<Shared>,
    /// The runtime every store call runs on (see `client`). `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    meta: Option<Cache<String, Arc<S3Object>>>,
    missing: Option<Cache<String, ()>>,
    pub part_size: usize,
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; let it wind down on its own threads.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Store {
    /// Builds the client on the store's own runtime (no network use yet).
    pub fn new(s: &S3Settings, metadata_capacity: u64) -> io::Result<S3Store> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()?;
        // A fresh thread: `block_on` must not run inside the caller's runtime, if it has one.
        let client = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(client::build(s)))
                .join()
                .map_err(|_| io::Error::other("building the S3 client panicked"))
        })??;
        let ttl = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        Ok(S3Store {
            shared: Arc::new(Shared {
                client,
                bucket: s.bucket.clone(),
                prefix: s.prefix.clone(),
                reachable: AtomicBool::new(true),
                metrics: StoreMetrics::default(),
            }),
            runtime: Some(runtime),
            meta: ttl(s.metadata_ttl_secs).map(|t| {
                Cache::builder()
                    .max_capacity(metadata_capacity)
                    .time_to_live(t)
                    .build()
            }),
            missing: ttl(s.negative_ttl_secs).map(|t| {
                Cache::builder()
                    .max_capacity(metadata_capacity)
                    .time_to_live(t)
                    .build()
            }),
            part_size: (s.part_size_mib as usize) << 20,
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .handle()
    }

    /// Runs `work` on the store's runtime and waits for it from wherever the caller is.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.handle().spawn(work).await.unwrap_or_else(|e| {
            Err(StoreError::Failed {
                code: "Internal".into(),
                message: format!("store task failed: {e}"),
                reachable: true,
            })
        })
    }

    pub fn bucket(&self) -> &str {
        &self.shared.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    pub fn key(&self, asset: &str) -> String {
        object::key(&self.shared.prefix, asset)
    }

    /// Whether the last store call (or probe) reached the store.
    pub fn reachable(&self) -> bool {
        self.shared.reachable.load(Ordering::Relaxed)
    }

    /// A `HeadBucket`, blocking (for startup and the readiness watch thread): `Ok` when the
    /// bucket answers; the store's error code otherwise.
    pub fn probe_blocking(&self) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        let work = async move {
            let started = Instant::now();
            let got = shared
                .client
                .head_bucket()
                .bucket(&shared.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| match classify(&e) {
                    // HeadBucket has no body: a 404 here means the bucket.
                    StoreError::NotFound => StoreError::Failed {
                        code: "NoSuchBucket".into(),
                        message: String::new(),
                        reachable: true,
                    },
                    other => other,
                });
            shared.note("head_bucket", started, got)
        };
        let rt = self.handle().clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || rt.block_on(work))
                .join()
                .unwrap_or_else(|_| {
                    Err(StoreError::Failed {
                        code: "Internal".into(),
                        message: "probe panicked".into(),
                        reachable: true,
                    })
                })
        })
    }

    /// The object at `asset` (cached), or why not.
    pub async fn head(&self, asset: &str) -> Result<Arc<S3Object>, StoreError> {
        if let Some(missing) = &self.missing {
            if missing.get(asset).await.is_some() {
                return Err(StoreError::NotFound);
            }
        }
        let fetch = {
            let shared = Arc::clone(&self.shared);
            let key = self.key(asset);
            self.run(async move { shared.head(&key).await.map(Arc::new) })
        };
        let found = match &self.meta {
            Some(meta) => meta
                .try_get_with(asset.to_owned(), fetch)
                .await
                .map_err(|e: Arc<StoreError>| (*e).clone()),
            None => fetch.await,
        };
        if let (Err(StoreError::NotFound), Some(missing)) = (&found, &self.missing) {
            missing.insert(asset.to_owned(), ()).await;
        }
        found
    }

    /// A body of `segments` of exactly `object`'s version. The first ranged GET has its
    /// response head before this returns.
    pub async fn open_body(
        &self,
        object: Arc<S3Object>,
        segments: Vec<Segment>,
    ) -> Result<OriginBody, StoreError> {
        let len: u64 = segments.iter().map(Segment::len).sum();
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&self.shared);
        self.handle()
            .spawn(pump(shared, object, segments, tx, started_tx));
        match started_rx.await {
            Ok(Ok(())) => Ok(OriginBody::Chunks(ChunkStream::new(rx, len))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Failed {
                code: "Internal".into(),
                message: "store reader stopped".into(),
                reachable: true,
            }),
        }
    }

    /// Forgets the cached metadata of `asset`.
    pub async fn evict(&self, asset: &str) {
        if let Some(meta) = &self.meta {
            meta.invalidate(asset).await;
        }
        if let Some(missing) = &self.missing {
            missing.invalidate(asset).await;
        }
    }

    /// Deletes `asset`'s object; `NotFound` when there is none.
    pub async fn delete(&self, asset: &str) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        let key = self.key(asset);
        self.run(async move {
            shared.head(&key).await?;
            let started = Instant::now();
            let done = shared
                .client
                .delete_object()
                .bucket(&shared.bucket)
                .key(&key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&e));
            shared.note("delete", started, done)
        })
        .await
    }

    /// Every servable asset path in the bucket (under the prefix; dot-paths skipped).
    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.run(async move {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let started = Instant::now();
                let page = shared
                    .client
                    .list_objects_v2()
                    .bucket(&shared.bucket)
                    .prefix(&shared.prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| classify(&e));
                let page = shared.note("list", started, page)?;
                for o in page.contents() {
                    let Some(rel) = o.key().and_then(|k| k.strip_prefix(shared.prefix.as_str()))
                    else {
                        continue;
                    };
                    if crate::storage::path::normalize(rel).is_ok() && !rel.ends_with('/') {
                        out.push(rel.to_owned());
                    }
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }
}

/// The reader task of one body: segments in order; the first GET's outcome goes to `started`
/// before any byte is sent.
async fn pump(
    shared: Arc<Shared>,
    object: Arc<S3Object>,
    segments: Vec<Segment>,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    started: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
) {
    let mut started = Some(started);
    let first_file = segments
        .iter()
        .position(|s| matches!(s, Segment::File { .. }));
    let mut first = match (first_file, &segments.get(first_file.unwrap_or(0))) {
        (Some(_), Some(Segment::File { start, end })) => {
            match shared.get(&object, *start, *end).await {
                Ok(body) => Some(body),
                Err(e) => {
                    if let Some(s) = started.take() {
                        let _ = s.send(Err(e));
                    }
                    return;
                }
            }
        }
        _ => None,
    };
    if let Some(s) = started.take() {
        if s.send(Ok(())).is_err() {
            return;
        }
    }
    for segment in segments {
        let (start, end) = match segment {
            Segment::Bytes(b) => {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
                continue;
            }
            Segment::File { start, end } => (start, end),
        };
        let body = match first.take() {
            Some(body) => body,
            None => match shared.get(&object, start, end).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(key = object.key.as_str(), error = %e, "store read failed mid-response");
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return;
                }
            },
        };
        if !copy_range(&shared, &object, body, end - start, &tx).await {
            return;
        }
    }
}

/// Streams one GET's bytes into `tx`; false when the body ended (error sent, or the viewer
/// left).
async fn copy_range(
    shared: &Shared,
    object: &S3Object,
    mut body: aws_sdk_s3::primitives::ByteStream,
    want: u64,
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> bool {
    let mut got = 0u64;
    loop {
        // Room in the channel first, then a chunk from the store: a stalled viewer leaves the
        // next chunk unread in the store's connection instead of held here.
        let Ok(permit) = tx.reserve().await else {
            return false;
        };
        match body.try_next().await {
            Ok(Some(chunk)) => {
                got += chunk.len() as u64;
                shared.metrics.bytes_read.inc_by(chunk.len() as u64);
                if got > want {
                    permit.send(Err(io::Error::other("store sent more bytes than asked")));
                    return false;
                }
                permit.send(Ok(chunk));
            }
            Ok(None) if got == want => return true,
            Ok(None) => {
                tracing::warn!(
                    key = object.key.as_str(),
                    got,
                    want,
                    "store body ended short"
                );
                permit.send(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "store body ended short",
                )));
                return false;
            }
            Err(e) => {
                tracing::warn!(key = object.key.as_str(), error = %e, "store body failed mid-stream");
                permit.send(Err(io::Error::other(e.to_string())));
                return false;
            }
        }
    }
}

impl super::Backend for S3Store {
    type Resource = Arc<S3Object>;

    async fn lookup(&self, asset: &AssetPath) -> Result<Arc<S3Object>, LookupError> {
        self.head(asset.as_str()).await.map_err(lookup_error)
    }

    async fn body(
        &self,
        resource: &Arc<S3Object>,
        segments: Vec<Segment>,
    ) -> Result<OriginBody, LookupError> {
        match self.open_body(Arc::clone(resource), segments).await {
            Ok(body) => Ok(body),
            Err(StoreError::Replaced) => {
                // Replaced since the lookup (here or on another replica): forget it, so the
                // pipeline's second lookup sees the new version.
                let asset = resource
                    .key
                    .strip_prefix(self.shared.prefix.as_str())
                    .unwrap_or(&resource.key)
                    .to_owned();
                self.evict(&asset).await;
                Err(LookupError::Changed)
            }
            Err(e) => Err(lookup_error(e)),
        }
    }

    async fn evict(&self, asset: &str) {
        S3Store::evict(self, asset).await
    }
}

impl super::Stored for Arc<S3Object> {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> SystemTime {
        self.modified
    }
    fn etag(&self) -> Option<&crate::http::etag::EntityTag> {
        self.etag.as_ref()
    }
    fn content_type(&self) -> &'static str {
        self.content_type
    }
}

fn lookup_error(e: StoreError) -> LookupError {
    match e {
        StoreError::NotFound => LookupError::NotFound,
        StoreError::Replaced => LookupError::Changed,
        other => LookupError::Failed(io::Error::other(format!("object store: {other}"))),
    }
}
