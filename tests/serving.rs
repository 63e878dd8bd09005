//! Routes, headers, path safety, streaming lifecycle and the CLI, against the real binary.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

#[test]
fn full_get_headers_and_head_equality() {
    let video = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample.mp4")).unwrap();
    let dir = assets(&[("sample.mp4", &video)]);
    let srv = Server::start(dir.path(), &[]);
    let g = srv.get("/video/sample.mp4", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, video);
    assert_eq!(g.content_length(), video.len());
    assert_eq!(g.h("content-type"), "video/mp4");
    assert_eq!(g.h("accept-ranges"), "bytes");
    assert_eq!(g.h("x-content-type-options"), "nosniff");
    assert_eq!(g.h("cache-control"), "public, max-age=60, s-maxage=86400");
    assert!(
        g.header("transfer-encoding").is_none(),
        "R-28: never chunked"
    );
    assert!(
        g.header("etag").is_some()
            && g.header("last-modified").is_some()
            && g.header("date").is_some()
    );
    // HEAD has the GET's headers (Date aside) and no body.
    let h = srv.head("/video/sample.mp4", &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    let strip = |r: &Resp| {
        let mut v: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "date")
            .cloned()
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&g), strip(&h));
}

#[test]
fn content_types_by_extension() {
    let files: Vec<(&str, &[u8])> = vec![
        ("a.m4s", b"x"),
        ("a.ts", b"x"),
        ("a.m3u8", b"#EXTM3U\n"),
        ("a.mpd", b"<MPD/>"),
        ("a.vtt", b"WEBVTT\n"),
        ("a.webm", b"x"),
        ("a.m4a", b"x"),
        ("a.jpg", b"x"),
        ("a.png", b"x"),
        ("a.json", b"{}"),
    ];
    let dir = assets(&files);
    let srv = Server::start(dir.path(), &[]);
    for (name, ct) in [
        ("a.m4s", "video/iso.segment"),
        ("a.ts", "video/mp2t"),
        ("a.m3u8", "application/vnd.apple.mpegurl"),
        ("a.mpd", "application/dash+xml"),
        ("a.vtt", "text/vtt; charset=utf-8"),
        ("a.webm", "video/webm"),
        ("a.m4a", "audio/mp4"),
        ("a.jpg", "image/jpeg"),
        ("a.png", "image/png"),
        ("a.json", "application/json"),
    ] {
        assert_eq!(
            srv.get(&format!("/video/{name}"), &[]).h("content-type"),
            ct,
            "{name}"
        );
    }
}

#[test]
fn methods_and_routes() {
    let dir = assets(&[("a.mp4", b"abc")]);
    let srv = Server::start(dir.path(), &[]);
    for m in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = srv.request(m, "/video/a.mp4", &[]);
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.h("allow"), "GET, HEAD");
    }
    let r = srv.get("/elsewhere/a.mp4", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"not found\n");
    assert_eq!(
        r.h("cache-control"),
        "public, max-age=10",
        "H-20: 404 short-lived"
    );
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    // The mount prefix is configurable.
    let srv2 = Server::start(dir.path(), &[("VIDEO_ORIGIN_ASSETS__MOUNT", "/media/v1")]);
    assert_eq!(srv2.get("/media/v1/a.mp4", &[]).body, b"abc");
    assert_eq!(srv2.get("/video/a.mp4", &[]).status, 404);
}

#[test]
fn path_safety() {
    // Layout: root/{a.mp4, sub/b.mp4, dir/, .secret, escape.mp4 -> outside/secret.mp4}
    let outside = assets(&[("secret.mp4", b"TOP SECRET")]);
    let dir = assets(&[
        ("a.mp4", b"abc"),
        ("sub/b.mp4", b"bbb"),
        (".secret", b"dot"),
    ]);
    std::fs::create_dir(dir.path().join("dir")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.mp4"),
        dir.path().join("escape.mp4"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escdir")).unwrap();
    std::os::unix::fs::symlink("a.mp4", dir.path().join("alias.mp4")).unwrap();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(
        srv.get("/video/sub/b.mp4", &[]).body,
        b"bbb",
        "nested folders"
    );
    assert_eq!(srv.get("/video/sub//b.mp4", &[]).body, b"bbb");
    assert_eq!(
        srv.get("/video/alias.mp4", &[]).body,
        b"abc",
        "symlink inside the root"
    );
    for (path, status) in [
        ("/video/../Cargo.toml", 400),
        ("/video/sub/../../x", 400),
        ("/video/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/video/%2E%2E%2Fetc%2Fpasswd", 400),
        ("/video/sub/%2e%2e/a.mp4", 400),
        ("/video/a.mp4%00.txt", 400),
        ("/video/..%5c..%5cetc", 400),
        ("/video/%zz", 400),
        ("/video/%ff.mp4", 400),
        ("/video/.secret", 404),
        ("/video/escape.mp4", 404),
        ("/video/escdir/secret.mp4", 404),
        ("/video/dir", 404),
        ("/video/dir/", 404),
        ("/video/", 404),
        ("/video/missing.mp4", 404),
    ] {
        let r = srv.get(path, &[]);
        assert_eq!(r.status, status, "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRET"),
            "{path}"
        );
        assert!(
            r.body.len() < 100 && r.h("content-type").starts_with("text/plain"),
            "{path}"
        );
    }
    // A raw request line with a literal "..": hyper passes it through, we must still refuse.
    let r = srv.raw(
        b"GET /video/sub/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    let log = srv.log_text();
    assert!(
        log.contains("outside the asset root"),
        "escape attempts are logged"
    );
}

/// Opens `n` streams of big.mp4, reads a little of each, and returns them still open.
fn live_streams(srv: &Server, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = srv.connect();
            s.write_all(b"GET /video/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 65536];
            s.read_exact(&mut buf).unwrap(); // headers + first bytes arrived: the stream is live
            s
        })
        .collect()
}

#[test]
fn disconnect_closes_the_file() {
    // Open-file cache off: every stream holds its own descriptor, closed when the client leaves.
    let big = vec![42u8; 64 << 20];
    let dir = assets(&[("big.mp4", &big)]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_METADATA__OPEN_FILES", "0")]);
    assert_eq!(
        srv.get("/video/big.mp4", &[("Range", "bytes=0-0")]).status,
        206
    ); // warm metadata
    assert!(eventually(Duration::from_secs(5), || srv.open_asset_fds() == 0));
    let baseline = srv.settled_fds();
    let streams = live_streams(&srv, 4);
    assert!(
        eventually(Duration::from_secs(5), || srv.open_asset_fds() == 4),
        "each live stream holds its file open (got {})",
        srv.open_asset_fds()
    );
    drop(streams); // clients vanish mid-body
    assert!(
        eventually(Duration::from_secs(10), || srv.open_asset_fds() == 0
            && srv.open_fds() <= baseline),
        "files and sockets closed after disconnect: asset fds {}, fds {} vs baseline {baseline}",
        srv.open_asset_fds(),
        srv.open_fds()
    );
}

#[test]
fn disconnect_returns_to_baseline_with_open_file_cache() {
    // Default: one cached descriptor shared by every stream; disconnects leak nothing.
    let big = vec![42u8; 64 << 20];
    let dir = assets(&[("big.mp4", &big)]);
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(
        srv.get("/video/big.mp4", &[("Range", "bytes=0-0")]).status,
        206
    );
    assert!(eventually(Duration::from_secs(5), || srv.open_asset_fds() == 1));
    let baseline = srv.settled_fds();
    let streams = live_streams(&srv, 4);
    assert_eq!(
        srv.open_asset_fds(),
        1,
        "streams share the cached descriptor"
    );
    assert!(
        eventually(Duration::from_secs(5), || srv.open_fds() >= baseline + 4),
        "4 sockets"
    );
    drop(streams);
    assert!(
        eventually(Duration::from_secs(10), || srv.open_fds() == baseline),
        "back to baseline after disconnect: {} vs {baseline}",
        srv.open_fds()
    );
    // Replacing the file releases the old descriptor at the next request.
    std::fs::write(dir.path().join(".new"), b"new").unwrap();
    std::fs::rename(dir.path().join(".new"), dir.path().join("big.mp4")).unwrap();
    assert_eq!(srv.get("/video/big.mp4", &[]).body, b"new");
    assert!(eventually(Duration::from_secs(5), || srv.open_asset_fds() == 1));
}

#[test]
fn in_place_rewrite_mid_response_ends_the_body_short() {
    let len = 32 << 20;
    let dir = assets(&[("v.mp4", &vec![b'A'; len])]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_STREAMING__READ_SIZE", "65536")],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 128 * 1024];
    s.read_exact(&mut first).unwrap();
    // Rewrite in place (same length, other bytes) while the response is still being sent.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("v.mp4"), vec![b'B'; len]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let mut all = first;
    all.extend_from_slice(&rest);
    let r = Resp::parse(&all);
    assert_eq!(r.content_length(), len);
    assert!(
        r.body.len() < len,
        "the response must end early, got all {} bytes",
        r.body.len()
    );
    // Socket buffers may still hold old bytes, but no byte of the new version is ever sent.
    assert!(
        r.body.iter().all(|&b| b == b'A'),
        "bytes of two versions were spliced"
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_responses() {
    let len = 8 << 20;
    let dir = assets(&[("v.mp4", &vec![7u8; len])]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_SERVER__SHUTDOWN_GRACE_SECS", "20")],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 4096];
    s.read_exact(&mut first).unwrap();
    srv.sigterm();
    // New connections are refused once the listener is closed.
    assert!(eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", srv.port)).is_err()
    }));
    // The slow reader still gets every byte.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let r = Resp::parse(&first);
    assert_eq!(r.body.len(), len);
    let mut child = srv;
    let status = child.child.wait().unwrap();
    assert!(status.success(), "clean exit after drain: {status:?}");
}

#[test]
fn access_log_has_one_line_per_request() {
    let dir = assets(&[("a.mp4", b"0123456789")]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_LOG__FORMAT", "json")]);
    srv.get("/video/a.mp4?token=SECRETTOKEN", &[("Range", "bytes=2-5")]);
    assert!(eventually(Duration::from_secs(5), || srv
        .log_text()
        .contains("\"status\":206")));
    let log = srv.log_text();
    let line = log.lines().find(|l| l.contains("\"status\":206")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/video/a.mp4");
    assert_eq!(v["bytes"], 4);
    assert_eq!(v["range"], "bytes=2-5");
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(
        !log.contains("SECRETTOKEN"),
        "query strings never reach the log"
    );
}

#[test]
fn buffered_access_log_flushes_on_interval_and_at_shutdown() {
    let dir = assets(&[("a.mp4", &[7u8; 100])]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_LOG__BUFFER_BYTES", "65536"),
            ("VIDEO_ORIGIN_LOG__FLUSH_MS", "200"),
            ("VIDEO_ORIGIN_SERVER__WORKERS", "2"),
        ],
    );
    srv.get("/video/a.mp4", &[]);
    assert!(
        eventually(Duration::from_secs(5), || srv
            .log_text()
            .contains("path=\"/video/a.mp4\"")),
        "a buffered line is written within the flush interval"
    );
    for i in 0..50 {
        srv.get(
            &format!("/video/a.mp4?n={i}"),
            &[("Range", &format!("bytes={i}-{i}"))],
        );
    }
    srv.sigterm();
    let mut srv = srv;
    srv.child.wait().unwrap();
    let lines = srv
        .log_text()
        .lines()
        .filter(|l| l.contains("status=206"))
        .count();
    assert_eq!(lines, 50, "every buffered line is flushed at shutdown");
}

#[test]
fn bad_config_fails_fast_naming_file_key_and_reason() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("bad.toml");
    std::fs::write(&cfg, "[ranges]\nmax_ranges = -3\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("ranges.max_ranges"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["check-config", "--assets", "/nonexistent/dir"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("assets.root"));

    let out = Command::new(BIN)
        .arg("check-config")
        .current_dir(work.path())
        .env("VIDEO_ORIGIN_CACHE__FILE_CACHE_CONTROL", "max-age=\"5\"")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("VIDEO_ORIGIN_CACHE__FILE_CACHE_CONTROL")
            && err.contains("cache.file_cache_control"),
        "{err}"
    );
}

#[test]
fn check_config_prints_effective_settings() {
    let dir = assets(&[("a.mp4", b"x")]);
    let out = Command::new(BIN)
        .args(["check-config", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_RANGES__MAX_RANGES", "7")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(parsed["ranges"]["max_ranges"].as_integer(), Some(7));
}

#[test]
fn warm_up_hashes_every_file_at_start() {
    let dir = assets(&[
        ("a.mp4", b"one"),
        ("s/b.mp4", b"two"),
        (".hidden", b"never"),
    ]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_METADATA__WARM_UP", "true")]);
    assert!(
        eventually(Duration::from_secs(10), || srv
            .log_text()
            .contains("metadata warm-up done")),
        "{}",
        srv.log_text()
    );
    assert!(srv.log_text().contains("files=2"), "{}", srv.log_text());
}

#[test]
fn index_command_precomputes_digests() {
    let dir = assets(&[("a.mp4", b"indexed"), ("s/b.mp4", b"also")]);
    let out = Command::new(BIN)
        .args(["index", "--assets"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("indexed 2 files"));
    let idx = dir.path().join(".video-origin-index.json");
    assert!(idx.is_file());
    let srv = Server::start(dir.path(), &[("RUST_LOG", "info")]);
    assert!(
        srv.log_text().contains("digest index loaded")
            || eventually(Duration::from_secs(2), || srv
                .log_text()
                .contains("digest index loaded"))
    );
    // The index file itself is never served (dotfile).
    assert_eq!(srv.get("/video/.video-origin-index.json", &[]).status, 404);
    // A corrupt index stops startup with a clear error.
    std::fs::write(&idx, b"{broken").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--assets"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest index"));
}

#[test]
fn hashing_a_large_file_does_not_stall_other_requests() {
    // spec: issue 2 point 6: digests are computed on the blocking pool. While the first request
    // for a large file waits for its SHA-256, other files are served.
    let dir = assets(&[("big.mp4", &vec![3u8; 256 << 20]), ("small.mp4", b"small")]);
    let srv = std::sync::Arc::new(Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__WORKERS", "1"),
            // Inline hashing of large files, the case this test is about (the default hashes
            // them in the background; tests/digests.rs).
            ("VIDEO_ORIGIN_METADATA__INLINE_HASH_MAX_BYTES", "1073741824"),
        ],
    ));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, d2) = (srv.clone(), done.clone());
    let big = std::thread::spawn(move || {
        let r = s2.get("/video/big.mp4", &[("Range", "bytes=0-0")]);
        d2.store(true, std::sync::atomic::Ordering::SeqCst);
        r.status
    });
    // Wait until the hash is under way (the big request is in flight, not yet answered).
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !done.load(std::sync::atomic::Ordering::SeqCst),
        "hashing 256 MiB finished implausibly fast"
    );
    let r = srv.get("/video/small.mp4", &[]);
    assert_eq!(r.body, b"small");
    assert!(
        !done.load(std::sync::atomic::Ordering::SeqCst),
        "the small file was served while the large one was still being hashed"
    );
    assert_eq!(big.join().unwrap(), 206);
}

#[test]
fn grace_period_cuts_off_responses_that_do_not_finish() {
    // spec: issue 2 point 10: in-flight responses get the grace period, then the server exits.
    let dir = assets(&[("v.mp4", &vec![7u8; 64 << 20])]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__SHUTDOWN_GRACE_SECS", "1"),
            ("VIDEO_ORIGIN_SERVER__WORKERS", "3"),
        ],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 4096];
    s.read_exact(&mut first).unwrap();
    // This client stops reading: its response can never finish.
    srv.sigterm();
    let mut srv = srv;
    let started = std::time::Instant::now();
    let exited = eventually(Duration::from_secs(15), || {
        srv.child.try_wait().unwrap().is_some()
    });
    assert!(
        exited,
        "the process must exit once the grace period is over"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(s);
    // #18.4: each shutdown line once per process, not once per worker (three here).
    let log = srv.log_text();
    for line in [
        "shutting down: listeners closed",
        "grace period over",
        "shut down: every worker stopped",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line}: {log}");
    }
}
