//! Three replicas over copies of the same library made at different times (different mtimes
//! and inodes) agree on ETag, Cache-Control and bytes, and a validator from one replica gets
//! 304 from every other: what lets a CDN pool replicas (issue #8, spec http-origin CT-*).

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, SystemTime};

const FILES: &[(&str, usize)] = &[
    ("movie.mp4", 300_000),
    ("hls/master.m3u8", 120),
    ("hls/seg-00001.m4s", 50_000),
    ("private/secret.mp4", 1000),
];

fn content(name: &str, len: usize) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// A copy of the library whose files all carry `mtime` (a new inode for every file).
fn replica_dir(mtime: SystemTime) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in FILES {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(name, *len)).unwrap();
        set_mtime(&p, mtime);
    }
    dir
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn replicas_agree_on_etag_cache_control_and_bytes_and_honour_each_others_validators() {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    // Replica 0's copy is the oldest: its Last-Modified satisfies If-Modified-Since on no one else.
    let dirs = [
        replica_dir(now - 3 * day),
        replica_dir(now - 2 * day),
        replica_dir(now - day),
    ];
    assert_ne!(
        inode(&dirs[0].path().join("movie.mp4")),
        inode(&dirs[1].path().join("movie.mp4"))
    );
    let replicas: Vec<Server> = dirs
        .iter()
        .map(|d| Server::start(d.path(), &[("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY)]))
        .collect();

    let requests: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/video/movie.mp4".into(), vec![]),
        (
            "/video/movie.mp4".into(),
            vec![("Range", "bytes=1000-70999")],
        ),
        (
            "/video/movie.mp4".into(),
            vec![("Range", "bytes=0-99,200000-200099")],
        ),
        ("/video/hls/master.m3u8".into(), vec![]),
        (
            "/video/hls/seg-00001.m4s".into(),
            vec![("Range", "bytes=-500")],
        ),
        (signed("/video/private/secret.mp4"), vec![]),
    ];
    for (path, headers) in &requests {
        let answers: Vec<Resp> = replicas.iter().map(|r| r.get(path, headers)).collect();
        let first = &answers[0];
        assert!(
            first.status == 200 || first.status == 206,
            "{path}: {}",
            first.status
        );
        for (i, a) in answers.iter().enumerate().skip(1) {
            assert_eq!(a.status, first.status, "{path} replica {i}");
            assert_eq!(a.h("etag"), first.h("etag"), "{path} replica {i}: ETag");
            assert_eq!(
                a.h("cache-control"),
                first.h("cache-control"),
                "{path} replica {i}: Cache-Control"
            );
            assert_eq!(a.header("content-range"), first.header("content-range"));
            if first.h("content-type").starts_with("multipart/byteranges") {
                // Each answer has its own boundary; the parts must be the same bytes.
                let parts = |r: &Resp| {
                    let b = r
                        .h("content-type")
                        .split("boundary=")
                        .nth(1)
                        .unwrap()
                        .to_string();
                    parse_multipart(&r.body, &b)
                };
                assert_eq!(parts(a), parts(first), "{path} replica {i}: parts");
            } else {
                assert_eq!(a.body, first.body, "{path} replica {i}: bytes");
            }
            assert_ne!(
                a.h("last-modified"),
                first.h("last-modified"),
                "copies made at different times keep their own dates"
            );
        }
    }

    // A validator fetched from replica 0 (as a CDN stores it) revalidates on every replica,
    // even with an If-Modified-Since that only replica 0's date satisfies: If-None-Match wins
    // (RFC 9110 §13.2.2).
    let r0 = replicas[0].get("/video/movie.mp4", &[]);
    let (etag, lm) = (r0.h("etag").to_string(), r0.h("last-modified").to_string());
    for (i, r) in replicas.iter().enumerate() {
        let a = r.get(
            "/video/movie.mp4",
            &[("If-None-Match", &etag), ("If-Modified-Since", &lm)],
        );
        assert_eq!(a.status, 304, "replica {i}");
        assert_eq!(a.h("etag"), etag);
        assert!(a.body.is_empty());
        // The same for a range revalidation with If-Range.
        let a = r.get(
            "/video/movie.mp4",
            &[("Range", "bytes=0-9"), ("If-Range", &etag)],
        );
        assert_eq!(a.status, 206, "If-Range with replica 0's ETag, replica {i}");
    }
    // The date alone would not have matched on the newer copies.
    for r in &replicas[1..] {
        assert_eq!(
            r.get("/video/movie.mp4", &[("If-Modified-Since", &lm)])
                .status,
            200
        );
    }
}
