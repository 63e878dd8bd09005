//! Prometheus metrics (prometheus-client, the Prometheus project's Rust client).
//!
//! Events (requests, bytes, shed, tokens, invalidations, closed connections) are counted as
//! they happen; the hot ones are resolved to plain counters once at startup so a request costs
//! a few relaxed atomic adds to its thread's own slots (`sharded`), never a label lookup or a
//! lock. State that already lives elsewhere (active streams, cache counters, open descriptors)
//! is read at scrape time.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::sharded::{ShardedCounter, ShardedHistogram};

/// Route label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Asset,
    Health,
    Metrics,
    Admin,
    Other,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Asset,
        Route::Health,
        Route::Metrics,
        Route::Admin,
        Route::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Route::Asset => "asset",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Admin => "admin",
            Route::Other => "other",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Label values of the labelled counters, present from start (README *Metrics*).
pub const SHED_REASONS: [&str; 4] = ["global", "per_client", "queue_full", "queue_timeout"];
pub const CLOSE_REASONS: [&str; 4] = ["idle", "header_timeout", "write_stall", "over_limit"];
/// `ok` and every refusal reason of a signed link (`signing::Reason::as_str`).
pub const TOKEN_RESULTS: [&str; 9] = [
    "ok",
    "missing",
    "malformed",
    "unknown-key",
    "bad-signature",
    "wrong-scope",
    "wrong-ip",
    "not-yet-valid",
    "expired",
];
pub const SOCKET_CLOSE_REASONS: [&str; 6] = [
    "client_closed",
    "heartbeat_timeout",
    "write_stall",
    "oversize",
    "protocol_error",
    "refused",
];

/// Everything `/metrics` shows that is counted as it happens.
pub struct Metrics {
    registry: Registry,
    requests: Vec<[ShardedCounter; 5]>,
    bytes: Vec<ShardedCounter>,
    ttfb: ShardedHistogram,
    pub shed: Family<ReasonLabels, Counter>,
    pub tokens: Family<ResultLabels, Counter>,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub tls_reloads: Family<OutcomeLabels, Counter>,
    pub ws_closed: Family<ReasonLabels, Counter>,
    pub fd_exhaustion: Counter,
    pub fd_warnings: Counter,
    pub library_events: Counter,
    /// Open client connections (both listeners); a gauge kept by the server.
    pub connections: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("video_origin");
        let requests_family = Family::<RequestLabels, ShardedCounter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status class",
            requests_family.clone(),
        );
        let bytes_family = Family::<RouteLabels, ShardedCounter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent, by route",
            bytes_family.clone(),
        );
        // 0.1 ms .. ~3.3 s: page-cache hits are sub-millisecond, cold disk reads tens of ms.
        let ttfb = ShardedHistogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
        );
        registry.register(
            "time_to_first_byte_seconds",
            "From request head received to the first body byte handed to the socket (or to the head for empty bodies)",
            ttfb.clone(),
        );
        let shed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "shed_requests",
            "Streaming requests refused with 503 by load shedding, by reason",
            shed.clone(),
        );
        let tokens = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_verifications",
            "Signed-link checks on protected paths, by result (ok or the refusal reason)",
            tokens.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed_by_server",
            "Connections the server closed on its own, by reason (idle, header_timeout, write_stall, over_limit)",
            connections_closed.clone(),
        );
        let tls_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate reloads, by outcome",
            tls_reloads.clone(),
        );
        let ws_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "player_sockets_closed",
            "Player presence sockets ended, by reason (client_closed, heartbeat_timeout, write_stall, oversize, protocol_error, refused)",
            ws_closed.clone(),
        );
        let fd_exhaustion = Counter::default();
        registry.register(
            "fd_exhaustion",
            "File opens that failed with EMFILE/ENFILE (answered 503)",
            fd_exhaustion.clone(),
        );
        let fd_warnings = Counter::default();
        registry.register(
            "fd_warnings",
            "Warnings that open descriptors passed limits.fd_warn_percent of the limit (at most one a minute)",
            fd_warnings.clone(),
        );
        let library_events = Counter::default();
        registry.register(
            "library_events",
            "File-system notifications the library watcher received (writes, renames, new folders; never reads)",
            library_events.clone(),
        );
        // Every documented label value exists from the start (zero), so dashboards and alerts
        // see a series before the first event instead of "no data".
        for reason in SHED_REASONS {
            drop(shed.get_or_create(&ReasonLabels { reason }));
        }
        for reason in CLOSE_REASONS {
            drop(connections_closed.get_or_create(&ReasonLabels { reason }));
        }
        for result in TOKEN_RESULTS {
            drop(tokens.get_or_create(&ResultLabels { result }));
        }
        for outcome in ["ok", "error"] {
            drop(tls_reloads.get_or_create(&OutcomeLabels { outcome }));
        }
        for reason in SOCKET_CLOSE_REASONS {
            drop(ws_closed.get_or_create(&ReasonLabels { reason }));
        }
        let requests = Route::ALL
            .iter()
            .map(|r| {
                CLASSES.map(|c| {
                    requests_family
                        .get_or_create(&RequestLabels {
                            route: r.as_str(),
                            status: c,
                        })
                        .clone()
                })
            })
            .collect();
        let bytes = Route::ALL
            .iter()
            .map(|r| {
                bytes_family
                    .get_or_create(&RouteLabels { route: r.as_str() })
                    .clone()
            })
            .collect();
        Metrics {
            registry,
            requests,
            bytes,
            ttfb,
            shed,
            tokens,
            connections_closed,
            tls_reloads,
            ws_closed,
            fd_exhaustion,
            fd_warnings,
            library_events,
            connections: AtomicI64::new(0),
        }
    }

    /// One finished response.
    pub fn response(&self, route: Route, status: u16, bytes: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        // Route's discriminants are the positions in Route::ALL, which built the tables.
        let r = route as usize;
        self.requests[r][class].inc();
        if bytes > 0 {
            self.bytes[r].inc_by(bytes);
        }
    }

    pub fn first_byte(&self, seconds: f64) {
        self.ttfb.observe(seconds);
    }

    pub fn count(family: &Family<ReasonLabels, Counter>, reason: &'static str) {
        family.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn count_outcome(family: &Family<OutcomeLabels, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn count_result(family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }

    /// Adds the invalidation outbox's metrics (invalidation.enabled).
    pub fn register_outbox(&mut self, m: &crate::cdn::outbox::OutboxMetrics) {
        self.registry.register(
            "invalidation_sends",
            "CDN invalidation calls, by CDN and outcome (accepted, retry, failed)",
            m.sends.clone(),
        );
        self.registry.register(
            "invalidation_queue_depth",
            "Invalidations not yet accepted by the CDN (queued or sent), by CDN",
            m.depth.clone(),
        );
        self.registry.register(
            "invalidation_oldest_queued_seconds",
            "Age of the oldest invalidation not yet accepted by the CDN, by CDN",
            m.oldest.clone(),
        );
    }

    /// Adds the object store's metrics (s3 backend).
    pub fn register_store(&mut self, m: &crate::storage::s3::StoreMetrics) {
        self.registry.register(
            "store_requests",
            "Object store calls, by operation (head, get, put, upload_part, copy, delete, list, head_bucket) and outcome",
            m.calls.clone(),
        );
        self.registry.register(
            "store_request_seconds",
            "Object store call latency to the response head, by operation",
            m.latency.clone(),
        );
        self.registry.register(
            "store_read_bytes",
            "Bytes read from the object store for response bodies",
            m.bytes_read.clone(),
        );
    }

    /// The OpenMetrics text: event metrics plus `live` values read now.
    pub fn render(&self, live: &Live) -> String {
        let mut out = String::with_capacity(8192);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let mut now = Registry::with_prefix("video_origin");
        now.register(
            "active_streams",
            "Streaming responses in progress",
            ConstGauge::new(live.active_streams as i64),
        );
        now.register(
            "queued_streams",
            "Streaming requests waiting for a slot in the bounded queue",
            ConstGauge::new(live.queued_streams as i64),
        );
        now.register(
            "connections",
            "Open client connections",
            ConstGauge::new(self.connections.load(Ordering::Relaxed)),
        );
        now.register(
            "metadata_cache_hits",
            "Metadata cache hits",
            ConstCounter::new(live.cache_hits),
        );
        now.register(
            "metadata_cache_misses",
            "Metadata cache misses",
            ConstCounter::new(live.cache_misses),
        );
        now.register(
            "metadata_cache_entries",
            "Files whose metadata is cached",
            ConstGauge::new(live.cache_entries as i64),
        );
        now.register(
            "open_file_cache_entries",
            "Asset files held open between requests",
            ConstGauge::new(live.open_files as i64),
        );
        now.register(
            "memory_copy_bytes",
            "Bytes held by sealed in-memory copies of small files (streaming.memory_copies_bytes)",
            ConstGauge::new(i64::try_from(live.memory_copy_bytes).unwrap_or(i64::MAX)),
        );
        now.register(
            "digest_computations",
            "Content digests (ETags) computed by hashing a file",
            ConstCounter::new(live.digests),
        );
        now.register(
            "digest_seconds",
            "Time spent hashing files for ETags",
            ConstCounter::new(live.digest_seconds),
        );
        now.register(
            "open_fds",
            "Open file descriptors of the process",
            ConstGauge::new(live.open_fds as i64),
        );
        now.register(
            "max_fds",
            "Soft RLIMIT_NOFILE",
            ConstGauge::new(live.max_fds as i64),
        );
        now.register(
            "ready",
            "1 when /readyz answers 200",
            ConstGauge::new(i64::from(live.ready)),
        );
        now.register(
            "viewers_live",
            "Player sessions with a live presence socket",
            ConstGauge::new(live.viewers_live as i64),
        );
        now.register(
            "player_stalls",
            "Playback stalls reported by player pages",
            ConstCounter::new(live.player_stalls),
        );
        now.register(
            "player_bad_frames",
            "Malformed presence frames ignored",
            ConstCounter::new(live.ws_bad_frames),
        );
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &now);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// Values read from the running server at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Live {
    pub active_streams: usize,
    pub queued_streams: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_entries: u64,
    pub open_files: u64,
    pub memory_copy_bytes: u64,
    pub digests: u64,
    pub digest_seconds: f64,
    pub open_fds: usize,
    pub max_fds: u64,
    pub ready: bool,
    pub viewers_live: usize,
    pub player_stalls: u64,
    pub ws_bad_frames: u64,
}

/// Open descriptors of this process (entries of /proc/self/fd, minus the one reading it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// The soft open-file limit.
pub fn max_fds() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    }
}

/// `text/plain; version=0.0.4` is what every Prometheus understands; the OpenMetrics type lets
/// newer ones parse `_total`/EOF strictly. We emit OpenMetrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == series).then(|| v.parse().ok())?
        })
    }

    #[test]
    fn counts_render() {
        let m = Metrics::new();
        m.response(Route::Asset, 206, 1000);
        m.response(Route::Asset, 206, 24);
        m.response(Route::Health, 200, 3);
        m.response(Route::Asset, 503, 0);
        Metrics::count(&m.shed, "global");
        m.first_byte(0.0005);
        let text = m.render(&Live {
            active_streams: 3,
            cache_hits: 7,
            ..Live::default()
        });
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("video_origin_requests_total{route=\"asset\",status=\"2xx\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            v("video_origin_requests_total{route=\"asset\",status=\"5xx\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("video_origin_response_bytes_total{route=\"asset\"}"),
            Some(1024.0)
        );
        assert_eq!(
            v("video_origin_shed_requests_total{reason=\"global\"}"),
            Some(1.0)
        );
        assert_eq!(v("video_origin_active_streams"), Some(3.0));
        assert_eq!(v("video_origin_metadata_cache_hits_total"), Some(7.0));
        assert_eq!(
            v("video_origin_time_to_first_byte_seconds_count"),
            Some(1.0)
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# TYPE video_origin_requests ").count(), 1);
    }
}
