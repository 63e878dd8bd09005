//! A real caching reverse proxy (nginx from Debian) in front of video-origin, on loopback:
//! the closest thing to a CDN on this machine. nginx honours Cache-Control (s-maxage before
//! max-age, private/no-store), revalidates expired entries with If-None-Match and
//! If-Modified-Since (`proxy_cache_revalidate on`) and fetches ranges in 1 MiB slices.
//!
//! tests/run-all.sh installs nginx; without it this test fails rather than skips.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Nginx {
    child: Child,
    port: u16,
    cache_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL to the master left its workers and cache manager running, orphaned, after
        // every test run; SIGTERM is nginx's fast shutdown, in which the master stops them.
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is not installed: run `bash tests/run-all.sh`, which installs it");
}

impl Nginx {
    fn start(origin_port: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        let cache_dir = dir.path().join("cache");
        // Workers of a root master drop to `nobody` unless told otherwise; our temp dirs are
        // root-only, so keep them as the current user.
        let user = if unsafe_is_root() { "user root;" } else { "" };
        let conf = format!(
            r#"
{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=vid:10m max_size=1g inactive=1h use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            slice 1m;
            proxy_cache vid;
            proxy_cache_key $uri$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_valid 200 206 1m;
            proxy_cache_revalidate on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Cache-Status $upstream_cache_status always;
            proxy_pass http://127.0.0.1:{origin_port};
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ok = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            ok,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        Nginx {
            child,
            port,
            cache_dir,
            _dir: dir,
        }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let mut r = Resp::parse(&buf);
        if r.header("transfer-encoding") == Some("chunked") {
            r.body = dechunk(&r.body);
        }
        r
    }

    /// Deletes the cached entry for `key` (what a CDN invalidation does). Open-source nginx has
    /// no purge API; its cache file is named by the MD5 of the key, under levels=1:2.
    fn purge(&self, key: &str) {
        let out = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(key.as_bytes())?;
                c.wait_with_output()
            });
        let hex = String::from_utf8(out.unwrap().stdout).unwrap()[..32].to_string();
        let path = self
            .cache_dir
            .join(&hex[31..])
            .join(&hex[29..31])
            .join(&hex);
        std::fs::remove_file(&path)
            .unwrap_or_else(|e| panic!("purge {key}: {} {e}", path.display()));
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// (status, path) of every request the origin logged.
fn origin_requests(srv: &Server) -> Vec<(u64, String)> {
    srv.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .map(|v| {
            (
                v["status"].as_u64().unwrap(),
                v["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn caching_proxy_in_front_of_the_origin() {
    let three_mib: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let dir = assets(&[
        ("a.mp4", b"version one of a"),
        ("short/b.mp4", b"short-lived"),
        ("private/c.mp4", b"private"),
        ("big.mp4", &three_mib),
    ]);
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("origin.toml");
    std::fs::write(
        &cfg,
        r#"
[log]
level = "info"
format = "json"
buffer_bytes = 0
[cache]
cdn = "generic"
[[cache.rules]]
match = "private/**"
cache_control = "private, no-store"
[[cache.rules]]
match = "short/**"
cache_control = "public, max-age=1"
[[cache.rules]]
match = "**"
cache_control = "public, max-age=60, s-maxage=3600"
"#,
    )
    .unwrap();
    let srv = Server::start_with(
        dir.path(),
        &[("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY)],
        &["--config", cfg.to_str().unwrap()],
    );
    let proxy = Nginx::start(srv.port);
    let count = |path: &str| {
        origin_requests(&srv)
            .iter()
            .filter(|(_, p)| p == path)
            .count()
    };

    // 1. Second request is a HIT; the origin saw one request.
    let r1 = proxy.get("/video/a.mp4", &[]);
    assert_eq!((r1.status, r1.h("x-cache-status")), (200, "MISS"));
    assert_eq!(r1.body, b"version one of a");
    let r2 = proxy.get("/video/a.mp4", &[]);
    assert_eq!(
        (r2.status, r2.h("x-cache-status"), &r2.body[..]),
        (200, "HIT", &b"version one of a"[..])
    );
    assert_eq!(r2.h("etag"), r1.h("etag"));
    // The origin logs a request once its last byte is written, so the line may trail the
    // proxy's answer by a moment.
    let logged = |path: &str, n: usize| eventually(Duration::from_secs(5), || count(path) == n);
    assert!(logged("/video/a.mp4", 1), "{:?}", origin_requests(&srv));

    // Ranges through the slice module: the origin answers 206 slices, the proxy cuts ranges.
    let r = proxy.get("/video/big.mp4", &[("Range", "bytes=1500000-1500099")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &three_mib[1500000..1500100]);
    let r = proxy.get("/video/big.mp4", &[("Range", "bytes=1500100-1500199")]);
    assert_eq!((r.status, r.h("x-cache-status")), (206, "HIT"));
    assert_eq!(r.body, &three_mib[1500100..1500200]);
    assert!(eventually(Duration::from_secs(5), || origin_requests(&srv)
        .iter()
        .any(|(s, p)| *s == 206 && p == "/video/big.mp4")));

    // 2. After the TTL the proxy revalidates and the origin answers 304.
    assert_eq!(
        proxy.get("/video/short/b.mp4", &[]).h("x-cache-status"),
        "MISS"
    );
    std::thread::sleep(Duration::from_millis(2100)); // past max-age=1
    let r = proxy.get("/video/short/b.mp4", &[]);
    assert_eq!(
        (r.status, r.h("x-cache-status"), &r.body[..]),
        (200, "REVALIDATED", &b"short-lived"[..])
    );
    assert!(
        eventually(Duration::from_secs(5), || origin_requests(&srv)
            .contains(&(304, "/video/short/b.mp4".into()))),
        "origin log shows the 304: {:?}",
        origin_requests(&srv)
    );

    // 3. A private path is never stored, even when every request carries a valid link (the
    //    proxy keys without the query, so a stored copy would go to viewers without one).
    let link = signed("/video/private/c.mp4");
    for _ in 0..3 {
        let r = proxy.get(&link, &[]);
        assert_eq!((r.status, r.h("x-cache-status")), (200, "MISS"));
        assert_eq!(r.h("cache-control"), "private, no-store");
    }
    assert!(
        logged("/video/private/c.mp4", 3),
        "{:?}",
        origin_requests(&srv)
    );
    let r = proxy.get("/video/private/c.mp4", &[]);
    assert_eq!(
        r.status, 403,
        "without a link the origin refuses, and nothing cached answers instead"
    );

    // 4. Replace the file: the proxy keeps serving the old bytes until the entry is purged,
    //    then the new bytes (and ETag) come through.
    let tmp = dir.path().join(".a.mp4.tmp");
    std::fs::write(&tmp, b"version TWO of a!").unwrap();
    std::fs::rename(&tmp, dir.path().join("a.mp4")).unwrap();
    let stale = proxy.get("/video/a.mp4", &[]);
    assert_eq!(
        (stale.h("x-cache-status"), &stale.body[..]),
        ("HIT", &b"version one of a"[..])
    );
    proxy.purge(&format!("/video/a.mp4bytes=0-{}", 1024 * 1024 - 1));
    let fresh = proxy.get("/video/a.mp4", &[]);
    assert_eq!(
        (fresh.h("x-cache-status"), &fresh.body[..]),
        ("MISS", &b"version TWO of a!"[..])
    );
    assert_ne!(fresh.h("etag"), r1.h("etag"));
    assert_eq!(proxy.get("/video/a.mp4", &[]).h("x-cache-status"), "HIT");
}
