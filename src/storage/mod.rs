//! Storage: the seam between the pipeline and where the bytes live.
//!
//! The pipeline asks a [`Backend`] for "the resource at this asset path" ([`Backend::lookup`]:
//! size, modification time, content digest, type; pinned to one version) and for "a body for
//! these byte ranges of exactly that version" ([`Backend::body`]). `local` (the file system) is
//! the first backend; the open-file cache, the inline page-cache reads and the digest index are
//! its own business. `path` (safe asset paths) and `segment`/`body` (what a response body is
//! made of) are shared by every backend.

pub mod body;
pub mod local;
pub mod path;
pub mod segment;

use std::future::Future;
use std::io;
use std::time::SystemTime;

use crate::http::etag::EntityTag;
use body::OriginBody;
use path::AssetPath;
use segment::Segment;

/// The backend the server runs on (the file system until another is configured).
pub type Store = local::AssetStore;

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
    /// Any other fault of ours: 503.
    Failed(io::Error),
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
    /// version changes underneath, the body ends short rather than mixing versions.
    fn body(&self, resource: &Self::Resource, segments: Vec<Segment>) -> OriginBody;

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
