//! `[storage]`: where the library lives — the file system under `assets.root` (`fs`, the
//! default) or an S3-compatible bucket (`s3`, with `[storage.s3]`).

use serde::{Deserialize, Serialize};

use super::section::{Secret, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Fs,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: BackendKind,
    pub s3: S3Settings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix the library lives under ("" = the whole bucket; else ends with `/`).
    #[serde(default)]
    pub prefix: String,
    pub region: String,
    /// An S3-compatible store or an emulator; "" = AWS itself.
    #[serde(default)]
    pub endpoint_url: String,
    /// `https://host/bucket/key` instead of `https://bucket.host/key` (MinIO, Ceph, emulators).
    pub force_path_style: bool,
    /// Static credentials; empty = the standard chain (env, profile, web identity, IMDS).
    #[serde(default = "empty_secret")]
    pub access_key_id: Secret,
    #[serde(default = "empty_secret")]
    pub secret_access_key: Secret,
    pub connect_timeout_ms: u64,
    /// Per attempt: until the response head (metadata, or the first byte of a body).
    pub attempt_timeout_ms: u64,
    /// Attempts per store call (throttling, 5xx, timeouts), with exponential backoff.
    pub max_attempts: u32,
    /// How long a replica may keep serving an object's old metadata after a replace made
    /// elsewhere (admin API on another replica, another writer).
    pub metadata_ttl_secs: u64,
    /// How long a missing object stays a 404 without asking the store again.
    pub negative_ttl_secs: u64,
    /// Part size of multipart uploads (admin PUT); also the largest single PUT.
    pub part_size_mib: u64,
}

fn empty_secret() -> Secret {
    Secret::new("")
}

impl Section for StorageSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.backend != BackendKind::S3 {
            return Ok(());
        }
        let s3 = &self.s3;
        if s3.bucket.is_empty() {
            return Err((
                "storage.s3.bucket",
                "required when storage.backend = \"s3\"".into(),
            ));
        }
        // S3 bucket naming rules (lower-case letters, digits, dots, hyphens; 3 to 63 long).
        let ok_char =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
        if !(3..=63).contains(&s3.bucket.len()) || !s3.bucket.bytes().all(ok_char) {
            return Err((
                "storage.s3.bucket",
                "must be 3 to 63 lower-case letters, digits, dots or hyphens".into(),
            ));
        }
        if !s3.prefix.is_empty()
            && (s3.prefix.starts_with('/')
                || !s3.prefix.ends_with('/')
                || s3.prefix.split('/').any(|s| s == ".." || s == "."))
        {
            return Err((
                "storage.s3.prefix",
                "must be empty or like `videos/` (no leading slash, ends with a slash)".into(),
            ));
        }
        if s3.region.is_empty() {
            return Err(("storage.s3.region", "required (e.g. us-east-1)".into()));
        }
        if !s3.endpoint_url.is_empty()
            && !s3.endpoint_url.starts_with("http://")
            && !s3.endpoint_url.starts_with("https://")
        {
            return Err((
                "storage.s3.endpoint_url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if s3.access_key_id.expose().is_empty() != s3.secret_access_key.expose().is_empty() {
            return Err((
                "storage.s3.secret_access_key",
                "set both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        if !(1..=10).contains(&s3.max_attempts) {
            return Err(("storage.s3.max_attempts", "must be between 1 and 10".into()));
        }
        if !(10..=60_000).contains(&s3.connect_timeout_ms) {
            return Err((
                "storage.s3.connect_timeout_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        if !(10..=300_000).contains(&s3.attempt_timeout_ms) {
            return Err((
                "storage.s3.attempt_timeout_ms",
                "must be between 10 and 300000".into(),
            ));
        }
        if s3.metadata_ttl_secs > 3600 {
            return Err((
                "storage.s3.metadata_ttl_secs",
                "must be at most 3600 (replicas would serve a replaced video that long)".into(),
            ));
        }
        if s3.negative_ttl_secs > 3600 {
            return Err((
                "storage.s3.negative_ttl_secs",
                "must be at most 3600".into(),
            ));
        }
        // S3: parts of 5 MiB to 5 GiB.
        if !(5..=5120).contains(&s3.part_size_mib) {
            return Err((
                "storage.s3.part_size_mib",
                "must be between 5 and 5120 (S3's part size limits)".into(),
            ));
        }
        Ok(())
    }
}
