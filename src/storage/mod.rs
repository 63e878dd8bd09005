//! Storage: the seam between the pipeline and where the bytes live.
//!
//! The pipeline asks a [`Backend`] for "the resource at this asset path" ([`Backend::lookup`]:
//! size, modification time, content digest, type; pinned to one version) and for "a body for
//! these byte ranges of exactly that version" ([`Backend::body`]). `local` (the file system) is
//! the first backend; the open-file cache, the inline page-cache reads and the digest index are
//! its own business. `path` (safe asset paths) and `segment`/`body` (what a response body is
//! made of) are shared by every backend. `s3` (an S3-compatible bucket) is the second.

pub mod body;
pub mod local;
pub mod path;
pub mod s3;
pub mod segment;

use std::future::Future;
use std::io;
use std::time::SystemTime;

use crate::http::etag::EntityTag;
use body::OriginBody;
use path::AssetPath;
use segment::Segment;

/// The backend the server runs on: `storage.backend`.
pub enum Store {
    Local(local::AssetStore),
    S3(s3::S3Store),
}

/// One version of one resource of either backend.
#[derive(Clone)]
pub enum Object {
    Local(local::OpenAsset),
    S3(std::sync::Arc<s3::object::S3Object>),
}

impl Stored for Object {
    fn len(&self) -> u64 {
        match self {
            Object::Local(o) => o.len(),
            Object::S3(o) => o.len(),
        }
    }
    fn modified(&self) -> SystemTime {
        match self {
            Object::Local(o) => o.modified(),
            Object::S3(o) => o.modified(),
        }
    }
    fn etag(&self) -> Option<&EntityTag> {
        match self {
            Object::Local(o) => o.etag(),
            Object::S3(o) => o.etag(),
        }
    }
    fn content_type(&self) -> &'static str {
        match self {
            Object::Local(o) => o.content_type(),
            Object::S3(o) => o.content_type(),
        }
    }
}

impl Store {
    /// The file-system store, when that is the backend.
    pub fn local(&self) -> Option<&local::AssetStore> {
        match self {
            Store::Local(l) => Some(l),
            Store::S3(_) => None,
        }
    }

    /// The object store, when that is the backend.
    pub fn s3(&self) -> Option<&s3::S3Store> {
        match self {
            Store::S3(s) => Some(s),
            Store::Local(_) => None,
        }
    }

    /// Where the library is, for logs: the root folder or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(l) => l.root.display().to_string(),
            Store::S3(s) => format!("s3://{}/{}", s.bucket(), s.prefix()),
        }
    }
}

impl Backend for Store {
    type Resource = Object;

    async fn lookup(&self, asset: &AssetPath) -> Result<Object, LookupError> {
        match self {
            Store::Local(l) => l.lookup(asset).await.map(Object::Local),
            // Boxed: the remote store's futures are large, and the fs path should not carry
            // their size in every request's state.
            Store::S3(s) => Box::pin(s.lookup(asset)).await.map(Object::S3),
        }
    }

    async fn body(
        &self,
        resource: &Object,
        segments: Vec<Segment>,
    ) -> Result<OriginBody, LookupError> {
        match (self, resource) {
            (Store::Local(l), Object::Local(o)) => l.body(o, segments).await,
            (Store::S3(s), Object::S3(o)) => Box::pin(s.body(o, segments)).await,
            _ => Err(LookupError::Failed(io::Error::other(
                "resource of another backend",
            ))),
        }
    }

    async fn evict(&self, asset: &str) {
        match self {
            Store::Local(l) => l.evict(asset).await,
            Store::S3(s) => Box::pin(Backend::evict(s, asset)).await,
        }
    }
}

/// What a lookup found: one version of one resource.
pub trait Stored {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn modified(&self) -> SystemTime;
    /// The strong validator: the content digest as an ETag; `None` while the digest is not
    /// known yet (the response then carries no ETag).
    fn etag(&self) -> Option<&EntityTag>;
    fn content_type(&self) -> &'static str;
}

/// Why a lookup gave no resource.
#[derive(Debug)]
pub enum LookupError {
    /// Missing, hidden, a folder, or outside the root: 404, and the client learns no more.
    NotFound,
    /// Out of file descriptors (or the backend's equivalent): 503, counted.
    Exhausted(io::Error),
    /// Any other fault of ours (or the store's, after retries): 503 with `Retry-After`.
    Failed(io::Error),
    /// The version looked up was replaced before its bytes were read: look up again.
    Changed,
}

/// Where assets live.
pub trait Backend: Send + Sync {
    /// One version of a resource, pinned: its body serves exactly the bytes it describes.
    type Resource: Stored + Send + Sync;

    /// The resource at `asset`, as it is now.
    fn lookup(
        &self,
        asset: &AssetPath,
    ) -> impl Future<Output = Result<Self::Resource, LookupError>> + Send;

    /// A bounded, backpressured body of `segments` of exactly `resource`'s version; if that
    /// version changes underneath, the body ends short rather than mixing versions. A backend
    /// that must ask a remote store has its first bytes' answer before this returns, so a
    /// failure is still a clean 503 (or `Changed`).
    fn body(
        &self,
        resource: &Self::Resource,
        segments: Vec<Segment>,
    ) -> impl Future<Output = Result<OriginBody, LookupError>> + Send;

    /// Forgets whatever is cached about `asset` (after a replace or delete).
    fn evict(&self, asset: &str) -> impl Future<Output = ()> + Send;
}

use std::path::{Path, PathBuf};

/// Relative paths (`/`-separated) of every servable regular file under `root`, skipping
/// dotfiles and dot-directories. Unreadable directories are skipped.
pub fn walk_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in entries.flatten() {
            if ent.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(ft) = ent.file_type() else { continue };
            let p = ent.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Some(rel) = p.strip_prefix(root).ok().and_then(Path::to_str) {
                    out.push(rel.to_owned());
                }
            }
        }
    }
    out.sort();
    out
}
