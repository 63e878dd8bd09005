//! Private HLS from one link: a VO1 prefix token on a playlist is passed on to every URI inside
//! its scope, so a stock player that drops the query when it resolves relative URIs (RFC 3986)
//! still sends the token (spec signed-urls §8.6). Follows the URIs as a player would.

mod common;
use common::*;

const MASTER: &str = "#EXTM3U\n\
#EXT-X-VERSION:7\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"a\"\n\
360p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=900000\n\
../movie420/index.m3u8\n";

const MEDIA: &str = "#EXTM3U\r\n\
#EXT-X-TARGETDURATION:4\r\n\
#EXT-X-MAP:URI=\"init.mp4\"\r\n\
#EXTINF:4.0,\r\n\
seg_1.m4s\r\n\
#EXTINF:4.0,\r\n\
seg_2.m4s?v=1\r\n\
#EXT-X-ENDLIST\r\n";

const AUDIO: &str = "#EXTM3U\n#EXTINF:4.0,\nen_1.m4s\n#EXT-X-ENDLIST\n";

fn library() -> tempfile::TempDir {
    assets(&[
        ("private/movie42/master.m3u8", MASTER.as_bytes()),
        ("private/movie42/360p/index.m3u8", MEDIA.as_bytes()),
        ("private/movie42/360p/init.mp4", b"init"),
        ("private/movie42/360p/seg_1.m4s", b"segment one"),
        ("private/movie42/360p/seg_2.m4s", b"segment two"),
        ("private/movie42/audio/en.m3u8", AUDIO.as_bytes()),
        ("private/movie42/audio/en_1.m4s", b"audio one"),
        ("private/movie42/broken.m3u8", b"not a playlist"),
        ("private/movie420/index.m3u8", b"#EXTM3U\nsecret.ts\n"),
        ("private/movie420/secret.ts", b"other title"),
    ])
}

fn server(dir: &std::path::Path) -> Server {
    Server::start(dir, &[("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY)])
}

/// A prefix link for the title folder, as a backend mints it.
fn title_link(path: &str) -> (String, String) {
    let key = video_origin::signing::keys::decode_secret(TEST_KEY).unwrap();
    let req = video_origin::signing::native::MintRequest {
        path: path.into(),
        exp: unix_now() + 600,
        scope: Some("/video/private/movie42/".into()),
        ..Default::default()
    };
    video_origin::signing::native::mint("k1", &key, &req).unwrap()
}

/// The URIs of a playlist, resolved against `at` as a player does (query kept as written).
fn uris(playlist: &str, at: &str) -> Vec<String> {
    let base = &at[..=at.rfind('/').unwrap()];
    let mut out = Vec::new();
    for line in playlist.lines() {
        let line = line.trim();
        let uri = if let Some(i) = line.find("URI=\"") {
            let rest = &line[i + 5..];
            rest[..rest.find('"').unwrap()].to_owned()
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else {
            line.to_owned()
        };
        let mut parts: Vec<&str> = base.trim_end_matches('/').split('/').collect();
        for seg in uri.split('?').next().unwrap().split('/') {
            match seg {
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        let query = uri
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        out.push(format!("{}{query}", parts.join("/")));
    }
    out
}

#[test]
fn one_prefix_link_plays_the_whole_ladder_and_nothing_else() {
    let dir = library();
    let srv = server(dir.path());
    let (path, query) = title_link("/video/private/movie42/master.m3u8");
    let master = srv.get(&format!("{path}?{query}"), &[]);
    assert_eq!(master.status, 200);
    assert_eq!(master.h("cache-control"), "private, no-store");
    assert_eq!(master.content_length(), master.body.len());
    let text = String::from_utf8(master.body.clone()).unwrap();
    assert!(
        text.contains(&format!("\n360p/index.m3u8?{query}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("URI=\"audio/en.m3u8?{query}\"")),
        "{text}"
    );
    assert!(
        text.contains("\n../movie420/index.m3u8\n"),
        "outside the scope: unchanged"
    );
    // Its own validator, not the stored file's (the digest of MASTER).
    {
        use base64::Engine;
        use sha2::Digest;
        let file_etag = format!(
            "\"{}\"",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(MASTER))
        );
        assert_ne!(master.h("etag"), file_etag);
    }

    // Follow everything as a player would: variants, init, segments, audio.
    let mut fetched = 0;
    let mut queue = uris(&text, &path);
    while let Some(u) = queue.pop() {
        let r = srv.get(&u, &[]);
        if u.contains("/movie420/") {
            assert_eq!(r.status, 403, "{u}: another title needs its own link");
            continue;
        }
        assert_eq!(r.status, 200, "{u}");
        assert!(r.h("cache-control").contains("private"), "{u}");
        if u.split('?').next().unwrap().ends_with(".m3u8") {
            let at = u.split('?').next().unwrap().to_owned();
            queue.extend(uris(&String::from_utf8(r.body).unwrap(), &at));
        }
        fetched += 1;
    }
    assert_eq!(
        fetched, 6,
        "two playlists, init, two segments, one audio segment"
    );
    // The title's token on the other title: refused (a prefix never widens).
    assert_eq!(
        srv.get(&format!("/video/private/movie420/secret.ts?{query}"), &[])
            .status,
        403
    );
    // Every admitted request was logged with token outcome ok.
    let log = srv.log_text();
    assert!(
        eventually(std::time::Duration::from_secs(3), || srv
            .log_text()
            .matches("token=\"ok\"")
            .count()
            >= 7),
        "{log}"
    );
}

#[test]
fn the_rewritten_playlist_answers_ranges_and_conditionals_as_itself() {
    let dir = library();
    let srv = server(dir.path());
    let (path, query) = title_link("/video/private/movie42/360p/index.m3u8");
    let url = format!("{path}?{query}");
    let full = srv.get(&url, &[]);
    assert_eq!(full.status, 200);
    let etag = full.h("etag").to_string();
    let r = srv.get(&url, &[("Range", "bytes=0-6")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"#EXTM3U");
    assert_eq!(
        r.h("content-range"),
        format!("bytes 0-6/{}", full.body.len())
    );
    let tail = srv.get(&url, &[("Range", "bytes=-20")]);
    assert_eq!(tail.body, &full.body[full.body.len() - 20..]);
    assert_eq!(srv.get(&url, &[("If-None-Match", &etag)]).status, 304);
    assert_eq!(srv.get(&url, &[("If-Match", "\"other\"")]).status, 412);
    let head = srv.head(&url, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), full.body.len());
    assert!(head.body.is_empty());
}

#[test]
fn exact_links_and_unparsable_playlists_are_served_as_stored() {
    let dir = library();
    let srv = server(dir.path());
    // An exact token grants one file: nothing to pass on.
    let r = srv.get(&signed("/video/private/movie42/master.m3u8"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, MASTER.as_bytes());
    // Not a playlist: served unchanged, with a warning.
    let (path, query) = title_link("/video/private/movie42/broken.m3u8");
    let r = srv.get(&format!("{path}?{query}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"not a playlist");
    assert!(eventually(std::time::Duration::from_secs(3), || srv
        .log_text()
        .contains("playlist not rewritten")));
}

#[test]
fn a_dash_ladder_made_by_ffmpeg_plays_from_one_link() {
    // spec signed-urls §8.6 for DASH: the MPD's template URIs carry the token.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("private/movie42/dash");
    std::fs::create_dir_all(&out).unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v", "error", "-i", sample, "-map", "0", "-c", "copy", "-f", "dash",
        ])
        .args([
            "-seg_duration",
            "4",
            "-use_template",
            "1",
            "-use_timeline",
            "0",
        ])
        .arg(out.join("manifest.mpd"))
        .status()
        .expect("ffmpeg (installed by tests/run-all.sh)");
    assert!(made.success());
    let srv = server(dir.path());
    let (path, query) = title_link("/video/private/movie42/dash/manifest.mpd");
    let mpd = srv.get(&format!("{path}?{query}"), &[]);
    assert_eq!(mpd.status, 200);
    assert_eq!(mpd.h("cache-control"), "private, no-store");
    let text = String::from_utf8(mpd.body).unwrap();
    let attr = |name: &str| -> Vec<String> {
        regex::Regex::new(&format!(r#"\b{name}="([^"]*)""#))
            .unwrap()
            .captures_iter(&text)
            .map(|c| c[1].replace("&amp;", "&"))
            .collect()
    };
    let (inits, medias, ids) = (attr("initialization"), attr("media"), attr("id"));
    assert!(!inits.is_empty() && !medias.is_empty(), "{text}");
    for t in inits.iter().chain(&medias) {
        assert!(t.ends_with(&format!("?{query}")), "{t}");
    }
    // Expand the templates as a player does, for every representation and all three segments.
    let base = "/video/private/movie42/dash/";
    let mut fetched = 0;
    for id in ids.iter().filter(|i| i.chars().all(|c| c.is_ascii_digit())) {
        let expand = |t: &str, n: u32| {
            t.replace("$RepresentationID$", id)
                .replace("$Number%05d$", &format!("{n:05}"))
                .replace("$Number$", &n.to_string())
        };
        for t in &inits {
            let r = srv.get(&format!("{base}{}", expand(t, 0)), &[]);
            if r.status == 404 {
                continue; // an AdaptationSet's template with another set's id
            }
            assert_eq!(r.status, 200, "{t}");
            fetched += 1;
        }
        for t in &medias {
            for n in 1..=3 {
                let r = srv.get(&format!("{base}{}", expand(t, n)), &[]);
                if r.status == 404 {
                    continue;
                }
                assert_eq!(r.status, 200, "{t} {n}");
                fetched += 1;
            }
        }
    }
    assert!(fetched >= 4, "only {fetched} files fetched: {text}");
    // Without the token the same segments are refused.
    let first = format!(
        "{base}{}",
        medias[0]
            .split('?')
            .next()
            .unwrap()
            .replace("$RepresentationID$", &ids[0])
            .replace("$Number%05d$", "00001")
    );
    assert_eq!(srv.get(&first, &[]).status, 403);
}

#[test]
fn an_akamai_acl_token_is_passed_on_the_same_way() {
    // spec signed-urls §2: an ACL `/video/private/movie42/*` covers the whole ladder.
    let dir = library();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("origin.toml");
    std::fs::write(
        &cfg,
        AKAMAI_SIGNING.to_owned()
            + r#"
[[access.rules]]
match = "private/**"
tokens = ["akamai"]
"#,
    )
    .unwrap();
    let srv = Server::start_with(dir.path(), &[], &["--config", cfg.to_str().unwrap()]);
    let key = video_origin::signing::keys::decode_secret(AKAMAI_KEY).unwrap();
    let token = video_origin::signing::akamai::mint(
        &key,
        video_origin::signing::akamai::Algorithm::Sha256,
        &video_origin::signing::akamai::Fields {
            exp: unix_now() + 300,
            acl: vec!["/video/private/movie42/*".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let path = "/video/private/movie42/master.m3u8";
    let master = srv.get(&format!("{path}?__token__={token}"), &[]);
    assert_eq!(master.status, 200);
    assert_eq!(master.h("cache-control"), "private, no-store");
    let text = String::from_utf8(master.body).unwrap();
    assert!(
        text.contains(&format!("\n360p/index.m3u8?__token__={token}\n")),
        "{text}"
    );
    let mut fetched = 0;
    for u in uris(&text, path) {
        let r = srv.get(&u, &[]);
        if u.contains("/movie420/") {
            assert_eq!(r.status, 403, "{u}");
        } else {
            assert_eq!(r.status, 200, "{u}");
            fetched += 1;
        }
    }
    assert_eq!(fetched, 2, "the audio and video playlists");
}
