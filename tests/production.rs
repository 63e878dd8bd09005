//! Production operations against the real binary on loopback (issue #6): metrics, idle /
//! write-stall timeouts, connection cap with 2,000 idle connections, descriptor exhaustion,
//! trusted proxies, access-log formats and the bounded wait queue. TLS/HTTP/2 are in tls.rs.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn metrics_count_what_happened() {
    let dir = assets(&[("a.mp4", &[5u8; 1000]), ("private/p.mp4", b"secret")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY),
            ("VIDEO_ORIGIN_LIMITS__MAX_STREAMS", "0"),
        ],
    );
    assert_eq!(
        srv.get("/video/a.mp4", &[("Range", "bytes=0-99")]).status,
        206
    );
    assert_eq!(srv.get("/video/a.mp4", &[]).status, 200);
    assert_eq!(srv.get("/video/missing.mp4", &[]).status, 404);
    assert_eq!(srv.get("/video/private/p.mp4", &[]).status, 403);
    assert_eq!(srv.get(&signed("/video/private/p.mp4"), &[]).status, 200);
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    let text = scrape(&srv);
    let m = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        m("video_origin_requests_total{route=\"asset\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        m("video_origin_requests_total{route=\"asset\",status=\"4xx\"}"),
        2.0
    );
    assert_eq!(
        m("video_origin_requests_total{route=\"health\",status=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        m("video_origin_response_bytes_total{route=\"asset\"}"),
        100.0 + 1000.0 + 6.0 + "not found\n".len() as f64 + "missing\n".len() as f64
    );
    assert_eq!(
        m("video_origin_token_verifications_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        m("video_origin_token_verifications_total{result=\"missing\"}"),
        1.0
    );
    assert_eq!(m("video_origin_time_to_first_byte_seconds_count"), 6.0);
    assert_eq!(m("video_origin_digest_computations_total"), 2.0);
    assert!(m("video_origin_metadata_cache_hits_total") >= 1.0);
    assert!(m("video_origin_metadata_cache_misses_total") >= 2.0);
    assert_eq!(m("video_origin_metadata_cache_entries"), 2.0);
    assert!(m("video_origin_open_fds") > 5.0);
    assert_eq!(m("video_origin_active_streams"), 0.0);
    assert_eq!(m("video_origin_ready"), 1.0);
    assert!(text.ends_with("# EOF\n"));
    // Not on the public listener unless configured.
    assert_eq!(srv.get("/metrics", &[]).status, 404);
}

#[test]
fn metrics_can_be_public_and_admin_can_be_off() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_METRICS__PUBLIC", "true"),
            ("VIDEO_ORIGIN_METRICS__ADMIN", "false"),
        ],
    );
    assert_eq!(
        srv.admin_port, None,
        "no admin listener without tokens or metrics"
    );
    let r = srv.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r
        .h("content-type")
        .starts_with("application/openmetrics-text"));
    assert_eq!(r.h("cache-control"), "no-store");
    assert!(String::from_utf8_lossy(&r.body).contains("video_origin_requests_total"));
}

/// Reads until EOF or error; returns how long that took.
fn time_to_close(s: &mut TcpStream, limit: Duration) -> Duration {
    s.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

fn keep_alive_get(s: &mut TcpStream, path: &str) -> Resp {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    read_response(s)
}

#[test]
fn idle_keep_alive_is_closed_after_idle_timeout_not_header_timeout() {
    let dir = assets(&[("a.mp4", b"abc")]);
    // Idle longer than the header timeout: hyper's own header timer would close at 1 s.
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__HEADER_READ_TIMEOUT_SECS", "1"),
            ("VIDEO_ORIGIN_SERVER__IDLE_TIMEOUT_SECS", "3"),
        ],
    );
    let mut s = srv.connect();
    assert_eq!(keep_alive_get(&mut s, "/video/a.mp4").status, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        keep_alive_get(&mut s, "/video/a.mp4").status,
        200,
        "a keep-alive idle for 2 s (> header timeout, < idle timeout) is still open"
    );
    let closed_after = time_to_close(&mut s, Duration::from_secs(15));
    assert!(
        closed_after >= Duration::from_secs(2) && closed_after < Duration::from_secs(8),
        "closed by the idle timeout (3 s), after {closed_after:?}"
    );
    let text = scrape(&srv);
    assert!(
        metric(
            &text,
            "video_origin_connections_closed_by_server_total{reason=\"idle\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
}

#[test]
fn client_that_stops_reading_is_dropped_and_its_file_closed() {
    let dir = assets(&[("big.mp4", &vec![3u8; 64 << 20])]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__WRITE_STALL_TIMEOUT_SECS", "1"),
            ("VIDEO_ORIGIN_METADATA__OPEN_FILES", "0"),
        ],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /video/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 1024];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    // Stop reading: socket buffers fill, the server's writes stall.
    assert!(
        eventually(Duration::from_secs(10), || srv.open_asset_fds() == 1),
        "the file is open while streaming"
    );
    assert!(
        eventually(Duration::from_secs(15), || srv.open_asset_fds() == 0),
        "the stalled response is dropped and its file closed"
    );
    let text = scrape(&srv);
    assert_eq!(
        metric(
            &text,
            "video_origin_connections_closed_by_server_total{reason=\"write_stall\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The connection is gone: draining what the kernel buffered ends in EOF or reset.
    let took = time_to_close(&mut s, Duration::from_secs(10));
    assert!(took < Duration::from_secs(10));
    assert_eq!(srv.get("/healthz", &[]).status, 200);
}

fn raise_own_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// Issue #6 point 10: 2,000 idle connections are held, the next one is refused per
/// `server.max_connections`, health answers throughout, and the idle timeout then sheds them all.
#[test]
fn two_thousand_idle_connections_held_then_shed_while_health_answers() {
    raise_own_fd_limit(6000);
    let dir = assets(&[("a.mp4", b"abc")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__MAX_CONNECTIONS", "2000"),
            ("VIDEO_ORIGIN_SERVER__IDLE_TIMEOUT_SECS", "4"),
            ("VIDEO_ORIGIN_SERVER__HEADER_READ_TIMEOUT_SECS", "4"),
            ("VIDEO_ORIGIN_SERVER__WORKERS", "2"),
        ],
    );
    let mut idle: Vec<TcpStream> = (0..2000).map(|_| srv.connect()).collect();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(&scrape(&srv), "video_origin_connections").unwrap_or(0.0) >= 2000.0
        }),
        "all 2,000 accepted and held"
    );
    // Over the cap: a 503 at once, and the connection closed.
    let mut extra = srv.connect();
    let mut buf = Vec::new();
    extra.read_to_end(&mut buf).unwrap();
    let r = Resp::parse(&buf);
    assert_eq!(r.status, 503);
    assert_eq!(r.h("cache-control"), "no-store");
    assert!(r.header("retry-after").is_some());
    // Health on the admin listener answers while the public one is full.
    assert_eq!(srv.admin("GET", "/healthz", None, None).status, 200);
    assert_eq!(srv.admin("GET", "/readyz", None, None).status, 200);
    // Still held (no EOF yet) well before the idle timeout.
    if started.elapsed() < Duration::from_secs(3) {
        for s in idle.iter_mut().step_by(97) {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let e = s.read(&mut b).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "still open");
            s.set_nonblocking(false).unwrap();
        }
    }
    // Then the idle timeout sheds every one of them.
    for s in &mut idle {
        let took = time_to_close(s, Duration::from_secs(20));
        assert!(took < Duration::from_secs(20), "closed by the server");
    }
    assert!(started.elapsed() >= Duration::from_secs(3));
    let text = scrape(&srv);
    assert!(
        metric(
            &text,
            "video_origin_connections_closed_by_server_total{reason=\"idle\"}"
        )
        .unwrap()
            >= 2000.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "video_origin_connections_closed_by_server_total{reason=\"over_limit\"}"
        ),
        Some(1.0)
    );
    // And the public listener serves again.
    assert_eq!(srv.get("/video/a.mp4", &[]).status, 200);
}

#[test]
fn out_of_descriptors_is_503_and_counted() {
    use std::io::BufRead;
    raise_own_fd_limit(4000);
    let dir = assets(&[("a.mp4", b"abc")]);
    let workdir = tempfile::tempdir().unwrap();
    let log = workdir.path().join("log");
    // A hard limit of 96 descriptors, no open-file cache: every request opens the file.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 96 && exec \"$0\" serve --listen 127.0.0.1:0 --assets \"$1\"")
        .arg(BIN)
        .arg(dir.path())
        .current_dir(workdir.path())
        .env("VIDEO_ORIGIN_LOG__BUFFER_BYTES", "0")
        .env("VIDEO_ORIGIN_METADATA__OPEN_FILES", "0")
        .env("VIDEO_ORIGIN_SERVER__WORKERS", "1")
        .env("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ports = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        ports.push(
            line.trim()
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap(),
        );
    }
    let (admin, public) = (ports[0], ports[1]);
    let connect = |port| {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let mut first = connect(public);
    assert_eq!(keep_alive_get(&mut first, "/healthz").status, 200);
    // Use up the server's descriptors with connections it accepts until accept() fails.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .count()
    };
    let hogs: Vec<TcpStream> = (0..150).map(|_| connect(public)).collect();
    assert!(
        eventually(Duration::from_secs(10), || fds() >= 95),
        "server at its descriptor limit ({} open)",
        fds()
    );
    let r = keep_alive_get(&mut first, "/video/a.mp4");
    assert_eq!(r.status, 503, "EMFILE on open is 503, not 500");
    assert!(r.header("retry-after").is_some());
    drop(hogs);
    drop(first);
    assert!(eventually(Duration::from_secs(15), || fds() < 60));
    let mut s = connect(admin);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&Resp::parse(&buf).body).into_owned();
    assert!(
        metric(&text, "video_origin_fd_exhaustion_total").unwrap() >= 1.0,
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("out of file descriptors"), "{log}");
}

/// A held stream of big.mp4 sent with extra headers.
fn hold_stream_as(srv: &Server, headers: &str) -> TcpStream {
    let mut s = srv.connect();
    s.write_all(format!("GET /video/big.mp4 HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 4096];
    s.read_exact(&mut buf).unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..40])
    );
    s
}

#[test]
fn client_address_comes_from_trusted_proxies_only() {
    let files: &[(&str, &[u8])] = &[
        ("big.mp4", &vec![1u8; 32 << 20]),
        ("small.mp4", b"tiny"),
        ("private/p.mp4", b"secret"),
    ];
    let dir = assets(files);
    let trusted = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_LIMITS__MAX_STREAMS_PER_CLIENT", "1"),
            ("VIDEO_ORIGIN_PROXY__TRUSTED", "[\"127.0.0.0/8\"]"),
            // CloudFront directly in front: its viewer-address header is believed.
            ("VIDEO_ORIGIN_PROXY__CDN", "cloudfront"),
            (
                "VIDEO_ORIGIN_PROXY__CLIENT_HEADERS",
                "[\"cloudfront-viewer-address\", \"x-forwarded-for\"]",
            ),
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY),
            ("VIDEO_ORIGIN_LOG__FORMAT", "json"),
        ],
    );
    // Per-client limits: two viewers behind one proxy address are two clients.
    let a = hold_stream_as(&trusted, "X-Forwarded-For: 203.0.113.1\r\n");
    let b = hold_stream_as(&trusted, "X-Forwarded-For: 203.0.113.2\r\n");
    assert_eq!(
        trusted
            .get("/video/small.mp4", &[("X-Forwarded-For", "203.0.113.1")])
            .status,
        503,
        "the same viewer's second stream"
    );
    drop((a, b));
    // IP-bound links check the viewer's address, not the proxy's.
    let url = signed_with(
        "/video/private/p.mp4",
        unix_now() + 600,
        Some("198.51.100.9".parse().unwrap()),
    );
    assert_eq!(
        trusted
            .get(
                &url,
                &[("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 127.0.0.1")]
            )
            .status,
        200
    );
    assert_eq!(
        trusted.get(&url, &[]).status,
        403,
        "the proxy's own address"
    );
    // The access log names the viewer and the CDN.
    trusted.get(
        "/video/small.mp4",
        &[
            ("CloudFront-Viewer-Address", "198.51.100.77:50123"),
            ("X-Amz-Cf-Id", "abc"),
            ("X-Amz-Cf-Pop", "FRA56-P1"),
        ],
    );
    assert!(eventually(Duration::from_secs(5), || trusted
        .log_text()
        .contains("198.51.100.77")));
    let log = trusted.log_text();
    let line: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "access" && v["client"] == "198.51.100.77")
        .unwrap();
    assert_eq!(line["cdn"], "cloudfront");
    assert_eq!(line["cdn_pop"], "FRA56-P1");
    assert_eq!(
        line["peer"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );

    // Without trusted ranges the same headers change nothing.
    let untrusted = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_LIMITS__MAX_STREAMS_PER_CLIENT", "1")],
    );
    let _a = hold_stream_as(&untrusted, "CF-Connecting-IP: 203.0.113.1\r\n");
    assert_eq!(
        untrusted
            .get("/video/small.mp4", &[("CF-Connecting-IP", "203.0.113.2")])
            .status,
        503,
        "a header from an untrusted peer is ignored"
    );
}

#[test]
fn combined_access_log_with_extras_and_no_secrets() {
    let dir = assets(&[("a.mp4", b"0123456789"), ("private/p.mp4", b"secret")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_LOG__ACCESS_FORMAT", "combined"),
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY),
        ],
    );
    srv.get(
        "/video/a.mp4",
        &[
            ("Range", "bytes=2-5"),
            ("User-Agent", "Player \"X\"/1.0"),
            ("Referer", "https://site.example/watch"),
            ("CF-Ray", "8c7f1e2a3b4c5d6e-IAD"),
        ],
    );
    let link = signed("/video/private/p.mp4");
    srv.get(&link, &[]);
    srv.get("/video/private/p.mp4?exp=1&kid=k1&sig=AAAA", &[]);
    assert!(eventually(Duration::from_secs(5), || srv
        .log_text()
        .lines()
        .filter(|l| l.contains("\"GET /video/"))
        .count()
        == 3));
    let log = srv.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /video/"))
        .collect();
    let first = lines[0];
    assert!(
        first.starts_with("127.0.0.1 - - ["),
        "combined format starts with the client: {first}"
    );
    assert!(first.contains("\"GET /video/a.mp4 HTTP/1.1\" 206 4 \"https://site.example/watch\" \"Player \\x22X\\x22/1.0\""), "{first}");
    assert!(first.contains("range=\"bytes=2-5\""), "{first}");
    assert!(first.contains("rule=media"), "cache rule named: {first}");
    assert!(first.contains("cdn=cloudflare pop=IAD"), "{first}");
    assert!(
        lines[1].contains(" 200 6 ") && lines[1].contains("token=ok"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(" 403 ") && lines[2].contains("token="),
        "{}",
        lines[2]
    );
    let sig = link.split("sig=").nth(1).unwrap();
    assert!(!log.contains(sig), "token values never reach the log");
    assert!(!log.contains("sig="), "query strings never reach the log");
}

#[test]
fn bounded_wait_queue_serves_a_waiter_when_a_slot_frees() {
    let dir = assets(&[("big.mp4", &vec![9u8; 32 << 20]), ("small.mp4", b"tiny")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_LIMITS__MAX_STREAMS", "1"),
            ("VIDEO_ORIGIN_LIMITS__QUEUE_WAIT_MS", "4000"),
            ("VIDEO_ORIGIN_LIMITS__QUEUE_MAX", "1"),
        ],
    );
    let held = hold_stream_as(&srv, "");
    // One request waits in the queue...
    let port = srv.port;
    let waiter = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /video/small.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Resp::parse(&buf).status
    });
    assert!(eventually(Duration::from_secs(5), || metric(
        &scrape(&srv),
        "video_origin_queued_streams"
    ) == Some(1.0)));
    // ...the queue is full, so the next is shed at once...
    let r = srv.get("/video/small.mp4", &[]);
    assert_eq!(r.status, 503);
    // ...and the waiter gets the slot the held stream frees.
    drop(held);
    assert_eq!(waiter.join().unwrap(), 200);
    let text = scrape(&srv);
    assert_eq!(
        metric(
            &text,
            "video_origin_shed_requests_total{reason=\"queue_full\"}"
        ),
        Some(1.0)
    );
    // With nothing freeing up, a waiter gives up after queue_wait_ms.
    let _held = hold_stream_as(&srv, "");
    let started = Instant::now();
    assert_eq!(srv.get("/video/small.mp4", &[]).status, 503);
    assert!(started.elapsed() >= Duration::from_millis(3500));
    assert_eq!(
        metric(
            &scrape(&srv),
            "video_origin_shed_requests_total{reason=\"queue_timeout\"}"
        ),
        Some(1.0)
    );
}
