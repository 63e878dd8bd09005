//! Conditional requests against the real server (spec http-origin §2, §5.3, §5.5).

mod common;
use common::*;
use std::time::{Duration, SystemTime};

fn fmt(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn parse(s: &str) -> SystemTime {
    httpdate::parse_http_date(s).unwrap()
}

/// Serves a file whose mtime is an hour old, so its Last-Modified is a strong validator.
fn setup() -> (tempfile::TempDir, Server, String, SystemTime) {
    let dir = assets(&[("style.css", b"a{b:c}\n\n")]);
    let p = dir.path().join("style.css");
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let srv = Server::start(dir.path(), &[]);
    if srv.bucket.is_some() {
        // A bucket's Last-Modified is the upload time, which cannot be set back: wait until it
        // is a whole second before Date, when it counts as a strong validator (RFC 9110
        // §8.8.2.2), as the hour-old mtime is on the fs backend.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let r = srv.get("/video/style.css", &[]);
    let etag = r.h("etag").to_string();
    let lm = parse(r.h("last-modified"));
    (dir, srv, etag, lm)
}

#[test]
fn etag_is_a_strong_content_hash() {
    // spec: http-origin C-1, C-3: strong, SHA-256 of the bytes, identical for identical bytes.
    use base64::Engine;
    use sha2::Digest;
    let dir = assets(&[
        ("a/one.mp4", b"same bytes"),
        ("b/two.mp4", b"same bytes"),
        ("c.mp4", b"other"),
    ]);
    let srv = Server::start(dir.path(), &[]);
    let e1 = srv.get("/video/a/one.mp4", &[]).h("etag").to_string();
    let e2 = srv.get("/video/b/two.mp4", &[]).h("etag").to_string();
    let e3 = srv.get("/video/c.mp4", &[]).h("etag").to_string();
    let digest = sha2::Sha256::digest(b"same bytes");
    let expected = format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    );
    assert_eq!(e1, expected);
    assert_eq!(e1, e2);
    assert_ne!(e1, e3);
}

#[test]
fn if_none_match_and_if_modified_since() {
    let (_d, srv, etag, lm) = setup();
    let weak = format!("W/{etag}");
    let list = format!("\"x\", {etag}");
    let get = |h: &[(&str, &str)]| srv.get("/video/style.css", h);
    // CT-1: 304 carries ETag, Last-Modified, Cache-Control, Date; no body, no Content-Type.
    let r = get(&[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert_eq!(r.h("etag"), etag);
    assert!(r.header("date").is_some() && r.header("last-modified").is_some());
    assert_eq!(r.h("cache-control"), "public, max-age=60, s-maxage=86400");
    assert!(r.header("content-type").is_none(), "C-19");
    assert!(r.header("content-length") != Some("0"), "C-20: never 0");
    assert!(r.body.is_empty());
    assert_eq!(get(&[("If-None-Match", &weak)]).status, 304); // CT-2
    assert_eq!(get(&[("If-None-Match", &list)]).status, 304); // CT-3
    assert_eq!(get(&[("If-None-Match", "*")]).status, 304); // CT-4
    assert_eq!(get(&[("If-None-Match", ",")]).status, 200); // S8
    let lower = etag.to_lowercase();
    if lower != etag {
        assert_eq!(get(&[("If-None-Match", &lower)]).status, 200); // S7: case-sensitive
    }
    assert_eq!(
        get(&[("If-None-Match", "\"x\""), ("If-Modified-Since", &fmt(lm))]).status,
        200
    ); // CT-5
    assert_eq!(get(&[("If-Modified-Since", &fmt(lm))]).status, 304); // CT-6
    assert_eq!(
        get(&[("If-Modified-Since", &fmt(lm + Duration::from_secs(1)))]).status,
        304
    );
    assert_eq!(
        get(&[("If-Modified-Since", &fmt(lm - Duration::from_secs(1)))]).status,
        200
    ); // CT-7
    assert_eq!(get(&[("If-Modified-Since", "garbage")]).status, 200); // CT-8
    assert_eq!(
        get(&[
            ("If-Modified-Since", &fmt(lm)),
            ("If-Modified-Since", &fmt(lm))
        ])
        .status,
        200
    );
    // C-25: HEAD conditionals behave like GET.
    assert_eq!(
        srv.head("/video/style.css", &[("If-None-Match", &etag)])
            .status,
        304
    );
}

#[test]
fn if_match_and_if_unmodified_since() {
    let (_d, srv, etag, lm) = setup();
    let get = |h: &[(&str, &str)]| srv.get("/video/style.css", h);
    let list = format!("\"x\", {etag}");
    let weak = format!("W/{etag}");
    assert_eq!(get(&[("If-Match", &etag)]).status, 200); // CT-9
    assert_eq!(get(&[("If-Match", "*")]).status, 200);
    assert_eq!(get(&[("If-Match", &list)]).status, 200);
    let r = get(&[("If-Match", "\"x\"")]); // CT-10
    assert_eq!(r.status, 412);
    assert_eq!(r.h("cache-control"), "no-store"); // C-23
    assert_eq!(r.body, b"precondition failed\n");
    assert_eq!(get(&[("If-Match", &weak)]).status, 412); // S21
    assert_eq!(
        get(&[
            ("If-Match", &etag),
            ("If-Unmodified-Since", &fmt(lm - Duration::from_secs(10)))
        ])
        .status,
        200
    ); // CT-11
    assert_eq!(get(&[("If-Unmodified-Since", &fmt(lm))]).status, 200); // CT-12
    assert_eq!(
        get(&[("If-Unmodified-Since", &fmt(lm - Duration::from_secs(2)))]).status,
        412
    );
    assert_eq!(
        get(&[("If-Match", "\"x\""), ("If-None-Match", &etag)]).status,
        412
    ); // CT-13
    assert_eq!(
        srv.head("/video/style.css", &[("If-Match", "\"x\"")])
            .status,
        412
    );
    // CT-20 / §2.3 step 0: preconditions never turn a 404 into something else.
    assert_eq!(
        srv.get("/video/missing.css", &[("If-Match", "*")]).status,
        404
    );
    // POST with If-Match is 405, not 412.
    assert_eq!(
        srv.request("POST", "/video/style.css", &[("If-Match", "\"x\"")])
            .status,
        405
    );
}

#[test]
fn if_range() {
    let (_d, srv, etag, lm) = setup();
    let weak = format!("W/{etag}");
    let get = |ir: &str| {
        srv.get(
            "/video/style.css",
            &[("Range", "bytes=0-4"), ("If-Range", ir)],
        )
    };
    let r = get(&etag); // CT-14
    assert_eq!((r.status, r.h("content-range")), (206, "bytes 0-4/8"));
    for bad in [weak.as_str(), "\"x\"", "garbage"] {
        let r = get(bad); // CT-15
        assert_eq!((r.status, r.body.len()), (200, 8), "{bad}");
    }
    assert_eq!(get(&fmt(lm)).status, 206); // CT-16
    assert_eq!(get(&fmt(lm + Duration::from_secs(1))).status, 200);
    // CT-17: If-Range without Range is ignored.
    assert_eq!(
        srv.get("/video/style.css", &[("If-Range", "\"x\"")]).status,
        200
    );
}

#[test]
fn rewrite_with_same_size_and_restored_mtime_changes_etag() {
    // spec: http-origin CT-18
    let (dir, srv, etag, _) = setup();
    let p = dir.path().join("style.css");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, b"x{y:z}\n\n").unwrap(); // same 8 bytes long
    set_mtime(&p, mtime);
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
    srv.republish("style.css");
    let r = srv.get("/video/style.css", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 200, "old ETag must not validate new bytes");
    assert_ne!(r.h("etag"), etag);
    assert_eq!(r.body, b"x{y:z}\n\n");
}

#[test]
fn future_mtime_is_clamped_to_date() {
    // spec: http-origin C-4, CT-19
    let dir = assets(&[("f.mp4", b"future")]);
    let p = dir.path().join("f.mp4");
    let future = SystemTime::now() + Duration::from_secs(86400 * 30);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(future)
        .unwrap();
    let srv = Server::start(dir.path(), &[]);
    let r = srv.get("/video/f.mp4", &[]);
    if srv.bucket.is_some() {
        // A bucket has no future times (Last-Modified is when the object was written); the
        // clamp still holds: never later than Date.
        assert!(parse(r.h("last-modified")) <= parse(r.h("date")));
    } else {
        assert_eq!(r.h("last-modified"), r.h("date"));
    }
}
