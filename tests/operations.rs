//! Production basics with raw sockets: slowloris guard, header limits, readiness and draining,
//! open-file limit.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn slow_headers_are_cut_off() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_SERVER__HEADER_READ_TIMEOUT_SECS", "1")],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /video/a.mp4 HTTP/1.1\r\nHost: x\r\n")
        .unwrap(); // never finishes
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // returns when the server closes the connection
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed by the server, not our read timeout"
    );
    // Meanwhile well-behaved clients are served.
    assert_eq!(srv.get("/video/a.mp4", &[]).status, 200);
}

#[test]
fn too_many_headers_is_431_and_never_5xx() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_SERVER__MAX_HEADERS", "16")]);
    let mut raw = String::from("GET /video/a.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..40 {
        raw.push_str(&format!("X-Junk-{i}: y\r\n"));
    }
    raw.push_str("\r\n");
    let r = srv.raw(raw.as_bytes());
    assert_eq!(r.status, 431);
    // An oversized header section is refused too (hyper's buffer is capped at 64 KiB).
    let big = format!(
        "GET /video/a.mp4 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let mut s = srv.connect();
    let _ = s.write_all(big.as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    if !buf.is_empty() {
        let r = Resp::parse(&buf);
        assert_eq!(r.status, 431);
    }
    assert_eq!(srv.get("/video/a.mp4", &[]).status, 200);
}

#[test]
fn header_size_limit_is_configurable() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_SERVER__MAX_HEADER_BYTES", "8192")],
    );
    let head = |n: usize| {
        format!(
            "GET /video/a.mp4 HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(n)
        )
    };
    assert_eq!(srv.raw(head(6000).as_bytes()).status, 200);
    let r = srv.raw(head(9000).as_bytes());
    assert_eq!(r.status, 431);
    assert_eq!(r.h("cache-control"), "no-store");
    // Out of range in the config: a clear startup error naming the key.
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_SERVER__MAX_HEADER_BYTES", "100")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.max_header_bytes"));
}

#[test]
fn readiness_turns_503_before_the_listener_closes() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__DRAIN_SECS", "3"),
            (
                "VIDEO_ORIGIN_ADMIN__TOKENS__OPS",
                "admin-token-0123456789abcdef0123456789",
            ),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(srv.get("/readyz", &[]).status, 200);
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    assert_eq!(srv.admin("GET", "/readyz", None, None).status, 200);
    srv.sigterm();
    assert!(
        eventually(Duration::from_secs(5), || srv.get("/readyz", &[]).status
            == 503),
        "readiness fails first"
    );
    // Still serving while draining, and liveness stays green.
    assert_eq!(srv.get("/video/a.mp4", &[]).status, 200);
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    assert_eq!(srv.admin("GET", "/readyz", None, None).status, 503);
    // Then the listener closes.
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", srv.port)).is_err()
    }));
}

#[test]
fn open_file_limit_is_raised_to_the_hard_limit() {
    use std::io::BufRead;
    let dir = assets(&[("a.mp4", b"x")]);
    // Start with a low soft limit so the raise is observable whatever this machine's defaults.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" serve --listen 127.0.0.1:0 --assets \"$1\"")
        .arg(BIN)
        .arg(dir.path())
        .env("VIDEO_ORIGIN_LOG__BUFFER_BYTES", "0")
        .env("VIDEO_ORIGIN_METRICS__ADMIN", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = row
        .split_whitespace()
        .skip(3)
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(nums[0] > 256, "soft limit raised from 256: {row}");
    assert_eq!(nums[0], nums[1], "soft == hard: {row}");
}

/// A stream of big.mp4 that has started (headers and first bytes read) and is held open.
fn hold_stream(srv: &Server) -> std::net::TcpStream {
    let mut s = srv.connect();
    s.write_all(b"GET /video/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    s.read_exact(&mut buf).unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    s
}

#[test]
fn streams_beyond_the_cap_are_shed_immediately() {
    let dir = assets(&[("big.mp4", &vec![9u8; 32 << 20]), ("small.mp4", b"tiny")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_LIMITS__MAX_STREAMS", "2"),
            ("VIDEO_ORIGIN_LIMITS__RETRY_AFTER_SECS", "3"),
        ],
    );
    let a = hold_stream(&srv);
    let b = hold_stream(&srv);
    let started = Instant::now();
    let r = srv.get("/video/small.mp4", &[]);
    assert_eq!(r.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once, not queued"
    );
    assert_eq!(
        (r.h("retry-after"), r.h("cache-control")),
        ("3", "no-store")
    );
    // Not shed: health checks, HEAD and 304s (no body is streamed).
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    assert_eq!(srv.head("/video/small.mp4", &[]).status, 200);
    drop(a);
    assert!(
        eventually(Duration::from_secs(5), || srv
            .get("/video/small.mp4", &[])
            .status
            == 200),
        "a released slot serves again"
    );
    drop(b);
    assert!(srv.log_text().contains("stream shed"));
}

#[test]
fn per_client_cap() {
    let dir = assets(&[("big.mp4", &vec![9u8; 32 << 20]), ("small.mp4", b"tiny")]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_LIMITS__MAX_STREAMS_PER_CLIENT", "1")],
    );
    let held = hold_stream(&srv);
    assert_eq!(
        srv.get("/video/small.mp4", &[]).status,
        503,
        "same address, second stream"
    );
    drop(held);
    assert!(eventually(Duration::from_secs(5), || srv
        .get("/video/small.mp4", &[])
        .status
        == 200));
}

#[test]
fn origin_protection_admits_only_the_cdn() {
    let dir = assets(&[("a.mp4", b"abc")]);
    let srv = Server::start(
        dir.path(),
        &[(
            "VIDEO_ORIGIN_ORIGIN_PROTECTION__VALUES",
            r#"["old-secret-value-0001", "new-secret-value-0002"]"#,
        )],
    );
    let r = srv.get("/video/a.mp4", &[]);
    assert_eq!((r.status, r.h("cache-control")), (403, "no-store"));
    assert_eq!(
        srv.get("/video/a.mp4", &[("X-Origin-Verify", "guess")])
            .status,
        403
    );
    // Both values work during a rotation.
    assert_eq!(
        srv.get(
            "/video/a.mp4",
            &[("X-Origin-Verify", "old-secret-value-0001")]
        )
        .body,
        b"abc"
    );
    assert_eq!(
        srv.get(
            "/video/a.mp4",
            &[("x-origin-verify", "new-secret-value-0002")]
        )
        .body,
        b"abc"
    );
    // Probes from the load balancer or kubelet carry no secret.
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    assert_eq!(srv.get("/readyz", &[]).status, 200);
    assert!(
        !srv.log_text().contains("secret-value"),
        "values never logged"
    );
}

#[test]
fn cors_for_players_on_other_origins() {
    let dir = assets(&[("a.mp4", b"0123456789")]);
    let srv = Server::start(
        dir.path(),
        &[(
            "VIDEO_ORIGIN_CORS__ALLOWED_ORIGINS",
            r#"["https://player.example.com"]"#,
        )],
    );
    let ok = [("Origin", "https://player.example.com")];
    let r = srv.get("/video/a.mp4", &[ok[0], ("Range", "bytes=0-3")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.h("access-control-allow-origin"),
        "https://player.example.com"
    );
    for h in ["Content-Range", "Content-Length", "Accept-Ranges", "ETag"] {
        assert!(r.h("access-control-expose-headers").contains(h), "{h}");
    }
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "vary" && v.contains("Origin")));
    // Same Vary on responses without Origin (caches must not mix them up).
    let plain = srv.get("/video/a.mp4", &[]);
    assert!(plain.header("access-control-allow-origin").is_none());
    assert!(plain
        .headers
        .iter()
        .any(|(k, v)| k == "vary" && v.contains("Origin")));
    // Other origins get no grant.
    let r = srv.get("/video/a.mp4", &[("Origin", "https://evil.example")]);
    assert!(r.header("access-control-allow-origin").is_none());
    // Preflight for a Range request.
    let r = srv.request(
        "OPTIONS",
        "/video/a.mp4",
        &[
            ok[0],
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    );
    assert_eq!(r.status, 204);
    assert!(r.h("access-control-allow-headers").contains("Range"));
    assert!(r.h("access-control-allow-methods").contains("GET"));
    assert_eq!(r.h("access-control-max-age"), "86400");
    // Without CORS configured, OPTIONS stays 405.
    let srv2 = Server::start(dir.path(), &[]);
    assert_eq!(
        srv2.request(
            "OPTIONS",
            "/video/a.mp4",
            &[ok[0], ("Access-Control-Request-Method", "GET")]
        )
        .status,
        405
    );
    // Wildcard: `*`, no Vary.
    let srv3 = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_CORS__ALLOWED_ORIGINS", r#"["*"]"#)],
    );
    let r = srv3.get("/video/a.mp4", &[("Origin", "https://anything.example")]);
    assert_eq!(r.h("access-control-allow-origin"), "*");
    assert!(r.header("vary").is_none());
}
