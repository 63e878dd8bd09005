//! The s3 backend against moto's S3 on loopback through the real aws-sdk-s3 client (spec
//! aws-emulator.md: moto server, `force_path_style`): replicas sharing one bucket, uploads,
//! versions never mixed, faults. The range and conditional suites run on it in s3_suites.rs.

mod common;
use common::s3::{Bucket, Moto};
use common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "admin-token-for-object-storage-tests-0123456789";

fn sha_etag(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
    )
}

/// A replica serving `bucket` (through `endpoint`, e.g. a proxy), with an empty asset folder:
/// every byte it serves comes from the bucket.
fn replica(bucket: &Bucket, endpoint: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let empty = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = bucket.env();
    for (k, v) in env.iter_mut() {
        if k == "VIDEO_ORIGIN_STORAGE__S3__ENDPOINT_URL" {
            *v = endpoint.to_owned();
        }
    }
    env.push(("VIDEO_ORIGIN_ADMIN__TOKENS__OPS".into(), ADMIN.into()));
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    let srv = Server::start(empty.path(), &all);
    (empty, srv)
}

fn store_calls(srv: &Server, operation: &str) -> f64 {
    let text = scrape(srv);
    ["ok", "not_found", "replaced", "error", "unreachable"]
        .iter()
        .map(|o| {
            metric(
                &text,
                &format!(
                    "video_origin_store_requests_total{{operation=\"{operation}\",outcome=\"{o}\"}}"
                ),
            )
            .unwrap_or(0.0)
        })
        .sum()
}

#[test]
fn a_bucket_is_served_like_a_folder() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let video: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    bucket.put("v/a.mp4", &video, true);
    bucket.put("v/plain.mp4", b"no digest recorded", false);
    bucket.put(".video-origin-uploads/staged", b"never served", false);
    let (_e, srv) = replica(&bucket, &moto.endpoint, &[]);

    let r = srv.get("/video/v/a.mp4", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, video);
    assert_eq!(r.h("etag"), sha_etag(&video));
    assert_eq!(r.h("content-type"), "video/mp4");

    // The same bytes in a folder: the fs backend sends the very same ETag (spec http-origin C-3).
    let dir = assets(&[("v/a.mp4", &video)]);
    let fs = Server::start(dir.path(), &[]);
    assert_eq!(fs.get("/video/v/a.mp4", &[]).h("etag"), r.h("etag"));

    // No digest yet: a strong validator from the store's ETag, the same on every replica.
    let plain = srv.get("/video/v/plain.mp4", &[]);
    assert_eq!(plain.status, 200);
    assert!(plain.h("etag").starts_with("\"s3-"), "{}", plain.h("etag"));
    let (_e2, other) = replica(&bucket, &moto.endpoint, &[]);
    assert_eq!(
        other.get("/video/v/plain.mp4", &[]).h("etag"),
        plain.h("etag")
    );
    assert_eq!(
        other
            .get("/video/v/plain.mp4", &[("If-None-Match", plain.h("etag"))])
            .status,
        304
    );

    // A range is a ranged GET of exactly those bytes, never the whole object.
    let read_before = metric(&scrape(&srv), "video_origin_store_read_bytes_total").unwrap();
    let r = srv.get("/video/v/a.mp4", &[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &video[1000..2000]);
    let read_after = metric(&scrape(&srv), "video_origin_store_read_bytes_total").unwrap();
    assert_eq!(read_after - read_before, 1000.0);

    // HEAD, 304 and 412 make no GET at all.
    let gets = store_calls(&srv, "get");
    assert_eq!(srv.head("/video/v/a.mp4", &[]).status, 200);
    assert_eq!(
        srv.get("/video/v/a.mp4", &[("If-None-Match", &sha_etag(&video))])
            .status,
        304
    );
    assert_eq!(
        srv.get("/video/v/a.mp4", &[("If-Match", "\"other\"")])
            .status,
        412
    );
    assert_eq!(store_calls(&srv, "get"), gets);

    // Missing, hidden and climbing paths.
    assert_eq!(srv.get("/video/v/missing.mp4", &[]).status, 404);
    assert_eq!(
        srv.get("/video/.video-origin-uploads/staged", &[]).status,
        404
    );
    assert_eq!(srv.get("/video/v/../../x", &[]).status, 400);
    assert_eq!(srv.get("/video/v/%2e%2e/%2e%2e/x", &[]).status, 400);
}

#[test]
fn three_replicas_share_one_bucket() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    bucket.put("show/ep1.mp4", b"version one", true);
    let ttl = [("VIDEO_ORIGIN_STORAGE__S3__METADATA_TTL_SECS", "2")];
    let (_a0, a) = replica(&bucket, &moto.endpoint, &ttl);
    let (_b0, b) = replica(&bucket, &moto.endpoint, &ttl);
    let (_c0, c) = replica(&bucket, &moto.endpoint, &ttl);
    let old = a.get("/video/show/ep1.mp4", &[]).h("etag").to_string();
    for r in [&b, &c] {
        assert_eq!(r.get("/video/show/ep1.mp4", &[]).h("etag"), old);
        // A validator from one replica is good on the others.
        assert_eq!(
            r.get("/video/show/ep1.mp4", &[("If-None-Match", &old)])
                .status,
            304
        );
    }

    // Replace through replica A's admin API: A at once, B and C within the TTL.
    let v2 = b"version two, longer".to_vec();
    let put = a.admin_put("show/ep1.mp4", ADMIN, &v2);
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let new = sha_etag(&v2);
    assert!(String::from_utf8_lossy(&put.body).contains(new.trim_matches('"')));
    assert_eq!(a.get("/video/show/ep1.mp4", &[]).body, v2);
    for r in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(6), || {
                let g = r.get("/video/show/ep1.mp4", &[]);
                g.body == v2 && g.h("etag") == new
            }),
            "a replica kept the old version past the TTL"
        );
    }

    // A large upload goes up in parts, staged, and appears whole with its digest.
    let big: Vec<u8> = (0..(11u32 << 20))
        .map(|i| (i.wrapping_mul(31) >> 7) as u8)
        .collect();
    let put = a.admin_put("show/big.mp4", ADMIN, &big);
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert!(eventually(Duration::from_secs(6), || c
        .get("/video/show/big.mp4", &[])
        .h("etag")
        == sha_etag(&big)));
    let r = b.get("/video/show/big.mp4", &[("Range", "bytes=9000000-9000999")]);
    assert_eq!(r.body, &big[9_000_000..9_001_000]);
    assert_eq!(bucket.get("show/big.mp4").unwrap(), big);
    assert_eq!(bucket.staging_keys(), Vec::<String>::new());
    assert_eq!(bucket.open_uploads(), 0);

    // An oversized upload is refused and leaves nothing behind.
    let (_d0, d) = replica(
        &bucket,
        &moto.endpoint,
        &[
            ("VIDEO_ORIGIN_ADMIN__MAX_UPLOAD_BYTES", "6000000"),
            ("VIDEO_ORIGIN_STORAGE__S3__PART_SIZE_MIB", "5"),
        ],
    );
    assert_eq!(d.admin_put("show/big.mp4", ADMIN, &big).status, 413);
    assert_eq!(
        bucket.get("show/big.mp4").unwrap(),
        big,
        "old object unchanged"
    );
    assert!(eventually(Duration::from_secs(5), || bucket.open_uploads() == 0));

    // Delete through B: every replica says 404 within the TTL.
    let del = b.admin("DELETE", "/admin/assets/show/ep1.mp4", Some(ADMIN), None);
    assert_eq!(del.status, 200, "{}", String::from_utf8_lossy(&del.body));
    for r in [&a, &b, &c] {
        assert!(eventually(Duration::from_secs(6), || r
            .get("/video/show/ep1.mp4", &[])
            .status
            == 404));
    }
}

#[test]
fn replacing_during_range_reads_never_mixes_versions() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    const LEN: usize = 1 << 20;
    bucket.put("r.mp4", &vec![b'a'; LEN], true);
    let (_e, srv) = replica(
        &bucket,
        &moto.endpoint,
        &[("VIDEO_ORIGIN_STORAGE__S3__METADATA_TTL_SECS", "1")],
    );
    let srv = Arc::new(srv);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let srv = Arc::clone(&srv);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut checked = 0;
                let mut seen = std::collections::BTreeSet::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7919 + 13) % 400;
                    // Two ranges far apart: two ranged GETs for one response, each pinned to
                    // the version the lookup saw.
                    let start = i * 1000;
                    let range = format!(
                        "bytes={start}-{},{}-{}",
                        start + 49_999,
                        start + 500_000,
                        start + 549_999
                    );
                    let r = srv.get("/video/r.mp4", &[("Range", &range)]);
                    if r.status != 206 {
                        continue;
                    }
                    let boundary = r
                        .h("content-type")
                        .strip_prefix("multipart/byteranges; boundary=")
                        .expect("multipart")
                        .to_string();
                    if r.body.len() != r.content_length() {
                        continue; // ended short: allowed, and checked below for mixing
                    }
                    let data: Vec<u8> = parse_multipart(&r.body, &boundary)
                        .into_iter()
                        .flat_map(|p| p.data)
                        .collect();
                    let first = data.first().copied();
                    assert!(
                        data.iter().all(|b| Some(*b) == first),
                        "a body mixed two versions"
                    );
                    assert_eq!(data.len(), 100_000);
                    seen.extend(first);
                    checked += 1;
                }
                (checked, seen)
            })
        })
        .collect();
    for round in 0..12 {
        let byte = if round % 2 == 0 { b'b' } else { b'a' };
        bucket.put("r.mp4", &vec![byte; LEN], true);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let mut checked = 0;
    let mut seen = std::collections::BTreeSet::new();
    for h in readers {
        let (n, s) = h.join().unwrap();
        checked += n;
        seen.extend(s);
    }
    assert!(checked > 10, "only {checked} responses checked");
    assert_eq!(
        seen.len(),
        2,
        "reads saw both versions while they were replaced"
    );
}

/// A loopback TCP proxy in front of moto that can pass, refuse, cut responses short, or
/// throttle the way S3 does (503 `SlowDown`, documented in the S3 API reference's error codes).
struct Proxy {
    port: u16,
    /// 0 pass, 1 refuse (close at once), 2 pass the first 64 KiB of each response, then cut,
    /// 3 stall (read the request, never answer, hold the connection).
    mode: Arc<AtomicU8>,
    /// Connections still to answer with 503 SlowDown (any mode).
    throttle: Arc<std::sync::atomic::AtomicUsize>,
    /// Answer every request 403 with no body: what S3 sends to a HEAD signed with keys it
    /// does not accept (S3 API reference, HeadBucket: "403 Forbidden", HEAD has no body).
    deny: Arc<std::sync::atomic::AtomicBool>,
}

const FORBIDDEN: &str = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

const SLOW_DOWN: &str = "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 111\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>";

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(0));
        let throttle = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let m = Arc::clone(&mode);
        let t = Arc::clone(&throttle);
        let deny = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = Arc::clone(&deny);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                if d.load(Ordering::Relaxed) {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let _ = client.write_all(FORBIDDEN.as_bytes());
                    continue;
                }
                if t.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // Read the request head, then answer as a throttling S3 does.
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let _ = client.write_all(SLOW_DOWN.as_bytes());
                    continue;
                }
                let mode = m.load(Ordering::Relaxed);
                if mode == 1 {
                    drop(client);
                    continue;
                }
                if mode == 3 {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        let _ = client.read(&mut buf);
                        std::thread::sleep(Duration::from_secs(30));
                    });
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut up = upstream;
                    let mut cl = client;
                    let _ = std::io::copy(&mut cl, &mut up);
                    let _ = up.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut sent = 0usize;
                    loop {
                        let n = match u2.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if mode == 2 && sent + n > 64 << 10 {
                            break;
                        }
                        if c2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                    let _ = u2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            port,
            mode,
            throttle,
            deny,
        }
    }
}

#[test]
fn a_store_outage_is_503_and_not_ready_then_recovers() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let video: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    bucket.put("o.mp4", &video, true);
    let proxy = Proxy::start(moto.port);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    // No metadata cache, short attempts: every request asks the store.
    let (_e, srv) = replica(
        &bucket,
        &endpoint,
        &[
            ("VIDEO_ORIGIN_STORAGE__S3__METADATA_TTL_SECS", "0"),
            ("VIDEO_ORIGIN_STORAGE__S3__ATTEMPT_TIMEOUT_MS", "500"),
            ("VIDEO_ORIGIN_STORAGE__S3__MAX_ATTEMPTS", "2"),
        ],
    );
    assert_eq!(srv.get("/video/o.mp4", &[]).body, video);
    assert_eq!(srv.get("/readyz", &[]).status, 200);

    // Throttled once: the retry (with backoff) within the attempt budget serves it.
    proxy.throttle.store(1, Ordering::Relaxed);
    let r = srv.get("/video/o.mp4", &[("Range", "bytes=0-99")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &video[..100]);
    assert_eq!(
        proxy.throttle.load(Ordering::Relaxed),
        0,
        "the store was asked twice"
    );
    // Throttled past the budget (2 attempts): 503 with Retry-After, not a 500.
    proxy.throttle.store(2, Ordering::Relaxed);
    let r = srv.get("/video/o.mp4", &[]);
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    // A lookup is a HEAD, whose answer has no body to name the code: the status is logged.
    let log = srv.log_text();
    assert!(
        log.contains("object store: HTTP 503") || log.contains("SlowDown"),
        "the store's answer is logged:\n{log}"
    );

    proxy.mode.store(1, Ordering::Relaxed);
    let r = srv.get("/video/o.mp4", &[]);
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert!(eventually(Duration::from_secs(10), || srv
        .get("/readyz", &[])
        .status
        == 503));
    assert!(
        store_calls(&srv, "head") > 0.0
            && metric(
                &scrape(&srv),
                "video_origin_store_requests_total{operation=\"head\",outcome=\"unreachable\"}"
            )
            .unwrap_or(0.0)
                >= 1.0
    );
    assert!(srv.log_text().contains("object store unreachable"));

    // Back without a restart.
    proxy.mode.store(0, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || srv
        .get("/readyz", &[])
        .status
        == 200));
    assert_eq!(srv.get("/video/o.mp4", &[]).body, video);

    // A store that accepts and never answers: each attempt times out (500 ms, 2 attempts), then
    // 503 with Retry-After rather than a hung request; back at once when it answers again.
    let unreachable = || {
        metric(
            &scrape(&srv),
            "video_origin_store_requests_total{operation=\"head\",outcome=\"unreachable\"}",
        )
        .unwrap_or(0.0)
    };
    let before = unreachable();
    proxy.mode.store(3, Ordering::Relaxed);
    let asked = std::time::Instant::now();
    let r = srv.get("/video/o.mp4", &[]);
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "answered after the attempt budget, not when the store gave up"
    );
    assert!(
        unreachable() > before,
        "the timed-out lookup is counted unreachable"
    );
    assert!(srv.log_text().contains("Timeout"), "{}", srv.log_text());
    proxy.mode.store(0, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || srv
        .get("/video/o.mp4", &[])
        .body
        == video));

    // Cut mid-body: the response ends short, never padded or corrupted.
    proxy.mode.store(2, Ordering::Relaxed);
    let r = srv.get("/video/o.mp4", &[]);
    if r.status == 200 {
        assert_eq!(r.content_length(), video.len());
        assert!(r.body.len() < video.len(), "the body cannot be complete");
        assert_eq!(
            r.body,
            &video[..r.body.len()],
            "bytes served are the object's"
        );
    } else {
        assert_eq!(r.status, 503);
    }
}

#[test]
fn a_bucket_that_does_not_answer_stops_startup_with_the_key() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let empty = tempfile::tempdir().unwrap();
    // `serve` on the bucket with one of its settings changed: (started, stderr).
    let serve_with = |key: &str, value: &str| {
        let mut env = bucket.env();
        for (k, v) in env.iter_mut() {
            if k == key {
                *v = value.to_owned();
            }
        }
        let mut pairs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push(("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"));
        let (ok, _out, err) = run_cli(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--assets",
                empty.path().to_str().unwrap(),
            ],
            &pairs,
        );
        (ok, err)
    };
    let (ok, err) = serve_with("VIDEO_ORIGIN_STORAGE__S3__BUCKET", "no-such-bucket-here");
    assert!(!ok);
    assert!(err.contains("storage.s3.bucket"), "{err}");
    assert!(
        err.contains("environment variable VIDEO_ORIGIN_STORAGE__S3__BUCKET"),
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(!err.contains("test-secret-never-logged"), "{err}");

    // Credentials the store refuses: the key, and the store's answer (a HEAD has no error
    // body to name the code, so the status).
    let proxy = Proxy::start(moto.port);
    proxy.deny.store(true, Ordering::Relaxed);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let (ok, err) = serve_with("VIDEO_ORIGIN_STORAGE__S3__ENDPOINT_URL", &endpoint);
    assert!(!ok);
    assert!(
        err.contains("storage.s3.bucket") && err.contains("HTTP 403"),
        "{err}"
    );
    assert!(!err.contains("test-secret-never-logged"), "{err}");

    // A bucket name S3 cannot have is refused before any call.
    let (ok, _out, err) = run_cli(
        &["check-config"],
        &[
            ("VIDEO_ORIGIN_STORAGE__BACKEND", "s3"),
            ("VIDEO_ORIGIN_STORAGE__S3__BUCKET", "Bad_Bucket"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("storage.s3.bucket"), "{err}");
}

#[test]
fn a_viewer_that_stops_reading_does_not_make_the_origin_read_the_object() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let big = vec![7u8; 48 << 20];
    bucket.put("huge.mp4", &big, true);
    let (_e, srv) = replica(&bucket, &moto.endpoint, &[]);
    let mut s = srv.connect();
    s.write_all(b"GET /video/huge.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 64 << 10];
    s.read_exact(&mut first).unwrap();
    // The viewer stalls. Give the origin time to read ahead, if it would.
    std::thread::sleep(Duration::from_secs(2));
    let read = metric(&scrape(&srv), "video_origin_store_read_bytes_total").unwrap();
    assert!(
        read < (16u64 << 20) as f64,
        "read {read} bytes of a 48 MiB object for a viewer that took 64 KiB"
    );
    drop(s);
}

#[test]
fn index_records_digests_in_the_bucket_without_clobbering() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let a = b"bytes published by some other tool".to_vec();
    bucket.put("pub/a.mp4", &a, false);
    bucket.put("pub/b.mp4", b"already indexed", true);
    let (_e, srv) = replica(
        &bucket,
        &moto.endpoint,
        &[("VIDEO_ORIGIN_STORAGE__S3__METADATA_TTL_SECS", "1")],
    );
    assert!(srv
        .get("/video/pub/a.mp4", &[])
        .h("etag")
        .starts_with("\"s3-"));
    let env = bucket.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (ok, out, err) = run_cli(&["index", "--verbose"], &pairs);
    assert!(ok, "{out}{err}");
    assert!(out.contains("indexed 2 objects"), "{out}");
    assert!(out.contains("1 digests recorded"), "{out}");
    assert!(
        err.contains("pub/b.mp4") && err.contains("had its digest"),
        "{err}"
    );
    assert!(err.contains("indexed 2/2 objects"), "{err}");
    assert!(!err.contains("test-secret-never-logged") && !out.contains("test-secret-never-logged"));
    // Every replica now sends the content digest, as the fs backend would.
    assert!(eventually(Duration::from_secs(4), || srv
        .get("/video/pub/a.mp4", &[])
        .h("etag")
        == sha_etag(&a)));
    assert_eq!(bucket.get("pub/a.mp4").unwrap(), a, "bytes unchanged");
    let (ok, out, _) = run_cli(&["index"], &pairs);
    assert!(ok && out.contains("0 digests recorded"), "{out}");
}

#[test]
fn a_replaced_object_is_never_served_under_the_old_validator() {
    // The lookup is cached for a minute; the object is replaced behind the replica's back. The
    // ranged GET is pinned to the version looked up (If-Match), so the store refuses it, and
    // the replica looks up again instead of sending new bytes under the old ETag and length.
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let v1 = b"first version".to_vec();
    bucket.put("p.mp4", &v1, true);
    let (_e, srv) = replica(
        &bucket,
        &moto.endpoint,
        &[("VIDEO_ORIGIN_STORAGE__S3__METADATA_TTL_SECS", "60")],
    );
    assert_eq!(srv.get("/video/p.mp4", &[]).h("etag"), sha_etag(&v1));
    let v2 = b"the second version, longer".to_vec();
    bucket.put("p.mp4", &v2, true);
    let r = srv.get("/video/p.mp4", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v2);
    assert_eq!(r.h("etag"), sha_etag(&v2));
    assert_eq!(r.content_length(), v2.len());
    assert!(
        metric(
            &scrape(&srv),
            "video_origin_store_requests_total{operation=\"get\",outcome=\"replaced\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn a_missing_object_stays_404_for_the_negative_ttl_until_evicted() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    let (_e, srv) = replica(
        &bucket,
        &moto.endpoint,
        &[("VIDEO_ORIGIN_STORAGE__S3__NEGATIVE_TTL_SECS", "60")],
    );
    assert_eq!(srv.get("/video/late.mp4", &[]).status, 404);
    let heads = store_calls(&srv, "head");
    bucket.put("late.mp4", b"published after the first request", true);
    // Within the negative TTL the 404 is answered from the cache, without asking the store.
    assert_eq!(srv.get("/video/late.mp4", &[]).status, 404);
    assert_eq!(store_calls(&srv, "head"), heads);
    // Evicting the path (as a publisher would after writing the object) ends it at once.
    let r = srv.admin(
        "POST",
        "/admin/cache/evict",
        Some(ADMIN),
        Some(r#"{"paths":["late.mp4"]}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        srv.get("/video/late.mp4", &[]).body,
        b"published after the first request"
    );
}

/// A client that hangs up in the middle of a multipart upload: the upload is aborted (no open
/// multipart upload, no staging object) and the old object stays as it was.
#[test]
fn an_upload_cut_off_mid_body_leaves_the_old_object_and_no_upload() {
    let moto = Moto::shared();
    let bucket = Bucket::new(&moto.endpoint);
    bucket.put("show/ep1.mp4", b"version one", true);
    let (_a0, a) = replica(
        &bucket,
        &moto.endpoint,
        &[("VIDEO_ORIGIN_STORAGE__S3__PART_SIZE_MIB", "5")],
    );
    {
        let mut s = TcpStream::connect(("127.0.0.1", a.admin_port.unwrap())).unwrap();
        let head = format!("PUT /admin/assets/show/ep1.mp4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: {}\r\n\r\n", 20u32 << 20);
        s.write_all(head.as_bytes()).unwrap();
        // More than a part: the multipart upload has begun when the client goes.
        s.write_all(&vec![7u8; 6 << 20]).unwrap();
        assert!(eventually(Duration::from_secs(10), || bucket
            .open_uploads()
            == 1));
    }
    assert!(
        eventually(Duration::from_secs(10), || bucket.open_uploads() == 0),
        "the multipart upload was left open"
    );
    assert_eq!(bucket.staging_keys(), Vec::<String>::new());
    assert_eq!(bucket.get("show/ep1.mp4").unwrap(), b"version one");
    assert_eq!(a.get("/video/show/ep1.mp4", &[]).body, b"version one");
}
