//! video-origin: a CDN origin server for video.
//!
//! Flow of a request, one way only: `routes` → `serve` (pipeline) → `storage::path` (safe
//! path) → `storage::metadata` (moka cache, content-hash ETag) → `http` (pure decision and
//! headers) → `storage::body` (bounded stream). `http` depends on nothing else in the crate.

pub mod config;
pub mod http;
pub mod logbuf;
pub mod routes;
pub mod serve;
pub mod server;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::http::cache_policy::CachePolicy;
use crate::storage::files::AssetStore;
use crate::storage::metadata::{load_index, MetadataCache};

/// Everything a request needs, built once from validated settings and shared as an `Arc`.
pub struct App {
    pub settings: Arc<Settings>,
    /// Open files and their metadata, under the canonical asset root.
    pub store: AssetStore,
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
        let metadata = MetadataCache::new(
            settings.metadata.capacity,
            Duration::from_secs(settings.metadata.ttl_secs),
            index,
        );
        Ok(App {
            store: AssetStore::new(
                root,
                metadata,
                settings.metadata.open_files,
                Duration::from_secs(settings.metadata.open_file_idle_secs),
            ),
            policy,
            settings,
        })
    }

    /// Hashes every servable file in the background (metadata.warm_up).
    pub fn spawn_warm_up(self: &Arc<Self>) {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let root = Arc::clone(&app.store.root);
            let files = tokio::task::spawn_blocking(move || storage::walk_files(&root))
                .await
                .unwrap_or_default();
            let mut warmed = 0usize;
            for rel in files {
                // normalize() decodes percent-escapes, so a literal `%` in a name is escaped first.
                let Ok(asset) = storage::path::normalize(&rel.replace('%', "%25")) else {
                    continue;
                };
                if app.store.open(&asset).await.is_ok() {
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
