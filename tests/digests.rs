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

// --- Issue #14 point 4: the index works where the README says it does ----------------------

fn index_cli(dir: &std::path::Path, verbose: bool) -> (String, String) {
    let a = dir.display().to_string();
    let mut args = vec!["index", "--assets", &a];
    if verbose {
        args.push("--verbose");
    }
    let (ok, out, err) = run_cli(&args, &[]);
    assert!(ok, "{err}");
    (out, err)
}

const BACKGROUND: &[(&str, &str)] = &[("VIDEO_ORIGIN_METADATA__INLINE_HASH_MAX_BYTES", "1024")];

#[test]
fn a_running_server_picks_up_a_rewritten_index() {
    let data = vec![5u8; 3 << 20];
    let dir = assets(&[("a.mp4", &data), ("b.mp4", b"bee")]);
    let srv = Server::start(dir.path(), BACKGROUND);
    let (out, err) = index_cli(dir.path(), true);
    assert!(out.starts_with("indexed 2 files into"), "{out}");
    assert!(err.contains("indexed 2/2 files"), "progress: {err}");
    assert!(
        err.contains("a.mp4  3145728 bytes"),
        "--verbose names each file: {err}"
    );
    assert!(
        eventually(Duration::from_secs(15), || srv
            .log_text()
            .contains("digest index reloaded")),
        "{}",
        srv.log_text()
    );
    // Never requested before, larger than the inline limit, yet the first answer has its ETag.
    let r = srv.get("/video/a.mp4", &[("Range", "bytes=0-0")]);
    assert_eq!(r.header("etag"), Some(content_etag(&data).as_str()));
    assert_eq!(
        metric(&scrape(&srv), "video_origin_digest_computations_total"),
        Some(0.0),
        "the index answered; nothing was hashed"
    );
}

#[test]
fn index_entries_carry_over_to_copies_and_rewrites_are_confirmed() {
    let data = vec![6u8; 3 << 20];
    let original = assets(&[("s/a.mp4", &data), ("s/c.mp4", &vec![7u8; 3 << 20])]);
    index_cli(original.path(), false);
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", original.path().display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    // A rewrite in the copy that keeps the size and restores the modification time.
    let c = copy.path().join("s/c.mp4");
    let mtime = std::fs::metadata(&c).unwrap().modified().unwrap();
    let rewritten = vec![8u8; 3 << 20];
    std::fs::write(&c, &rewritten).unwrap();
    set_mtime(&c, mtime);
    let srv = Server::start(copy.path(), BACKGROUND);
    // The copy (new inode, same size and mtime) gets the index's ETag at once.
    let r = srv.get("/video/s/a.mp4", &[("Range", "bytes=0-0")]);
    assert_eq!(r.header("etag"), Some(content_etag(&data).as_str()));
    // Both are confirmed in the background; the rewrite's ETag then follows its bytes.
    srv.get("/video/s/c.mp4", &[("Range", "bytes=0-0")]);
    assert!(eventually(Duration::from_secs(30), || srv
        .head("/video/s/c.mp4", &[])
        .header("etag")
        == Some(content_etag(&rewritten).as_str())));
    assert_eq!(
        srv.head("/video/s/a.mp4", &[]).header("etag"),
        Some(content_etag(&data).as_str()),
        "a true copy keeps its ETag after confirmation"
    );
    assert!(eventually(Duration::from_secs(30), || metric(
        &scrape(&srv),
        "video_origin_digest_computations_total"
    ) == Some(2.0)));
}

#[test]
fn new_and_replaced_files_are_hashed_before_anyone_asks() {
    let dir = assets(&[("old.mp4", b"old")]);
    let srv = Server::start(dir.path(), BACKGROUND);
    // The watch is installed off the start path; the log says when.
    assert!(eventually(Duration::from_secs(10), || srv
        .log_text()
        .contains("watching the asset root")));
    // Published by another tool: written in place, and renamed into place.
    let data = vec![4u8; 3 << 20];
    std::fs::write(dir.path().join("new.mp4"), &data).unwrap();
    let renamed = vec![9u8; 2 << 20];
    std::fs::write(dir.path().join(".incoming"), &renamed).unwrap();
    std::fs::rename(dir.path().join(".incoming"), dir.path().join("moved.mp4")).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || metric(
            &scrape(&srv),
            "video_origin_digest_computations_total"
        ) == Some(2.0)),
        "both hashed without a request: {}",
        scrape(&srv)
    );
    // The first request of each already carries the content ETag.
    let r = srv.get("/video/new.mp4", &[("Range", "bytes=0-0")]);
    assert_eq!(r.header("etag"), Some(content_etag(&data).as_str()));
    let r = srv.get("/video/moved.mp4", &[("Range", "bytes=0-0")]);
    assert_eq!(r.header("etag"), Some(content_etag(&renamed).as_str()));
}

/// Reading the library (nginx beside us, a backup) must cost the watcher nothing: only writes,
/// renames and new folders are subscribed to. A folder of files moved in at once (a show's
/// segments) is hashed without a request, through a watch added for it.
#[test]
fn reads_by_other_processes_wake_nothing_and_folders_moved_in_are_hashed() {
    let dir = assets(&[("old.mp4", b"old")]);
    let srv = Server::start(dir.path(), BACKGROUND);
    assert!(eventually(Duration::from_secs(10), || srv
        .log_text()
        .contains("watching the asset root")));
    let events = |srv: &Server| metric(&scrape(srv), "video_origin_library_events_total");
    let before = events(&srv);
    assert_eq!(before, Some(0.0), "{}", scrape(&srv));
    for _ in 0..500 {
        std::fs::read(dir.path().join("old.mp4")).unwrap();
    }
    // A write after the reads: once it is counted, the reads would have been counted too.
    std::fs::write(dir.path().join("marker.mp4"), b"m").unwrap();
    assert!(eventually(Duration::from_secs(10), || events(&srv) > before));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        events(&srv),
        Some(2.0),
        "one create and one close-after-write, nothing for 500 reads"
    );

    let digests = |srv: &Server| {
        metric(&scrape(srv), "video_origin_digest_computations_total").unwrap_or(0.0)
    };
    let hashed = digests(&srv);
    let outside = tempfile::tempdir().unwrap();
    let seg = vec![5u8; 3 << 20];
    std::fs::create_dir_all(outside.path().join("show/hls")).unwrap();
    std::fs::write(outside.path().join("show/hls/a.ts"), &seg).unwrap();
    std::fs::rename(outside.path().join("show"), dir.path().join("show")).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || digests(&srv) == hashed + 1.0),
        "the moved-in folder's file hashed without a request: {}",
        scrape(&srv)
    );
    let r = srv.get("/video/show/hls/a.ts", &[("Range", "bytes=0-0")]);
    assert_eq!(r.header("etag"), Some(content_etag(&seg).as_str()));
}
