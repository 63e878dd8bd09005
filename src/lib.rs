//! video-origin: a CDN origin server for video.
//!
//! Flow of a request, one way only: `routes` → `serve` (pipeline) → `storage::path` (safe
//! path) → `storage::metadata` (moka cache, content-hash ETag) → `http` (pure decision and
//! headers) → `storage::body` (bounded stream). `http` depends on nothing else in the crate.

pub mod config;
pub mod http;
pub mod routes;
pub mod serve;
pub mod server;
pub mod storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::http::cache_policy::CachePolicy;
use crate::storage::metadata::{load_index, MetadataCache};

/// Everything a request needs, built once from validated settings and shared as an `Arc`.
pub struct App {
    pub settings: Arc<Settings>,
    /// Canonical asset root.
    pub root: Arc<PathBuf>,
    pub metadata: MetadataCache,
    pub policy: CachePolicy,
}

impl App {
    /// Builds the app; fails when the asset root is unusable or the digest index is corrupt.
    pub fn new(settings: Arc<Settings>) -> anyhow::Result<App> {
        let root = std::fs::canonicalize(&settings.assets.root).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: key `assets.root`: cannot use {}: {e}",
                settings.assets.root.display()
            )
        })?;
        if !root.is_dir() {
            anyhow::bail!(
                "invalid configuration: key `assets.root`: {} is not a directory",
                root.display()
            );
        }
        let index_path = settings.index_path(&root);
        let index = load_index(&index_path).map_err(|e| {
            anyhow::anyhow!("cannot read digest index {}: {e}", index_path.display())
        })?;
        if !index.is_empty() {
            tracing::info!(entries = index.len(), path = %index_path.display(), "digest index loaded");
        }
        let policy = settings.cache_policy().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: key `cache.rules[{}].{}`: {}",
                e.index,
                e.field,
                e.reason
            )
        })?;
        for w in policy.warnings() {
            tracing::warn!(cdn = ?policy.cdn(), "cache policy: {w}");
        }
        Ok(App {
            metadata: MetadataCache::new(
                settings.metadata.capacity,
                Duration::from_secs(settings.metadata.ttl_secs),
                index,
            ),
            root: Arc::new(root),
            policy,
            settings,
        })
    }

    /// Hashes every servable file in the background (metadata.warm_up).
    pub fn spawn_warm_up(self: &Arc<Self>) {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let root = Arc::clone(&app.root);
            let files = tokio::task::spawn_blocking(move || storage::walk_files(&root))
                .await
                .unwrap_or_default();
            let mut warmed = 0usize;
            for rel in files {
                let root = Arc::clone(&app.root);
                // normalize() decodes percent-escapes, so a literal `%` in a file name is escaped first.
                let asset = match storage::path::normalize(&rel.replace('%', "%25")) {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                let a = asset.clone();
                let Ok(Ok((file, meta))) =
                    tokio::task::spawn_blocking(move || storage::path::open_under_root(&root, &a))
                        .await
                else {
                    continue;
                };
                let id = storage::metadata::FileIdentity::of(&meta);
                let mtime = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                if app
                    .metadata
                    .get(asset.as_str(), &Arc::new(file), id, mtime)
                    .await
                    .is_ok()
                {
                    warmed += 1;
                }
            }
            tracing::info!(
                files = warmed,
                secs = started.elapsed().as_secs_f64(),
                "metadata warm-up done"
            );
        });
    }
}
