//! What the s3 backend knows about one object version, and the pure rules around it: object
//! keys, the digest metadata field, and the validator sent when the digest is not known yet.

use std::time::SystemTime;

use crate::http::etag::EntityTag;

/// The user-metadata field (`x-amz-meta-sha256`) holding the SHA-256 of the object's bytes as
/// 64 hex digits. Written by the admin API's upload and by `video-origin index`.
pub const DIGEST_FIELD: &str = "sha256";

/// Where uploads are staged before they are copied to their key: a dot-folder, which no
/// request can name (dotfiles are never served).
pub const STAGING: &str = ".video-origin-uploads/";

/// One version of one object, as a HEAD saw it.
#[derive(Debug, Clone)]
pub struct S3Object {
    pub key: String,
    pub len: u64,
    pub modified: SystemTime,
    /// The store's own ETag, quotes included: what every ranged GET is pinned to (`If-Match`).
    pub store_etag: String,
    /// The version id, when the bucket is versioned.
    pub version_id: Option<String>,
    /// SHA-256 of the bytes, when the object carries it.
    pub digest: Option<[u8; 32]>,
    /// The strong validator sent to clients (see [`validator`]).
    pub etag: Option<EntityTag>,
    pub content_type: &'static str,
}

impl crate::storage::Stored for S3Object {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> SystemTime {
        self.modified
    }
    fn etag(&self) -> Option<&EntityTag> {
        self.etag.as_ref()
    }
    fn content_type(&self) -> &'static str {
        self.content_type
    }
}

/// The object key of a normalized asset path.
pub fn key(prefix: &str, asset: &str) -> String {
    format!("{prefix}{asset}")
}

/// The 32-byte digest in a `sha256` metadata value (64 hex digits, either case), if valid.
pub fn parse_digest(value: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(value.trim()).ok()?;
    bytes.try_into().ok()
}

/// The client-facing strong ETag. With a digest it is exactly the fs backend's (the content
/// hash), so every replica and both backends agree for the same bytes. Without one, it is
/// derived from the store's ETag (`"s3-…"`): strong, because the store changes it whenever the
/// bytes change, and the same on every replica, because they all read it from the one store.
/// It changes to the digest form once `index` or an upload records the digest.
pub fn validator(digest: Option<&[u8; 32]>, store_etag: &str) -> Option<EntityTag> {
    if let Some(d) = digest {
        return Some(EntityTag::from_digest(d));
    }
    let opaque: String = store_etag
        .trim_matches('"')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!opaque.is_empty()).then(|| EntityTag {
        weak: false,
        tag: format!("s3-{opaque}"),
    })
}

/// The `Range` header of a ranged GET of `start..end` (end exclusive, non-empty).
pub fn range_header(start: u64, end: u64) -> String {
    format!("bytes={start}-{}", end - 1)
}

/// S3 `CopySource`: `bucket/key`, the key percent-encoded except for `/`.
pub fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 8);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_metadata_parses_only_64_hex_digits() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_digest(&hex64), Some([0xab; 32]));
        assert_eq!(parse_digest(&hex64.to_uppercase()), Some([0xab; 32]));
        assert_eq!(parse_digest("abc"), None);
        assert_eq!(parse_digest(&"zz".repeat(32)), None);
        assert_eq!(parse_digest(&"ab".repeat(33)), None);
    }

    #[test]
    fn the_validator_is_the_content_hash_when_known() {
        let d = [7u8; 32];
        assert_eq!(
            validator(Some(&d), "\"whatever\""),
            Some(EntityTag::from_digest(&d))
        );
        let fallback = validator(None, "\"9bb58f26192e4ba00f01e2e7b136bbd8-3\"").unwrap();
        assert!(!fallback.weak);
        assert_eq!(fallback.tag, "s3-9bb58f26192e4ba00f01e2e7b136bbd8-3");
        assert_eq!(validator(None, "\"\""), None);
    }

    #[test]
    fn keys_ranges_and_copy_sources() {
        assert_eq!(key("videos/", "a/b.mp4"), "videos/a/b.mp4");
        assert_eq!(key("", "a.mp4"), "a.mp4");
        assert_eq!(range_header(0, 1), "bytes=0-0");
        assert_eq!(range_header(100, 200), "bytes=100-199");
        assert_eq!(copy_source("b", "v/a b+c.mp4"), "b/v/a%20b%2Bc.mp4");
    }
}
