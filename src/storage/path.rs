//! URL path → asset path, pure and shared by every backend: [`normalize`] decodes
//! percent-encoding exactly once and rejects anything that could climb or smuggle (`..`, `.`,
//! NUL, backslash, control characters, malformed escapes) with a 400, and hides dotfiles (404).
//! Opening it is the backend's business (`local::open` for the file system).

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// 400 with this reason.
    BadRequest(&'static str),
    /// 404 (hidden, missing, directory, or outside the root: the client learns nothing more).
    NotFound,
}

impl std::fmt::Display for PathRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathRejection::BadRequest(reason) => f.write_str(reason),
            PathRejection::NotFound => {
                f.write_str("empty or hidden path (dotfiles are never served)")
            }
        }
    }
}

/// A normalized relative asset path: `/`-separated, no empty, `.` or `..` segments.
/// Used as the metadata cache key and for cache-policy matching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetPath(String);

impl AssetPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Decodes `%XX` once; a `%` not followed by two hex digits is an error.
fn percent_decode_once(raw: &str) -> Result<Vec<u8>, PathRejection> {
    crate::http::percent::decode_once(raw).ok_or(PathRejection::BadRequest(
        "malformed percent-encoding in path",
    ))
}

/// Normalizes the part of the URL path after the mount prefix (still percent-encoded).
pub fn normalize(raw: &str) -> Result<AssetPath, PathRejection> {
    // Nearly every path has no escape: then it is copied as it is (and is UTF-8 already).
    let decoded = if raw.contains('%') {
        String::from_utf8(percent_decode_once(raw)?)
            .map_err(|_| PathRejection::BadRequest("path is not valid UTF-8"))?
    } else {
        raw.to_owned()
    };
    // One pass over the bytes (this runs on every request); the reasons keep their order.
    let (mut nul, mut backslash, mut control, mut ascii) = (false, false, false, true);
    // In the same pass: an empty segment (`//`, or a leading `/`), where `str::contains` set
    // up a substring search per request, and a segment starting with a dot (`.`, `..`, a
    // dotfile), so that a path with neither needs no walk over its segments.
    let (mut empty_segment, mut dot_segment, mut segment_start) = (false, false, true);
    for &b in decoded.as_bytes() {
        match b {
            0 => nul = true,
            b'\\' => backslash = true,
            0x01..=0x1f | 0x7f => control = true,
            0x80.. => ascii = false,
            _ => {}
        }
        empty_segment |= segment_start && b == b'/';
        dot_segment |= segment_start && b == b'.';
        segment_start = b == b'/';
    }
    if nul {
        return Err(PathRejection::BadRequest("NUL byte in path"));
    }
    if backslash {
        return Err(PathRejection::BadRequest("backslash in path"));
    }
    // Beyond ASCII, the C1 controls (U+0080-U+009F) are control characters too.
    if control || (!ascii && decoded.chars().any(char::is_control)) {
        return Err(PathRejection::BadRequest("control character in path"));
    }
    // Already canonical (no empty segments; nearly every request): the decoded path is
    // the result, once its segments are checked. Otherwise it is rebuilt without them.
    let canonical = !decoded.ends_with('/') && !empty_segment;
    if canonical && !dot_segment && !decoded.is_empty() {
        return Ok(AssetPath(decoded));
    }
    let mut rebuilt = String::new();
    for seg in decoded.split('/') {
        match seg {
            "" => continue,
            "." | ".." => return Err(PathRejection::BadRequest("dot segment in path")),
            s if s.starts_with('.') => return Err(PathRejection::NotFound),
            s if !canonical => {
                if !rebuilt.is_empty() {
                    rebuilt.push('/');
                }
                rebuilt.push_str(s);
            }
            _ => {}
        }
    }
    let path = if canonical { decoded } else { rebuilt };
    if path.is_empty() {
        return Err(PathRejection::NotFound);
    }
    Ok(AssetPath(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normal_paths() {
        assert_eq!(normalize("a.mp4").unwrap().as_str(), "a.mp4");
        // Dots inside a segment, and a leading slash (an empty first segment).
        assert_eq!(
            normalize("s.1/e.1/a.b.mp4").unwrap().as_str(),
            "s.1/e.1/a.b.mp4"
        );
        assert_eq!(normalize("/a/b.mp4").unwrap().as_str(), "a/b.mp4");
        assert_eq!(
            normalize("/series//s1/e1.mp4").unwrap().as_str(),
            "series/s1/e1.mp4"
        );
        assert_eq!(
            normalize("with%20space.mp4").unwrap().as_str(),
            "with space.mp4"
        );
        assert_eq!(normalize("caf%C3%A9.mp4").unwrap().as_str(), "café.mp4");
        // Decoded once only: %252e stays the literal "%2e".
        assert_eq!(normalize("%252e%252e/x").unwrap().as_str(), "%2e%2e/x");
    }

    #[test]
    fn rejections() {
        use PathRejection::*;
        let bad = |p: &str| normalize(p).unwrap_err();
        assert!(matches!(bad("../etc/passwd"), BadRequest(_)));
        assert!(matches!(bad("a/../../b"), BadRequest(_)));
        assert!(matches!(bad("%2e%2e/etc/passwd"), BadRequest(_)));
        assert!(matches!(bad("%2E%2E%2Fetc"), BadRequest(_)));
        assert!(matches!(bad("./a"), BadRequest(_)));
        assert!(matches!(bad("a%00.mp4"), BadRequest(_)));
        assert!(matches!(bad("a%5c..%5cb"), BadRequest(_)));
        assert!(matches!(bad("a\\b"), BadRequest(_)));
        assert!(matches!(bad("a%0a"), BadRequest(_)));
        assert!(matches!(bad("%zz"), BadRequest(_)));
        assert!(matches!(bad("abc%4"), BadRequest(_)));
        assert!(matches!(bad("%ff%fe"), BadRequest(_)));
        // The reason named when several apply, and a control character beyond ASCII (NEL).
        assert_eq!(bad("a%0a%5c%00"), BadRequest("NUL byte in path"));
        assert_eq!(bad("a%0a%5c"), BadRequest("backslash in path"));
        assert_eq!(bad("a%7f"), BadRequest("control character in path"));
        assert_eq!(bad("a%C2%85b"), BadRequest("control character in path"));
        assert_eq!(
            normalize("caf%C3%A9%C2%A0.mp4").unwrap().as_str(),
            "café\u{a0}.mp4"
        );
        assert_eq!(bad(".git/config"), NotFound);
        assert_eq!(bad("a/.hidden"), NotFound);
        assert_eq!(bad(""), NotFound);
        assert_eq!(bad("///"), NotFound);
    }

    proptest! {
        /// Whatever the input, an accepted path has no dot segments, NUL or backslash and is
        /// relative, so joining it to the root cannot climb out lexically.
        #[test]
        fn accepted_paths_are_contained(raw in "[a-z./%0-9A-F\\\\]{0,30}") {
            if let Ok(p) = normalize(&raw) {
                let s = p.as_str();
                prop_assert!(!s.starts_with('/'));
                prop_assert!(!s.contains('\0') && !s.contains('\\'));
                for seg in s.split('/') {
                    prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                }
            }
        }
    }
}
