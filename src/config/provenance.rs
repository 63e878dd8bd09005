//! Where the effective settings came from: the layers read, and the layer of every rule of
//! the two ordered rule lists. Never holds a value.

/// Where the effective settings came from: the layers read (lowest first), and for every rule
/// of the two ordered rule lists the layer that contributed it. Never holds a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// e.g. `embedded defaults`, `file /etc/video-origin.toml`,
    /// `environment: VIDEO_ORIGIN_SIGNING__KEYS__K1`, `command line: --listen`.
    pub layers: Vec<String>,
    /// Source of `access.rules[i]`.
    pub access_rules: Vec<String>,
    /// Source of `cache.rules[i]`.
    pub cache_rules: Vec<String>,
    /// What a `replace_rules = true` dropped, one sentence each (shown as warnings).
    pub replaced: Vec<String>,
    /// Source of `assets.root` (its errors come later, when the root is opened).
    pub assets_root: String,
    /// Source of `storage.s3.bucket` (checked when the store is first asked, at startup).
    pub s3_bucket: String,
}

/// The source of rule `i` of a composed list.
pub fn rule_source(sources: &[String], i: usize) -> String {
    sources
        .get(i)
        .cloned()
        .unwrap_or_else(|| "configuration".into())
}
