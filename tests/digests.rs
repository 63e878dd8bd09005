//! Issue #14 point 3: no viewer waits for a hash. A never-seen file above
//! `metadata.inline_hash_max_bytes` is answered at once without an ETag, hashed in the
//! background, and then carries the strong content ETag (identical to what `index` or an
//! inline hash gives). Speed is the bench's business; this tests the behaviour.

mod common;
use common::*;
use std::time::Duration;

use base64::Engine;
use sha2::Digest;

fn content_etag(data: &[u8]) -> String {
    format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data))
    )
}

#[test]
fn a_large_never_seen_file_is_served_before_its_hash_is_known() {
    let data: Vec<u8> = (0..(48u32 << 20)).map(|i| (i % 251) as u8).collect();
    let dir = assets(&[("big.mp4", &data), ("small.mp4", b"small")]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_METADATA__INLINE_HASH_MAX_BYTES", "1048576")],
    );
    // The first answers come before the digest: correct bytes, no ETag, Last-Modified as usual.
    let r = srv.get("/video/big.mp4", &[("Range", "bytes=100-199")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[100..200]);
    assert!(r.header("etag").is_none(), "{:?}", r.headers);
    assert!(r.header("last-modified").is_some());
    let wanted = content_etag(&data);
    let expected_small = content_etag(b"small");
    // Small files are still hashed on their first request.
    assert_eq!(srv.get("/video/small.mp4", &[]).h("etag"), expected_small);
    // The background hash completes and responses carry the strong content ETag.
    assert!(
        eventually(Duration::from_secs(30), || srv
            .head("/video/big.mp4", &[])
            .header("etag")
            == Some(wanted.as_str())),
        "the ETag appears once the file is hashed"
    );
    let r = srv.get("/video/big.mp4", &[("If-None-Match", &wanted)]);
    assert_eq!(r.status, 304);
    let r = srv.get(
        "/video/big.mp4",
        &[("Range", "bytes=0-9"), ("If-Range", &wanted)],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &data[..10]));
    // Hashed once, in the background.
    assert_eq!(
        metric(&scrape(&srv), "video_origin_digest_computations_total"),
        Some(2.0),
        "big.mp4 once in the background, small.mp4 once inline"
    );
}

#[test]
fn a_replaced_file_gets_its_new_etag_from_the_background_hasher() {
    let one = vec![1u8; 4 << 20];
    let two = vec![2u8; 4 << 20];
    let dir = assets(&[("v.mp4", &one)]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_METADATA__INLINE_HASH_MAX_BYTES", "4096")],
    );
    srv.get("/video/v.mp4", &[("Range", "bytes=0-0")]);
    assert!(eventually(Duration::from_secs(20), || srv
        .head("/video/v.mp4", &[])
        .header("etag")
        == Some(content_etag(&one).as_str())));
    // Replace by rename: the new version is served at once, then hashed in the background.
    std::fs::write(dir.path().join(".tmp"), &two).unwrap();
    std::fs::rename(dir.path().join(".tmp"), dir.path().join("v.mp4")).unwrap();
    let r = srv.get("/video/v.mp4", &[("Range", "bytes=0-3")]);
    assert_eq!(r.body, [2u8; 4]);
    assert_ne!(
        r.header("etag"),
        Some(content_etag(&one).as_str()),
        "never the old ETag"
    );
    assert!(eventually(Duration::from_secs(20), || srv
        .head("/video/v.mp4", &[])
        .header("etag")
        == Some(content_etag(&two).as_str())));
}
