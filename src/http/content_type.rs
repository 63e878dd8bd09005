//! Content-Type from the file extension. Streaming formats come first from our own table,
//! because generic MIME databases disagree on them (or lack them) and players and CDNs key
//! behaviour on the exact type (CloudFront compresses manifests by type, spec F-9).

/// Types for the media formats an origin serves, sorted by extension (binary search).
const MEDIA: &[(&str, &str)] = &[
    ("aac", "audio/aac"),
    ("cmfa", "audio/mp4"),
    ("cmfv", "video/mp4"),
    ("ism", "application/vnd.ms-sstr+xml"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("json", "application/json"),
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("m4a", "audio/mp4"),
    ("m4s", "video/iso.segment"),
    ("m4v", "video/mp4"),
    ("mkv", "video/x-matroska"),
    ("mov", "video/quicktime"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
    ("mpd", "application/dash+xml"),
    ("ogg", "audio/ogg"),
    ("png", "image/png"),
    ("srt", "application/x-subrip"),
    ("ts", "video/mp2t"),
    ("vtt", "text/vtt; charset=utf-8"),
    ("webm", "video/webm"),
    ("webp", "image/webp"),
];

/// The Content-Type for an asset path; `application/octet-stream` when unknown.
pub fn content_type_for(path: &str) -> &'static str {
    let Some((_, ext)) = path.rsplit_once('.') else {
        return "application/octet-stream";
    };
    if ext.contains('/') {
        return "application/octet-stream";
    }
    let ext = ext.to_ascii_lowercase();
    if let Ok(i) = MEDIA.binary_search_by(|(e, _)| e.cmp(&ext.as_str())) {
        return MEDIA[i].1;
    }
    mime_guess::from_ext(&ext)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(MEDIA.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn media_types() {
        assert_eq!(content_type_for("a/b.mp4"), "video/mp4");
        assert_eq!(content_type_for("seg-1.M4S"), "video/iso.segment");
        assert_eq!(content_type_for("x.ts"), "video/mp2t");
        assert_eq!(
            content_type_for("master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type_for("a.mpd"), "application/dash+xml");
        assert_eq!(content_type_for("a.webm"), "video/webm");
        assert_eq!(content_type_for("en.vtt"), "text/vtt; charset=utf-8");
        assert_eq!(content_type_for("poster.jpg"), "image/jpeg");
        assert_eq!(content_type_for("thumb.png"), "image/png");
        assert_eq!(content_type_for("meta.json"), "application/json");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
        assert_eq!(content_type_for("dir.d/noext"), "application/octet-stream");
        assert_eq!(content_type_for("x.unknownext"), "application/octet-stream");
        assert_eq!(content_type_for("style.css"), "text/css");
    }
}
