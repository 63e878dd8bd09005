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
        if inv.enabled && inv.distribution_id.is_empty() {
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
