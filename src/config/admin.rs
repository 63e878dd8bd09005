//! `[admin]` and `[invalidation]`: the admin API and the CDN invalidations it makes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::section::{Secret, Section};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(deserialize_with = "super::server::listen_address")]
    pub listen: SocketAddr,
    /// Bearer tokens by id (the id appears in audit logs, the token never). The admin listener
    /// starts only when at least one is set.
    #[serde(default)]
    pub tokens: BTreeMap<String, Secret>,
    pub max_body_bytes: usize,
    /// Largest upload accepted by PUT /admin/assets/{path}.
    pub max_upload_bytes: u64,
    /// Uploads in progress at once; one more is answered 503 with `Retry-After`. On the s3
    /// backend each holds up to one part in memory, so this bounds upload memory.
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
}

fn default_max_concurrent_uploads() -> usize {
    4
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidationSettings {
    pub enabled: bool,
    #[serde(default)]
    pub distribution_id: String,
    pub region: String,
    /// Optional endpoint (an emulator, a VPC endpoint); empty = AWS.
    #[serde(default)]
    pub endpoint_url: String,
    /// Static credentials; empty = the standard chain (env, profile, IMDS).
    #[serde(default = "empty_secret")]
    pub access_key_id: Secret,
    #[serde(default = "empty_secret")]
    pub secret_access_key: Secret,
    pub max_paths_per_request: usize,
    /// Attempts per AWS call, with exponential backoff (SDK standard retry mode).
    pub max_attempts: u32,
    /// The CDNs to invalidate, each with its own queue: `cloudfront`, `cloudflare`.
    #[serde(default = "default_cdns")]
    pub cdn: Vec<CdnKind>,
    /// The folder of the outbox journals (one file per process, fsynced before an admin call
    /// is answered; a dead process's file is taken over by a live one). "" = the asset root
    /// (fs backend); required with the s3 backend.
    #[serde(default)]
    pub journal_dir: String,
    /// Paths queued within this window go out as one request (within the CDN's limits).
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// Longest wait between two attempts of a queued invalidation.
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    #[serde(default)]
    pub cloudflare: CloudflarePurgeSettings,
}

/// A CDN the outbox sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CdnKind {
    Cloudfront,
    Cloudflare,
}

impl CdnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CdnKind::Cloudfront => "cloudfront",
            CdnKind::Cloudflare => "cloudflare",
        }
    }
}

/// What a replaced path is purged by on Cloudflare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeBy {
    /// The public URL (`base_url` + mount + path).
    Url,
    /// The `file:<path>` cache tag the cache rules emit.
    Tag,
}

/// `[invalidation.cloudflare]`: the zone's purge API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflarePurgeSettings {
    /// The zone id (32 hex digits, from the zone's Overview page).
    #[serde(default)]
    pub zone_id: String,
    /// An API token with the Zone › Cache Purge permission (from the environment:
    /// VIDEO_ORIGIN_INVALIDATION__CLOUDFLARE__API_TOKEN).
    #[serde(default = "empty_secret")]
    pub api_token: Secret,
    /// The API base; plain http only to a loopback address (a test stand-in).
    #[serde(default = "default_cloudflare_api")]
    pub api_url: String,
    /// Scheme and host of the public URLs to purge; "" = signing.public_base_url.
    #[serde(default)]
    pub base_url: String,
    #[serde(default = "default_purge_by")]
    pub purge_by: Vec<PurgeBy>,
    /// Operations (URLs, tags or prefixes) per purge call: 100 on every plan (500 for URLs on
    /// Enterprise).
    #[serde(default = "default_cloudflare_ops")]
    pub max_operations_per_request: usize,
}

impl Default for CloudflarePurgeSettings {
    fn default() -> Self {
        CloudflarePurgeSettings {
            zone_id: String::new(),
            api_token: empty_secret(),
            api_url: default_cloudflare_api(),
            base_url: String::new(),
            purge_by: default_purge_by(),
            max_operations_per_request: default_cloudflare_ops(),
        }
    }
}

fn default_cdns() -> Vec<CdnKind> {
    vec![CdnKind::Cloudfront]
}
fn default_batch_window_ms() -> u64 {
    500
}
fn default_max_backoff_secs() -> u64 {
    60
}
fn default_cloudflare_api() -> String {
    "https://api.cloudflare.com/client/v4".into()
}
fn default_purge_by() -> Vec<PurgeBy> {
    vec![PurgeBy::Url, PurgeBy::Tag]
}
fn default_cloudflare_ops() -> usize {
    100
}

/// Whether `url` is `http(s)://` to a loopback host (where plain http is acceptable).
fn loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

fn empty_secret() -> Secret {
    Secret::new("")
}

impl Section for AdminSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        for (id, token) in &self.tokens {
            if token.expose().len() < 32 {
                return Err((
                    "admin.tokens",
                    format!("token `{id}` must be at least 32 characters"),
                ));
            }
        }
        if self.max_upload_bytes == 0 {
            return Err(("admin.max_upload_bytes", "must be at least 1".into()));
        }
        if !(1..=1024).contains(&self.max_concurrent_uploads) {
            return Err((
                "admin.max_concurrent_uploads",
                "must be between 1 and 1024".into(),
            ));
        }
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            return Err((
                "admin.max_body_bytes",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }
        Ok(())
    }
}

impl Section for InvalidationSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let inv = self;
        let cloudfront = inv.cdn.contains(&CdnKind::Cloudfront);
        if inv.enabled && inv.cdn.is_empty() {
            return Err((
                "invalidation.cdn",
                "list at least one CDN (cloudfront, cloudflare) when invalidation.enabled = true"
                    .into(),
            ));
        }
        if !(10..=60_000).contains(&inv.batch_window_ms) {
            return Err((
                "invalidation.batch_window_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        if !(1..=3600).contains(&inv.max_backoff_secs) {
            return Err((
                "invalidation.max_backoff_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if inv.enabled && inv.cdn.contains(&CdnKind::Cloudflare) {
            let cf = &inv.cloudflare;
            if cf.zone_id.len() != 32 || !cf.zone_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err((
                    "invalidation.cloudflare.zone_id",
                    "must be the zone's 32-hex-digit id".into(),
                ));
            }
            if cf.api_token.expose().is_empty() {
                return Err((
                    "invalidation.cloudflare.api_token",
                    "required with cdn = cloudflare (a token with Zone > Cache Purge; set VIDEO_ORIGIN_INVALIDATION__CLOUDFLARE__API_TOKEN)".into(),
                ));
            }
            if cf
                .api_token
                .expose()
                .bytes()
                .any(|b| b <= b' ' || b >= 0x7f)
            {
                return Err((
                    "invalidation.cloudflare.api_token",
                    "contains spaces or control characters".into(),
                ));
            }
            if !cf.api_url.starts_with("https://") && !loopback_http(&cf.api_url) {
                return Err((
                    "invalidation.cloudflare.api_url",
                    "must be https:// (plain http only to a loopback address)".into(),
                ));
            }
            if !(cf.base_url.is_empty()
                || cf.base_url.starts_with("https://")
                || cf.base_url.starts_with("http://"))
            {
                return Err((
                    "invalidation.cloudflare.base_url",
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if cf.purge_by.is_empty() {
                return Err((
                    "invalidation.cloudflare.purge_by",
                    "list url, tag or both".into(),
                ));
            }
            if !(1..=500).contains(&cf.max_operations_per_request) {
                return Err((
                    "invalidation.cloudflare.max_operations_per_request",
                    "must be between 1 and 500".into(),
                ));
            }
        }
        if inv.enabled && cloudfront && inv.distribution_id.is_empty() {
            return Err((
                "invalidation.distribution_id",
                "required when invalidation.enabled = true".into(),
            ));
        }
        if !inv.distribution_id.is_empty()
            && !inv
                .distribution_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        {
            return Err((
                "invalidation.distribution_id",
                "must be letters and digits (e.g. E2QWRUHAPOMQZL)".into(),
            ));
        }
        if !(1..=3000).contains(&inv.max_paths_per_request) {
            return Err((
                "invalidation.max_paths_per_request",
                "must be between 1 and 3000".into(),
            ));
        }
        if !(1..=10).contains(&inv.max_attempts) {
            return Err((
                "invalidation.max_attempts",
                "must be between 1 and 10".into(),
            ));
        }
        if inv.access_key_id.expose().is_empty() != inv.secret_access_key.expose().is_empty() {
            return Err((
                "invalidation.secret_access_key",
                "set both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        if !inv.endpoint_url.is_empty()
            && !inv.endpoint_url.starts_with("http://")
            && !inv.endpoint_url.starts_with("https://")
        {
            return Err((
                "invalidation.endpoint_url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        Ok(())
    }
}
