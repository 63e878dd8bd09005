//! `[assets]`, `[ranges]`, `[metadata]`, `[streaming]`, `[cache]`: what is served and how.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::section::Section;
use crate::http::cache_policy::{Cdn, RuleConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSettings {
    pub root: PathBuf,
    pub mount: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSettings {
    pub max_ranges: usize,
    pub coalesce_gap: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSettings {
    pub capacity: u64,
    pub ttl_secs: u64,
    pub open_files: u64,
    pub open_file_idle_secs: u64,
    pub warm_up: bool,
    pub index_file: PathBuf,
    /// Files up to this size are hashed on their first request; larger ones are served at
    /// once (without an ETag) and hashed in the background.
    pub inline_hash_max_bytes: u64,
    /// Background hashers (low CPU and IO priority).
    pub hash_threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingSettings {
    pub read_size: usize,
    /// Plain HTTP/1.x file bodies by `sendfile` (no copy through user space).
    pub sendfile: bool,
    /// Budget of the sealed in-memory copies of small files (0: none).
    pub memory_copies_bytes: u64,
    /// Largest file that gets an in-memory copy.
    pub memory_copy_max_file: u64,
    pub blocking_threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub cdn: Cdn,
    /// In one layer: drop the rules of every earlier layer instead of adding before them.
    #[serde(default, skip_serializing)]
    pub replace_rules: bool,
    pub rules: Vec<RuleConfig>,
}

impl Section for AssetSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let m = &self.mount;
        if !m.starts_with('/') || m.ends_with('/') || m.contains("//") || m.contains(['?', '#']) {
            return Err((
                "assets.mount",
                format!("must start with `/`, not end with `/` and hold no `//`, `?` or `#` (got `{m}`)"),
            ));
        }
        Ok(())
    }
}

impl Section for RangeSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_ranges == 0 {
            return Err(("ranges.max_ranges", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl Section for MetadataSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.open_files > 0 && self.open_file_idle_secs == 0 {
            return Err((
                "metadata.open_file_idle_secs",
                "must be at least 1 when open_files > 0".into(),
            ));
        }
        if !(1..=64).contains(&self.hash_threads) {
            return Err(("metadata.hash_threads", "must be between 1 and 64".into()));
        }
        if self.capacity == 0 {
            return Err(("metadata.capacity", "must be at least 1".into()));
        }
        if self.ttl_secs == 0 {
            return Err(("metadata.ttl_secs", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl Section for StreamingSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(4096..=16 << 20).contains(&self.read_size) {
            return Err((
                "streaming.read_size",
                format!(
                    "must be between 4096 and 16777216 bytes (got {})",
                    &self.read_size
                ),
            ));
        }
        if self.memory_copy_max_file > 1 << 30 {
            return Err((
                "streaming.memory_copy_max_file",
                format!(
                    "must be at most 1073741824 bytes (got {})",
                    self.memory_copy_max_file
                ),
            ));
        }
        if !(1..=1024).contains(&self.blocking_threads) {
            return Err((
                "streaming.blocking_threads",
                "must be between 1 and 1024".into(),
            ));
        }
        Ok(())
    }
}

impl Section for CacheSettings {}
