//! Token propagation through HLS playlists (pure): a player resolves a playlist's relative URIs
//! against the playlist URL and RFC 3986 resolution drops the query, so without this the
//! variant playlists and segments of a private ladder are requested without the token.
//!
//! [`rewrite_hls`] appends the token's query to every URI of the playlist that resolves inside
//! the token's scope: URI lines (media segments, variant playlists) and the `URI="…"` attribute
//! of `EXT-X-KEY`, `EXT-X-SESSION-KEY`, `EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`,
//! `EXT-X-PART`, `EXT-X-PRELOAD-HINT` and `EXT-X-RENDITION-REPORT`. URIs with a scheme or a
//! host (`https://…`, `//cdn…`) and paths outside the scope are left as they are, so a token is
//! never handed to another host nor widened. Comments, blank lines and line endings (LF or
//! CRLF) are kept; every other byte is unchanged.
//!
//! [`rewrite_dash`] does the same for an MPD, read and written by quick-xml's streaming reader
//! and writer: `BaseURL` text, `SegmentTemplate@media`/`@initialization`/`@index`,
//! `SegmentURL@media`/`@index`, `Initialization@sourceURL` and `RepresentationIndex@sourceURL`,
//! each resolved against the `BaseURL`s in force where it appears. Below a `BaseURL` on another
//! host nothing is touched.

/// Tags whose `URI` attribute names a resource.
const URI_TAGS: &[&str] = &[
    "#EXT-X-KEY:",
    "#EXT-X-SESSION-KEY:",
    "#EXT-X-MAP:",
    "#EXT-X-MEDIA:",
    "#EXT-X-I-FRAME-STREAM-INF:",
    "#EXT-X-PART:",
    "#EXT-X-PRELOAD-HINT:",
    "#EXT-X-RENDITION-REPORT:",
];

/// Why a playlist was not rewritten (it is then served unchanged, with a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAPlaylist {
    NoHeader,
    NotUtf8,
    /// Not well-formed XML, or no `MPD` root.
    NotAnMpd,
}

/// Attributes that hold URIs, by element (local names).
fn uri_attributes(element: &[u8]) -> &'static [&'static [u8]] {
    match element {
        b"SegmentTemplate" => &[b"media", b"initialization", b"index"],
        b"SegmentURL" => &[b"media", b"index"],
        b"Initialization" | b"RepresentationIndex" => &[b"sourceURL"],
        _ => &[],
    }
}

/// The directory of a URL path, with its trailing `/` (`/a/b/c.m3u8` -> `/a/b/`; a path that
/// ends with `/` is its own directory; no `/` at all -> `/`).
pub fn directory_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

/// An MPD served at `mpd_path` with `query` appended to every URI that resolves under `scope`.
pub fn rewrite_dash(
    text: &[u8],
    mpd_path: &str,
    scope: &str,
    query: &str,
) -> Result<Vec<u8>, NotAPlaylist> {
    use quick_xml::events::{BytesStart, BytesText, Event};
    let text = std::str::from_utf8(text).map_err(|_| NotAPlaylist::NotUtf8)?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(text.len() + 1024));
    let root = directory_of(mpd_path).to_owned();
    // The base in force inside each open element (None: another host, leave everything).
    let mut bases: Vec<Option<String>> = vec![Some(root)];
    let mut in_base_url = false;
    let mut saw_mpd = false;
    let bad = |_| NotAPlaylist::NotAnMpd;
    loop {
        let event = reader.read_event().map_err(bad)?;
        match event {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = e.local_name();
                saw_mpd |= name.as_ref() == b"MPD";
                let base = bases.last().cloned().flatten();
                let wanted = uri_attributes(name.as_ref());
                let out = if wanted.is_empty() || base.is_none() {
                    e.to_owned()
                } else {
                    let base = base.as_deref().unwrap_or("/");
                    let tag = std::str::from_utf8(e.name().as_ref())
                        .map_err(|_| NotAPlaylist::NotAnMpd)?
                        .to_owned();
                    let mut new = BytesStart::new(tag);
                    for a in e.attributes() {
                        let a = a.map_err(|_| NotAPlaylist::NotAnMpd)?;
                        let value = a.unescape_value().map_err(bad)?;
                        let key = std::str::from_utf8(a.key.as_ref())
                            .map_err(|_| NotAPlaylist::NotAnMpd)?;
                        // `(&str, &str)` attributes are escaped on the way out.
                        if wanted.contains(&key.as_bytes()) {
                            let v = with_token(&value, &value, base, scope, query);
                            new.push_attribute((key, v.as_str()));
                        } else {
                            new.push_attribute((key, value.as_ref()));
                        }
                    }
                    new
                };
                in_base_url = name.as_ref() == b"BaseURL" && !empty;
                if empty {
                    writer
                        .write_event(Event::Empty(out))
                        .map_err(|_| NotAPlaylist::NotAnMpd)?;
                } else {
                    // Children inherit the base; a BaseURL child may refine it for its parent.
                    bases.push(bases.last().cloned().flatten());
                    writer
                        .write_event(Event::Start(out))
                        .map_err(|_| NotAPlaylist::NotAnMpd)?;
                }
            }
            Event::Text(ref t) if in_base_url => {
                let raw = t.decode().map_err(|_| NotAPlaylist::NotAnMpd)?;
                let value = raw.trim();
                // The BaseURL's parent is the element below the BaseURL on the stack.
                let parent = bases.len().saturating_sub(2);
                let inherited = bases[parent].clone();
                let (resolved, written) = match inherited.as_deref() {
                    Some(b) => match resolve(value, b) {
                        Some(path) => {
                            let dir = directory_of(&path).to_owned();
                            (Some(dir), with_token(value, &raw, b, scope, query))
                        }
                        None => (None, raw.to_string()),
                    },
                    None => (None, raw.to_string()),
                };
                bases[parent] = resolved;
                writer
                    .write_event(Event::Text(BytesText::new(&written)))
                    .map_err(|_| NotAPlaylist::NotAnMpd)?;
            }
            Event::GeneralRef(_) if in_base_url => {
                // An entity inside a BaseURL: its value is not worth guessing; leave the subtree.
                let parent = bases.len().saturating_sub(2);
                bases[parent] = None;
                writer
                    .write_event(event)
                    .map_err(|_| NotAPlaylist::NotAnMpd)?;
            }
            Event::End(_) => {
                in_base_url = false;
                bases.pop();
                writer
                    .write_event(event)
                    .map_err(|_| NotAPlaylist::NotAnMpd)?;
            }
            other => writer
                .write_event(other)
                .map_err(|_| NotAPlaylist::NotAnMpd)?,
        }
    }
    // No MPD root, or elements left open at the end: not a whole document.
    if !saw_mpd || bases.len() != 1 {
        return Err(NotAPlaylist::NotAnMpd);
    }
    Ok(writer.into_inner())
}

/// `text` with `query` appended to every URI that resolves under `scope`, for a playlist served
/// at `playlist_path` (both canonical URL paths; `scope` ends with `/`).
pub fn rewrite_hls(
    text: &[u8],
    playlist_path: &str,
    scope: &str,
    query: &str,
) -> Result<Vec<u8>, NotAPlaylist> {
    let text = std::str::from_utf8(text).map_err(|_| NotAPlaylist::NotUtf8)?;
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !body.starts_with("#EXTM3U") {
        return Err(NotAPlaylist::NoHeader);
    }
    let base = directory_of(playlist_path);
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for piece in text.split_inclusive('\n') {
        let (line, end) = split_line_end(piece);
        if line.is_empty() {
        } else if let Some(tag) = line.strip_prefix('#') {
            if URI_TAGS.iter().any(|t| line.starts_with(t)) {
                out.push_str(&rewrite_uri_attribute(line, base, scope, query));
                out.push_str(end);
                continue;
            }
            let _ = tag; // other tags and comments: unchanged
        } else {
            out.push_str(&with_token(line.trim(), line, base, scope, query));
            out.push_str(end);
            continue;
        }
        out.push_str(line);
        out.push_str(end);
    }
    Ok(out.into_bytes())
}

/// A line without its ending, and the ending (`\r\n`, `\n` or none).
fn split_line_end(piece: &str) -> (&str, &str) {
    if let Some(l) = piece.strip_suffix("\r\n") {
        (l, "\r\n")
    } else if let Some(l) = piece.strip_suffix('\n') {
        (l, "\n")
    } else {
        (piece, "")
    }
}

/// The tag line with its quoted `URI="…"` value given the token (if in scope). Attribute
/// names are matched exactly (`URI`, not `X-URI` or `KEYFORMATURI`).
fn rewrite_uri_attribute(line: &str, base: &str, scope: &str, query: &str) -> String {
    let mut out = String::with_capacity(line.len() + query.len() + 1);
    let mut rest = line;
    while let Some(at) = rest.find("URI=\"") {
        let before = &rest[..at];
        let is_attr = before.is_empty() || before.ends_with(',') || before.ends_with(':');
        let value_start = at + "URI=\"".len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..value_start + len];
        if is_attr {
            out.push_str(&with_token(value, value, base, scope, query));
        } else {
            out.push_str(value);
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

/// `original` (whose URI text is `uri`) with the token appended when `uri` resolves under
/// `scope`; otherwise `original` unchanged.
fn with_token(uri: &str, original: &str, base: &str, scope: &str, query: &str) -> String {
    match resolve(uri, base) {
        Some(path) if path.starts_with(scope) => {
            let (before_fragment, fragment) = match original.find('#') {
                Some(i) => original.split_at(i),
                None => (original, ""),
            };
            let trimmed = before_fragment.trim_end();
            let trailing = &before_fragment[trimmed.len()..];
            let sep = if trimmed.contains('?') { '&' } else { '?' };
            format!("{trimmed}{sep}{query}{trailing}{fragment}")
        }
        _ => original.to_owned(),
    }
}

/// The URL path `uri` names relative to the folder `base` (RFC 3986 §5.2, dot segments
/// removed), or `None` for URIs with a scheme or authority (another host, as far as we know).
fn resolve(uri: &str, base: &str) -> Option<String> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    if path.starts_with("//") || has_scheme(path) {
        return None;
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base}{path}")
    };
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = joined.split('/').collect();
    for (i, seg) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        match *seg {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                if segments.len() > 1 {
                    segments.pop();
                }
                if last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    let out = segments.join("/");
    Some(if out.starts_with('/') {
        out
    } else {
        format!("/{out}")
    })
}

fn has_scheme(s: &str) -> bool {
    match s.find(':') {
        Some(i) if i > 0 => {
            let scheme = &s[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !scheme.contains('/')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: &str = "/video/private/movie42/";
    const Q: &str = "exp=1893456000&kid=k1&scope=/video/private/movie42/&sig=abc";

    fn rw(text: &str, at: &str) -> String {
        String::from_utf8(rewrite_hls(text.as_bytes(), at, SCOPE, Q).unwrap()).unwrap()
    }

    #[test]
    fn master_and_media_uris_get_the_token() {
        let master = "#EXTM3U\n#EXT-X-VERSION:7\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"a\"\n\
            360p/index.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"360p/iframes.m3u8\"\n";
        let out = rw(master, "/video/private/movie42/master.m3u8");
        assert!(out.contains(&format!("URI=\"audio/en.m3u8?{Q}\"")), "{out}");
        assert!(out.contains(&format!("\n360p/index.m3u8?{Q}\n")), "{out}");
        assert!(
            out.contains(&format!("URI=\"360p/iframes.m3u8?{Q}\"")),
            "{out}"
        );
        assert!(out.contains("#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"a\"\n"));
    }

    #[test]
    fn every_uri_tag_and_segment_line() {
        let media = "#EXTM3U\r\n\
            #EXT-X-TARGETDURATION:4\r\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x1\r\n\
            #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\r\n\
            # a comment with URI=\"x\"\r\n\
            \r\n\
            #EXTINF:4.0,\r\n\
            #EXT-X-BYTERANGE:1000@720\r\n\
            seg_00001.m4s\r\n\
            #EXT-X-PART:DURATION=1.0,URI=\"part1.m4s\"\r\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part2.m4s\"\r\n\
            #EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=1\r\n\
            #EXT-X-ENDLIST\r\n";
        let out = rw(media, "/video/private/movie42/360p/index.m3u8");
        for uri in [
            "key.bin",
            "init.mp4",
            "part1.m4s",
            "part2.m4s",
            "../720p/index.m3u8",
        ] {
            assert!(out.contains(&format!("URI=\"{uri}?{Q}\"")), "{uri}: {out}");
        }
        assert!(out.contains(&format!("\r\nseg_00001.m4s?{Q}\r\n")), "{out}");
        assert!(
            out.contains("# a comment with URI=\"x\"\r\n\r\n"),
            "comments unchanged"
        );
        assert!(out.contains("#EXT-X-BYTERANGE:1000@720\r\n"));
        assert_eq!(out.matches("\r\n").count(), media.matches("\r\n").count());
    }

    #[test]
    fn outside_the_scope_and_other_hosts_are_left_alone() {
        let media = "#EXTM3U\n\
            ../../movie420/seg.ts\n\
            /video/private/movie4/seg.ts\n\
            https://cdn.example.com/video/private/movie42/seg.ts\n\
            //cdn.example.com/video/private/movie42/seg.ts\n\
            data:text/plain,x\n\
            /video/private/movie42/abs.ts\n";
        let out = rw(media, "/video/private/movie42/360p/index.m3u8");
        assert!(out.contains("\n../../movie420/seg.ts\n"));
        assert!(out.contains("\n/video/private/movie4/seg.ts\n"));
        assert!(out.contains("\nhttps://cdn.example.com/video/private/movie42/seg.ts\n"));
        assert!(out.contains("\n//cdn.example.com/video/private/movie42/seg.ts\n"));
        assert!(out.contains("\ndata:text/plain,x\n"));
        assert!(out.contains(&format!("\n/video/private/movie42/abs.ts?{Q}\n")));
    }

    #[test]
    fn existing_queries_fragments_and_encoded_paths() {
        let media = "#EXTM3U\nseg.ts?v=2\nseg%20two.ts#t=1\nseg.ts \n";
        let out = rw(media, "/video/private/movie42/index.m3u8");
        assert!(out.contains(&format!("\nseg.ts?v=2&{Q}\n")), "{out}");
        assert!(out.contains(&format!("\nseg%20two.ts?{Q}#t=1\n")), "{out}");
        assert!(out.contains(&format!("\nseg.ts?{Q} \n")), "{out}");
    }

    #[test]
    fn not_a_playlist_is_refused_and_served_as_is_by_the_caller() {
        assert_eq!(
            rewrite_hls(b"<html>", "/a.m3u8", SCOPE, Q),
            Err(NotAPlaylist::NoHeader)
        );
        assert_eq!(
            rewrite_hls(b"#EXTM3U\n\xff\n", "/a.m3u8", SCOPE, Q),
            Err(NotAPlaylist::NotUtf8)
        );
        // A byte-order mark is allowed before the header.
        assert!(rewrite_hls("\u{feff}#EXTM3U\n".as_bytes(), "/a.m3u8", SCOPE, Q).is_ok());
    }

    #[test]
    fn a_ten_megabyte_playlist() {
        let mut media = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
        let mut n = 0;
        while media.len() < 10 << 20 {
            media.push_str(&format!("#EXTINF:2.0,\nseg_{n:08}.m4s\n"));
            n += 1;
        }
        let out = rw(&media, "/video/private/movie42/index.m3u8");
        assert_eq!(out.matches(Q).count(), n);
        assert_eq!(out.len(), media.len() + n * (Q.len() + 1));
    }

    #[test]
    fn dash_template_and_list_uris_get_the_token() {
        let mpd = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
  <Period id="0">
    <AdaptationSet id="0" contentType="video">
      <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="1"/>
      <Representation id="0" bandwidth="800000"/>
    </AdaptationSet>
    <AdaptationSet id="1">
      <BaseURL>audio/</BaseURL>
      <Representation id="a">
        <SegmentList><Initialization sourceURL="init.mp4"/><SegmentURL media="a1.m4s"/></SegmentList>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="2">
      <BaseURL>https://other.example/x/</BaseURL>
      <SegmentTemplate media="far-$Number$.m4s"/>
    </AdaptationSet>
    <AdaptationSet id="3">
      <SegmentList><SegmentURL media="../../movie420/s.m4s"/></SegmentList>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let out = rewrite_dash(
            mpd.as_bytes(),
            "/video/private/movie42/manifest.mpd",
            SCOPE,
            Q,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let q = Q.replace('&', "&amp;");
        assert!(
            out.contains(&format!(
                "initialization=\"init-$RepresentationID$.m4s?{q}\""
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "media=\"chunk-$RepresentationID$-$Number%05d$.m4s?{q}\""
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("<BaseURL>audio/?{q}</BaseURL>")),
            "{out}"
        );
        assert!(
            out.contains(&format!("sourceURL=\"init.mp4?{q}\"")),
            "{out}"
        );
        assert!(out.contains(&format!("media=\"a1.m4s?{q}\"")), "{out}");
        assert!(
            out.contains("<BaseURL>https://other.example/x/</BaseURL>"),
            "{out}"
        );
        assert!(
            out.contains("media=\"far-$Number$.m4s\""),
            "other host: untouched\n{out}"
        );
        assert!(
            out.contains("media=\"../../movie420/s.m4s\""),
            "outside the scope\n{out}"
        );
        assert!(out.contains("<Representation id=\"0\" bandwidth=\"800000\"/>"));
        assert_eq!(
            rewrite_dash(b"<html/>", "/a.mpd", SCOPE, Q),
            Err(NotAPlaylist::NotAnMpd)
        );
        assert_eq!(
            rewrite_dash(b"<MPD><Period>", "/a.mpd", SCOPE, Q),
            Err(NotAPlaylist::NotAnMpd)
        );
    }

    #[test]
    fn dot_segments_resolve_like_rfc_3986() {
        assert_eq!(
            resolve("a/./b/../c.ts", "/x/y/").as_deref(),
            Some("/x/y/a/c.ts")
        );
        assert_eq!(
            resolve("../../../../c.ts", "/x/y/").as_deref(),
            Some("/c.ts")
        );
        assert_eq!(resolve("http://h/x", "/"), None);
        assert_eq!(resolve("c.ts?x=1#f", "/x/").as_deref(), Some("/x/c.ts"));
    }
}
