//! `App`: everything a request needs, built once from validated settings and shared as an
//! `Arc` by the listeners, the routes and the handlers. It sits below the routes and above the
//! parts it owns (storage, signing, limits, metrics, sessions): nothing it owns imports it.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::http::cache_policy::CachePolicy;
use crate::storage::local::metadata::{load_index, MetadataCache};
use crate::storage::Store;

/// Everything a request needs, built once from validated settings and shared as an `Arc`.
///
/// Aligned to 128 bytes so that the `Arc`'s reference counts, which every request changes from
/// whichever worker serves it, sit in a cache line of their own instead of the one holding the
/// first fields every request reads (false sharing between the workers' cores).
#[repr(align(128))]
pub struct App {
    pub settings: Arc<Settings>,
    /// Open files and their metadata, under the canonical asset root.
    pub store: Store,
    pub policy: CachePolicy,
    /// Which paths need a signed link, and the verifiers.
    pub access: crate::signing::access::AccessPolicy,
    /// Mints signed links (CLI, admin API, library users).
    pub minter: crate::signing::links::LinkMinter,
    /// Caps concurrent streaming responses (load shedding).
    pub streams: crate::limits::StreamLimiter,
    /// Admin uploads in progress (admin.max_concurrent_uploads).
    pub uploads: tokio::sync::Semaphore,
    /// Set when shutdown begins: /readyz answers 503 so load balancers drain.
    pub draining: std::sync::atomic::AtomicBool,
    /// The last readiness seen (0 none yet, 1 ready, 2 not), so each change is logged once.
    ready_seen: std::sync::atomic::AtomicU8,
    /// The invalidation outbox (`serve` opens it when `invalidation.enabled`).
    pub outbox: std::sync::OnceLock<Arc<crate::cdn::outbox::Outbox>>,
    /// Its series, registered with the others at construction.
    outbox_metrics: Arc<crate::cdn::outbox::OutboxMetrics>,
    /// Counters and histograms behind `/metrics`.
    pub metrics: Arc<crate::observe::metrics::Metrics>,
    /// Who the client is behind trusted proxies.
    pub clients: crate::server::client::ClientResolver,
    /// Open connections on the public listener (for server.max_connections).
    pub public_connections: std::sync::atomic::AtomicUsize,
    /// Live player sessions (presence sockets).
    pub sessions: crate::player::sessions::Sessions,
    /// The player page, rendered for this mount and the configured player libraries.
    pub player_page: crate::player::Page,
    /// Problems that do not stop the server (logged at start, printed by `check-config`).
    pub warnings: Vec<String>,
}

impl App {
    /// Builds the app; fails when the asset root is unusable or the digest index is corrupt
    /// (fs), or the S3 client cannot be built (s3; the bucket is checked by `check_store`).
    pub fn new(settings: Arc<Settings>) -> anyhow::Result<App> {
        let store = Self::store(&settings)?;
        let policy = settings.cache_policy().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: key `cache.rules[{}].{}`: {}",
                e.index,
                e.field,
                e.reason
            )
        })?;
        let mut warnings: Vec<String> = settings.provenance.replaced.clone();
        warnings.extend(
            policy
                .warnings()
                .iter()
                .map(|w| format!("cache policy: {w}")),
        );
        let parts = settings.signing_parts().map_err(|(key, reason)| {
            anyhow::anyhow!("invalid configuration: key `{key}`: {reason}")
        })?;
        let access = crate::signing::access::AccessPolicy::compile(
            &settings.access.rules,
            parts.keys.clone(),
            parts.cloudflare.as_ref().map(|(secrets, rule)| {
                crate::signing::access::CloudflareCheck {
                    secrets: secrets.clone(),
                    rule: rule.clone(),
                }
            }),
            parts
                .akamai
                .as_ref()
                .map(|(keys, alg, param)| crate::signing::access::AkamaiCheck {
                    keys: keys.clone(),
                    algorithm: *alg,
                    param: param.clone(),
                }),
            settings.signing.skew_secs,
            settings.signing.max_ttl_secs,
        )
        .map_err(|(i, reason)| {
            anyhow::anyhow!("invalid configuration: key `access.rules[{i}]`: {reason}")
        })?;
        warnings.extend(access.warnings().iter().cloned());
        let minter = crate::signing::links::LinkMinter {
            keys: parts.keys,
            base_url: settings.public_base_url(),
            mount: settings.assets.mount.clone(),
            max_ttl: settings.signing.max_ttl_secs,
            cloudflare: parts.cloudflare.map(|(secrets, rule)| {
                crate::signing::links::CloudflareMint {
                    secret: secrets[0].clone(),
                    rule,
                }
            }),
            akamai: parts.akamai.map(|(keys, algorithm, param)| {
                crate::signing::links::AkamaiMint {
                    key: keys[0].clone(),
                    algorithm,
                    param,
                }
            }),
            cloudfront: parts.cloudfront.map(|(signer, base_url)| {
                crate::signing::links::CloudfrontMint { signer, base_url }
            }),
        };
        let trusted = crate::server::client::parse_ranges(&settings.proxy.trusted)
            .map_err(|r| anyhow::anyhow!("invalid configuration: key `proxy.trusted`: {r}"))?;
        let client_headers = settings
            .proxy
            .client_headers
            .iter()
            .map(|h| crate::server::client::ClientHeader::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| {
                anyhow::anyhow!("invalid configuration: key `proxy.client_headers`: {r}")
            })?;
        let libraries = crate::player::libraries::Libraries::load(&settings.player).map_err(
            |(key, reason)| anyhow::anyhow!("invalid configuration: key `{key}`: {reason}"),
        )?;
        let player_page = crate::player::page(&settings.assets.mount, libraries);
        let outbox_metrics = Arc::new(crate::cdn::outbox::OutboxMetrics::default());
        Ok(App {
            uploads: tokio::sync::Semaphore::new(settings.admin.max_concurrent_uploads),
            streams: crate::limits::StreamLimiter::with_queue(
                settings.limits.max_streams,
                settings.limits.max_streams_per_client,
                settings.limits.queue_max,
                Duration::from_millis(settings.limits.queue_wait_ms),
            ),
            metrics: Arc::new({
                let mut m = crate::observe::metrics::Metrics::new();
                if let Some(s3) = store.s3() {
                    m.register_store(s3.metrics());
                }
                if settings.invalidation.enabled {
                    m.register_outbox(&outbox_metrics);
                }
                m
            }),
            clients: crate::server::client::ClientResolver::new(trusted, client_headers),
            public_connections: std::sync::atomic::AtomicUsize::new(0),
            sessions: crate::player::sessions::Sessions::default(),
            player_page,
            draining: std::sync::atomic::AtomicBool::new(false),
            ready_seen: std::sync::atomic::AtomicU8::new(0),
            outbox: std::sync::OnceLock::new(),
            outbox_metrics,
            access,
            minter,
            store,
            policy,
            warnings,
            settings,
        })
    }

    /// The configured backend: the asset root with its digest index, or the bucket's client.
    fn store(settings: &Settings) -> anyhow::Result<Store> {
        if settings.storage.backend == crate::config::BackendKind::S3 {
            let s3 =
                crate::storage::s3::S3Store::new(&settings.storage.s3, settings.metadata.capacity)
                    .map_err(|e| anyhow::anyhow!("storage.s3: cannot build the S3 client: {e}"))?;
            return Ok(Store::S3(s3));
        }
        let root = settings.canonical_root().map_err(anyhow::Error::msg)?;
        let index_path = settings.index_path(&root);
        let index = load_index(&index_path).map_err(|e| {
            anyhow::anyhow!("cannot read digest index {}: {e}", index_path.display())
        })?;
        if !index.is_empty() {
            tracing::info!(entries = index.len(), path = %index_path.display(), "digest index loaded");
        }
        let metadata = MetadataCache::with_hashers(
            settings.metadata.capacity,
            Duration::from_secs(settings.metadata.ttl_secs),
            index,
            settings.metadata.inline_hash_max_bytes,
            settings.metadata.hash_threads,
        );
        Ok(Store::Local(crate::storage::local::AssetStore::new(
            root,
            metadata,
            settings.metadata.open_files,
            Duration::from_secs(settings.metadata.open_file_idle_secs),
            settings.streaming.read_size,
            crate::storage::local::snapshot::Budget::new(
                settings.streaming.memory_copies_bytes,
                settings.streaming.memory_copy_max_file,
            ),
        )))
    }

    /// For the s3 backend, that the bucket answers (startup fails fast otherwise, with the key
    /// and the store's error code). Nothing to do for fs (the root was checked by `new`).
    pub fn check_store(&self) -> anyhow::Result<()> {
        let Some(s3) = self.store.s3() else {
            return Ok(());
        };
        let from = &self.settings.provenance.s3_bucket;
        s3.probe_blocking().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: key `storage.s3.bucket` (from {from}): bucket \"{}\" is not usable: {e}",
                s3.bucket()
            )
        })?;
        tracing::info!(
            bucket = s3.bucket(),
            prefix = s3.prefix(),
            "serving from the object store"
        );
        Ok(())
    }

    /// Opens the invalidation journal and takes over what it holds (`serve`, before listening).
    /// An unusable journal location stops the server with the key; a journal a crash damaged
    /// does not (what was lost is logged).
    pub fn open_outbox(&self) -> anyhow::Result<()> {
        let inv = &self.settings.invalidation;
        if !inv.enabled {
            return Ok(());
        }
        let dir = if !inv.journal_dir.is_empty() {
            std::path::PathBuf::from(&inv.journal_dir)
        } else if let Some(local) = self.store.local() {
            local.root.to_path_buf()
        } else {
            anyhow::bail!(
                "invalid configuration: key `invalidation.journal_dir`: required with storage.backend = \"s3\" (a folder every replica shares, e.g. a ReadWriteMany volume)"
            );
        };
        if inv.cdn.contains(&crate::config::CdnKind::Cloudflare)
            && inv.cloudflare.base_url.is_empty()
            && inv
                .cloudflare
                .purge_by
                .contains(&crate::config::PurgeBy::Url)
        {
            if let Err(why) = self.settings.public_base_url() {
                anyhow::bail!(
                    "invalid configuration: key `invalidation.cloudflare.base_url`: needed to purge by URL ({why})"
                );
            }
        }
        let metrics = Arc::clone(&self.outbox_metrics);
        let (outbox, report) =
            crate::cdn::outbox::Outbox::open(&dir, inv, metrics).map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: key `invalidation.journal_dir`: cannot use {}: {e}",
                    dir.display()
                )
            })?;
        let path = outbox.journal_path();
        if report.torn_bytes > 0 {
            tracing::warn!(journal = %path.display(), bytes = report.torn_bytes, "invalidation journal: dropped an unfinished last record (a crash mid-write); everything before it is replayed");
        }
        if !report.damaged_lines.is_empty() {
            tracing::warn!(journal = %path.display(), lines = ?report.damaged_lines, "invalidation journal: skipped damaged records");
        }
        tracing::info!(journal = %path.display(), unfinished = outbox.unfinished(), cdns = ?inv.cdn.iter().map(|c| c.as_str()).collect::<Vec<_>>(), "invalidation outbox open");
        let _ = self.outbox.set(outbox);
        Ok(())
    }

    /// Starts the outbox's workers (inside the runtime).
    pub fn spawn_outbox(&self) {
        if let Some(outbox) = self.outbox.get() {
            outbox.spawn(
                self.settings.public_base_url().ok(),
                self.settings.assets.mount.clone(),
            );
        }
    }

    /// A warning when no access rule protects `path` (a link for it works, but so does the
    /// bare URL): `sign` prints it and `POST /admin/sign` returns it.
    pub fn unprotected_warning(&self, path: &str) -> Option<String> {
        let asset = self.minter.asset_path(path)?;
        (!self.access.protects(&asset)).then(|| {
            format!(
                "no access rule protects `{asset}`: it plays without a link too (see access.rules)"
            )
        })
    }

    /// Ready to take traffic: not draining, and the asset root is readable. A change from the
    /// last evaluation (probe, scrape or the watch below) is logged once, with its reason.
    pub fn is_ready(&self) -> bool {
        let not_ready = if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Some("draining".to_owned())
        } else {
            match &self.store {
                Store::Local(l) => std::fs::read_dir(l.root.as_path())
                    .err()
                    .map(|e| format!("asset root unreadable: {e}")),
                Store::S3(s) => (!s.reachable()).then(|| "object store unreachable".to_owned()),
            }
        };
        let now = if not_ready.is_some() { 2 } else { 1 };
        let before = self
            .ready_seen
            .swap(now, std::sync::atomic::Ordering::AcqRel);
        match (&not_ready, before != now) {
            (Some(reason), true) => tracing::warn!(
                reason = reason.as_str(),
                library = %self.store.describe(),
                "readiness: not ready (/readyz answers 503)"
            ),
            // The first evaluation at startup is no change worth a line.
            (None, true) if before != 0 => {
                tracing::info!("readiness: ready again (/readyz answers 200)")
            }
            _ => {}
        }
        not_ready.is_none()
    }

    /// Every `every`: evaluates readiness, so a change is logged even when nothing probes, and
    /// warns (at most once a minute) when open descriptors near the limit.
    pub fn spawn_health_watch(self: &Arc<Self>, every: Duration) {
        let app = Arc::clone(self);
        let mut warned: Option<std::time::Instant> = None;
        let spawned = std::thread::Builder::new()
            .name("health-watch".into())
            .spawn(move || loop {
                // The store is asked directly, so readiness recovers without any traffic.
                if let Some(s3) = app.store.s3() {
                    if let Err(e) = s3.probe_blocking() {
                        tracing::debug!(error = %e, "object store probe failed");
                    }
                }
                app.is_ready();
                app.check_descriptors(&mut warned);
                std::thread::sleep(every);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch readiness and descriptors");
        }
    }

    /// Warns when open descriptors pass `limits.fd_warn_percent` of the soft limit, unless it
    /// warned less than a minute ago.
    fn check_descriptors(&self, warned: &mut Option<std::time::Instant>) {
        let percent = u64::from(self.settings.limits.fd_warn_percent);
        let (open, limit) = (
            crate::observe::metrics::open_fds() as u64,
            crate::observe::metrics::max_fds(),
        );
        if percent == 0 || limit == 0 || open * 100 < limit * percent {
            return;
        }
        if warned.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *warned = Some(std::time::Instant::now());
        self.metrics.fd_warnings.inc();
        tracing::warn!(
            open,
            limit,
            percent,
            "file descriptors: {open} of {limit} in use (past limits.fd_warn_percent); new connections and file opens fail at the limit"
        );
    }

    /// The `/metrics` text, with live values read now.
    pub async fn render_metrics(&self) -> String {
        if let Some(outbox) = self.outbox.get() {
            outbox.refresh_gauges();
        }
        let cache = match self.store.local() {
            Some(l) => l.stats().await,
            None => Default::default(),
        };
        self.metrics.render(&crate::observe::metrics::Live {
            active_streams: self.streams.active(),
            queued_streams: self.streams.waiting(),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_entries: cache.entries,
            open_files: self.store.local().map_or(0, |l| l.open_entries()),
            memory_copy_bytes: self.store.local().map_or(0, |l| l.copy_bytes()),
            digests: cache.digests_computed,
            digest_seconds: cache.digest_seconds,
            open_fds: crate::observe::metrics::open_fds(),
            max_fds: crate::observe::metrics::max_fds(),
            ready: self.is_ready(),
            viewers_live: self.sessions.live(),
            player_stalls: self.sessions.stalls_total(),
            ws_bad_frames: self.sessions.bad_frames_total(),
        })
    }

    /// Watches the digest index file and puts a rewritten one in service (checked every few
    /// seconds: a stat), so `video-origin index` after publishing helps a running server.
    pub fn spawn_index_reload(self: &Arc<Self>, every: Duration) {
        let app = Arc::clone(self);
        let Some(local) = app.store.local() else {
            return;
        };
        let path = app.settings.index_path(&local.root);
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| crate::storage::local::metadata::FileIdentity::of(&m))
        };
        let mut seen = stamp(&path);
        let spawned = std::thread::Builder::new()
            .name("index-reload".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let now = stamp(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match load_index(&path) {
                    Ok(index) => {
                        tracing::info!(entries = index.len(), path = %path.display(), "digest index reloaded");
                        if let Some(local) = app.store.local() {
                            local.metadata.replace_index(index);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "digest index unreadable; keeping the one in service")
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch the digest index");
        }
    }

    /// Notices new and replaced files without a viewer asking (inotify, through `notify`): a
    /// file written and closed, or renamed into place, under the asset root is looked up at
    /// once, so a large one goes to the background hashers before anyone requests it. Where
    /// notifications are unavailable (a watch limit, a network file system that sends none),
    /// files are hashed on first request as before; that is logged.
    pub fn spawn_watcher(self: &Arc<Self>) {
        if self.store.local().is_none() {
            return;
        }
        let app = Arc::clone(self);
        // Watching a large library adds one watch per folder: done on the watcher's own thread
        // so it never delays startup. Files published before it is in place (the log says when)
        // are hashed on their first request, as without notifications.
        let spawned = std::thread::Builder::new()
            .name("library-watch".into())
            .spawn(move || watch_library(&app));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the library watcher");
        }
    }

    /// Hashes every servable file in the background (metadata.warm_up).
    pub fn spawn_warm_up(self: &Arc<Self>) {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let Some(local) = app.store.local() else {
                return;
            };
            let started = std::time::Instant::now();
            let root = Arc::clone(&local.root);
            let files = tokio::task::spawn_blocking(move || crate::storage::walk_files(&root))
                .await
                .unwrap_or_default();
            let mut warmed = 0usize;
            for rel in files {
                // normalize() decodes percent-escapes, so a literal `%` in a name is escaped first.
                let Ok(asset) = crate::storage::path::normalize(&rel.replace('%', "%25")) else {
                    continue;
                };
                if local.open(&asset, true).await.is_ok() {
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

/// The library watcher's thread: installs the watch, then looks up every file written and
/// closed or renamed into place under the root (small ones are hashed now, large ones queued
/// for the background hashers).
fn watch_library(app: &App) {
    let Some(local) = app.store.local() else {
        return;
    };
    let mut watch = match crate::storage::local::watch::LibraryWatch::new(&local.root) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the asset root: files are hashed when first requested");
            return;
        }
    };
    tracing::info!(root = %local.root.display(), folders = watch.folders(), "watching the asset root for new and replaced files");
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    loop {
        let changes = match watch.wait() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "library notifications stopped: files are hashed when first requested");
                return;
            }
        };
        app.metrics.library_events.inc_by(changes.events);
        if changes.overflowed {
            tracing::warn!("library notifications overflowed: files changed meanwhile are hashed when first requested");
        }
        for path in changes.files {
            let Some(asset) = path
                .strip_prefix(local.root.as_path())
                .ok()
                .and_then(|rel| rel.to_str())
                .and_then(|rel| crate::storage::path::normalize(&rel.replace('%', "%25")).ok())
            else {
                continue; // outside the root, not UTF-8, not a servable path
            };
            let noticed = rt.block_on(local.open(&asset, false)).is_ok();
            tracing::debug!(path = asset.as_str(), noticed, "library change");
        }
    }
}
