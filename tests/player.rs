//! The player page and viewer sessions (issue #7): protocol tests with raw sockets, and an
//! end-to-end test in real headless Chromium (Debian's chromium + chromedriver, driven over the
//! W3C WebDriver protocol) against the real server on loopback.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-0123456789abcdef0123456789";

fn admin_sessions(srv: &Server) -> Vec<Value> {
    let r = srv.admin("GET", "/admin/sessions", Some(ADMIN), None);
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["sessions"].as_array().unwrap().clone()
}

fn player_server(dir: &Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
        ("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY),
        ("VIDEO_ORIGIN_LOG__FORMAT", "json"),
    ];
    env.extend_from_slice(extra);
    Server::start(dir, &env)
}

#[test]
fn presence_socket_heartbeats_bad_frames_oversize_and_timeout() {
    let dir = assets(&[("a.mp4", &[7u8; 5000])]);
    let srv = player_server(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_PLAYER__SESSION_TIMEOUT_SECS", "3"),
            ("VIDEO_ORIGIN_PLAYER__MAX_SESSIONS_PER_CLIENT", "2"),
        ],
    );
    let id = "0123456789abcdef-session";
    let mut ws = ws_open(&srv, &format!("session={id}&video=a.mp4")).unwrap();
    // The session's own range requests count towards it.
    assert_eq!(
        srv.get(
            &format!("/video/a.mp4?session={id}"),
            &[("Range", "bytes=0-999")]
        )
        .status,
        206
    );
    ws.write_all(&frame(
        1,
        br#"{"position":4.5,"buffered":2.0,"paused":false,"stalls":1}"#,
    ))
    .unwrap();
    let (op, payload) = read_frame(&mut ws).unwrap();
    assert_eq!(op, 1, "a text frame back");
    let stats: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(stats["bytes_served"], 1000);
    assert_eq!(stats["recent_ranges"][0], "206 bytes=0-999");
    assert_eq!(stats["requests"], 1);
    let list = admin_sessions(&srv);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["video"], "a.mp4");
    assert_eq!(list[0]["position"], 4.5);
    assert_eq!(list[0]["bytes_served"], 1000);
    assert_eq!(list[0]["client"], "127.0.0.1");

    // Bad frames are ignored (the socket stays up) and counted.
    ws.write_all(&frame(1, b"not json")).unwrap();
    ws.write_all(&frame(2, b"\x00\x01")).unwrap();
    ws.write_all(&frame(
        1,
        br#"{"position":-1,"buffered":0,"paused":true,"stalls":0}"#,
    ))
    .unwrap();
    ws.write_all(&frame(
        1,
        br#"{"position":5,"buffered":1,"paused":true,"stalls":3}"#,
    ))
    .unwrap();
    assert_eq!(read_frame(&mut ws).unwrap().0, 1, "still answering");
    let text = String::from_utf8(srv.admin("GET", "/metrics", None, None).body).unwrap();
    assert_eq!(
        metric(&text, "video_origin_player_bad_frames_total"),
        Some(3.0)
    );
    assert_eq!(metric(&text, "video_origin_player_stalls_total"), Some(3.0));
    assert_eq!(metric(&text, "video_origin_viewers_live"), Some(1.0));

    // Per-address cap (2): a second socket is fine, a third is refused with 429.
    let _second = ws_open(&srv, "session=second-session-0001&video=a.mp4").unwrap();
    let third = ws_open(&srv, "session=third-session-00001&video=a.mp4").unwrap_err();
    assert_eq!(third.status, 429);
    // The same id twice is a conflict.
    assert_eq!(
        ws_open(&srv, &format!("session={id}")).unwrap_err().status,
        409
    );
    // A bad session id or a plain GET is a clear 400.
    assert_eq!(ws_open(&srv, "session=x").unwrap_err().status, 400);
    assert_eq!(srv.get("/ws?session=0123456789abcdef", &[]).status, 400);

    // An oversize frame closes the socket.
    ws.write_all(&frame(1, &vec![b'x'; 10_000])).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut closed = false;
    for _ in 0..10 {
        match read_frame(&mut ws) {
            Ok((8, _)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(closed, "oversize frame ends the socket");
    assert!(eventually(Duration::from_secs(5), || admin_sessions(&srv)
        .iter()
        .all(|s| s["id"] != id)));

    // The second socket sends nothing: it is dropped after the heartbeat timeout (3 s).
    assert!(eventually(Duration::from_secs(10), || admin_sessions(&srv).is_empty()));
    let text = String::from_utf8(srv.admin("GET", "/metrics", None, None).body).unwrap();
    assert_eq!(
        metric(
            &text,
            "video_origin_player_sockets_closed_total{reason=\"heartbeat_timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "video_origin_player_sockets_closed_total{reason=\"oversize\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn player_page_is_served_and_can_be_disabled() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = player_server(dir.path(), &[]);
    let r = srv.get("/player/a.mp4?exp=1&sig=abc", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), "text/html; charset=utf-8");
    assert_eq!(r.h("referrer-policy"), "no-referrer");
    assert!(r
        .h("content-security-policy")
        .contains("default-src 'none'"));
    let page = String::from_utf8_lossy(&r.body);
    assert!(page.contains("<video") && page.contains("content=\"/video\""));
    assert_eq!(srv.request("POST", "/player/a.mp4", &[]).status, 405);
    let off = player_server(dir.path(), &[("VIDEO_ORIGIN_PLAYER__ENABLED", "false")]);
    assert_eq!(off.get("/player/a.mp4", &[]).status, 404);
    assert_eq!(off.get("/ws?session=0123456789abcdef", &[]).status, 404);
}

// --- real Chromium ---------------------------------------------------------------------

/// A long, high-bitrate test video (made once with ffmpeg, kept in target/): long enough that
/// Chromium cannot have buffered the end when we seek there, so the seek needs a new range.
fn long_video() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-media");
    let out = dir.join("long-240s.mp4");
    if !out.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join("long-240s.tmp.mp4");
        let status = Command::new("ffmpeg")
            .args(["-y", "-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x180:rate=10:duration=240")
            .args(["-vf", "noise=alls=25:allf=t"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .args([
                "-b:v", "1500k", "-maxrate", "1500k", "-bufsize", "3000k", "-g", "20",
            ])
            .args(["-movflags", "+faststart"])
            .arg(&tmp)
            .status()
            .expect("ffmpeg (installed by tests/run-all.sh)");
        assert!(status.success());
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// One WebDriver call: JSON in, the `value` out.
fn wd(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver may keep the connection open: read exactly one response.
    let r = read_response(&mut s);
    let raw = if r
        .header("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        dechunk(&r.body)
    } else {
        r.body
    };
    let v: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| panic!("webdriver {path}: {}", String::from_utf8_lossy(&raw)));
    assert!(r.status < 400, "webdriver {method} {path}: {v}");
    v["value"].clone()
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver, installed by tests/run-all.sh)");
        assert!(
            eventually(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "chromedriver listening"
        );
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--autoplay-policy=no-user-gesture-required",
                    "--window-size=960,540", "--mute-audio",
                ]
            }
        }}});
        let v = wd(port, "POST", "/session", Some(caps));
        Browser {
            session: v["sessionId"].as_str().unwrap().to_string(),
            driver,
            port,
            _profile: profile,
        }
    }

    fn go(&self, url: &str) {
        wd(
            self.port,
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({ "url": url })),
        );
    }

    fn js(&self, script: &str) -> Value {
        wd(
            self.port,
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self, to: &Path) {
        use base64::Engine;
        let v = wd(
            self.port,
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(to, png).unwrap();
    }

    /// Waits until the video has played past `secs`, for at most `limit_secs`.
    fn wait_playing_past(&self, what: &str, secs: f64, limit_secs: u64) {
        self.wait_for(
            what,
            &format!("return document.getElementById('video').currentTime > {secs}"),
            Duration::from_secs(limit_secs),
        );
    }

    /// The page's session id, kept in localStorage.
    fn session_id(&self) -> String {
        self.js("return localStorage.getItem('vo-session')")
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits for the page to show the origin's 403 to the viewer, in words containing `words`.
    fn expect_refusal(&self, words: &str) {
        self.wait_for(
            "the refusal on the page",
            "return window.voPlayer.error === 403",
            Duration::from_secs(20),
        );
        let text = self.js("return document.getElementById('error').textContent");
        assert!(
            text.as_str().unwrap().contains(words),
            "the page says why: {text}"
        );
    }

    /// Polls a script until it returns true.
    fn wait_for(&self, what: &str, script: &str, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if self.js(script) == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; player state: {}",
                self.js(STATE)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            wd(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const STATE: &str = "const v = document.getElementById('video'); \
    return {t: v.currentTime, d: v.duration, ready: v.readyState, paused: v.paused, \
            error: v.error && v.error.code, src: v.currentSrc, player: window.voPlayer};";

/// Access-log lines (JSON) for one session.
fn session_lines(srv: &Server, id: &str) -> Vec<Value> {
    access_lines(srv)
        .into_iter()
        .filter(|v| v["session"] == id)
        .collect()
}

#[test]
fn chromium_plays_seeks_reports_presence_and_honours_signed_links() {
    let long = long_video();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&long, dir.path().join("long.mp4")).unwrap();
    std::fs::create_dir(dir.path().join("private")).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample.mp4");
    std::fs::copy(&sample, dir.path().join("private/clip.mp4")).unwrap();
    let srv = player_server(dir.path(), &[]);
    let base = format!("http://127.0.0.1:{}", srv.port);
    let browser = Browser::start();

    // 1. The page loads and the video plays: currentTime advances.
    browser.go(&format!("{base}/player/long.mp4?stats=1"));
    browser.wait_playing_past("playback to advance", 1.5, 40);
    let id = browser.session_id();
    assert!(id.len() >= 8, "session id kept in localStorage: {id}");
    // #18.15: loading the page again keeps the session id.
    browser.go(&format!("{base}/player/long.mp4?stats=1"));
    browser.wait_playing_past("playback after a reload", 0.5, 40);
    assert_eq!(browser.js("return window.voPlayer.session"), id.as_str());

    // 2. The presence socket shows the session with its video, position and bytes.
    assert!(
        eventually(Duration::from_secs(15), || admin_sessions(&srv).iter().any(
            |s| {
                s["id"] == id.as_str()
                    && s["video"] == "long.mp4"
                    && s["position"].as_f64().unwrap_or(0.0) > 0.0
                    && s["bytes_served"].as_u64().unwrap_or(0) > 0
            }
        )),
        "session in /admin/sessions: {:?}",
        admin_sessions(&srv)
    );
    let metrics = String::from_utf8(srv.admin("GET", "/metrics", None, None).body).unwrap();
    assert_eq!(metric(&metrics, "video_origin_viewers_live"), Some(1.0));

    // 3. Seeking near the end makes a new range request, logged as 206 for this session.
    let size = std::fs::metadata(dir.path().join("long.mp4"))
        .unwrap()
        .len();
    browser.js(
        "const v = document.getElementById('video'); v.currentTime = v.duration - 8; return true;",
    );
    browser.wait_for(
        "playback after the seek",
        "const v = document.getElementById('video'); return v.currentTime > v.duration - 7.5 && v.readyState >= 3;",
        Duration::from_secs(30),
    );
    let far_range = |v: &Value| {
        v["status"] == 206
            && v["range"]
                .as_str()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|start| start > size / 2)
    };
    assert!(
        eventually(Duration::from_secs(10), || session_lines(&srv, &id)
            .iter()
            .any(far_range)),
        "a 206 for a range in the second half of the file after the seek: {:?}",
        session_lines(&srv, &id)
            .iter()
            .map(|v| (v["status"].clone(), v["range"].clone()))
            .collect::<Vec<_>>()
    );
    // #18.15: a visible "buffering" state while playback waits for data. The network is
    // throttled (DevTools network conditions through chromedriver) and the video sought to
    // a part it has not loaded.
    wd(
        browser.port,
        "POST",
        &format!("/session/{}/chromium/network_conditions", browser.session),
        Some(json!({"network_conditions": {
            "offline": false, "latency": 200,
            "download_throughput": 20000, "upload_throughput": 20000,
        }})),
    );
    browser.js(
        "const v = document.getElementById('video'); v.currentTime = v.duration / 3; return true;",
    );
    browser.wait_for(
        "the buffering state on the page",
        "return window.voPlayer.buffering === true && \
                document.getElementById('buffering').classList.contains('on') && \
                getComputedStyle(document.getElementById('buffering')).display === 'block'",
        Duration::from_secs(15),
    );
    wd(
        browser.port,
        "DELETE",
        &format!("/session/{}/chromium/network_conditions", browser.session),
        None,
    );
    browser.wait_for(
        "the buffering state to clear once data flows",
        "const v = document.getElementById('video'); \
         return window.voPlayer.buffering === false && !v.paused && v.readyState >= 3;",
        Duration::from_secs(30),
    );
    // The overlay is up (opened with ?stats=1); keep a picture of the playing page.
    assert_eq!(
        browser.js("return document.getElementById('stats').classList.contains('on')"),
        Value::Bool(true)
    );
    // The "s" key toggles it.
    let press_s = "document.dispatchEvent(new KeyboardEvent('keydown', {key: 's'})); \
                   return document.getElementById('stats').classList.contains('on');";
    assert_eq!(
        browser.js(press_s),
        Value::Bool(false),
        "s hides the overlay"
    );
    assert_eq!(browser.js(press_s), Value::Bool(true), "s shows it again");
    // Two heartbeats, so the overlay shows the origin's answer including the seek's range.
    std::thread::sleep(Duration::from_millis(4500));
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/player-e2e.png");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 5000);

    // 4. A private video plays with a valid signed link...
    let now = unix_now();
    // The page takes the query of the link it was opened with.
    let mint = |exp: u64| {
        signed_with("/video/private/clip.mp4", exp, None)
            .split_once('?')
            .unwrap()
            .1
            .to_string()
    };
    browser.go(&format!(
        "{base}/player/private/clip.mp4?{}",
        mint(now + 600)
    ));
    browser.wait_playing_past("the private video to play with a valid link", 0.5, 30);
    // ...and not with an expired one.
    browser.go(&format!(
        "{base}/player/private/clip.mp4?{}",
        mint(now - 3600)
    ));
    browser.wait_for(
        "a media error with an expired link",
        "const v = document.getElementById('video'); return v.error !== null && v.currentTime === 0;",
        Duration::from_secs(20),
    );
    // The page tried once more before giving up (two refused GETs), then asked the origin what
    // it answered and says so in words.
    assert!(
        eventually(Duration::from_secs(10), || access_lines(&srv)
            .iter()
            .filter(|v| v["path"] == "/video/private/clip.mp4"
                && v["method"] == "GET"
                && v["token"] == "expired")
            .count()
            >= 2),
        "one retry of the failed load"
    );
    browser.expect_refusal("expired or is not valid");
    assert!(
        eventually(Duration::from_secs(5), || access_lines(&srv).iter().any(
            |v| v["path"] == "/video/private/clip.mp4"
                && v["status"] == 403
                && v["token"] == "expired"
        )),
        "the expired link was refused by the origin"
    );
}

// --- HLS and DASH in the built-in player (#16.3) -----------------------------------------

/// A file of a player library from the npm registry (pinned versions, installed into
/// target/npm by tests/run-all.sh).
fn npm_file(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/npm/node_modules")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: `bash tests/run-all.sh` installs hls.js and dashjs from npm",
        p.display()
    );
    p
}

/// A ladder made by ffmpeg from assets/sample.mp4 (12 s): two renditions (640x360, 320x180) as
/// HLS with fMP4 segments (`master.m3u8`, `v0/`, `v1/`) and as DASH (`dash/manifest.mpd`).
/// Made once, kept in target/test-media.
fn ladder() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-media/ladder-v1");
    if dir.join("done").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("dash")).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample.mp4");
    let encode = [
        "-filter_complex",
        "[0:v]split=2[a][b];[b]scale=320:180[b2]",
        "-map",
        "[a]",
        "-map",
        "[b2]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-sc_threshold",
        "0",
        "-b:v:0",
        "800k",
        "-b:v:1",
        "250k",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
    ];
    let hls = Command::new("ffmpeg")
        .current_dir(&dir)
        .args(["-y", "-v", "error", "-i"])
        .arg(&sample)
        .args(encode)
        .args(["-map", "0:a", "-map", "0:a"])
        .args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"])
        .args([
            "-hls_segment_type",
            "fmp4",
            "-hls_segment_filename",
            "v%v/seg_%03d.m4s",
        ])
        .args(["-master_pl_name", "master.m3u8"])
        .args(["-var_stream_map", "v:0,a:0 v:1,a:1", "v%v/index.m3u8"])
        .status()
        .expect("ffmpeg (installed by tests/run-all.sh)");
    assert!(hls.success(), "ffmpeg HLS ladder");
    let dash = Command::new("ffmpeg")
        .current_dir(dir.join("dash"))
        .args(["-y", "-v", "error", "-i"])
        .arg(&sample)
        .args(encode)
        .args(["-map", "0:a"])
        .args(["-f", "dash", "-seg_duration", "2", "-use_template", "1"])
        .args([
            "-use_timeline",
            "1",
            "-adaptation_sets",
            "id=0,streams=v id=1,streams=a",
        ])
        .arg("manifest.mpd")
        .status()
        .expect("ffmpeg");
    assert!(dash.success(), "ffmpeg DASH ladder");
    std::fs::write(dir.join("done"), b"").unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "done" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A VO1 prefix token (query string) for the directory of `path`.
fn prefix_query(path: &str, exp: u64) -> String {
    let key = video_origin::signing::keys::decode_secret(TEST_KEY).unwrap();
    let scope = &path[..=path.rfind('/').unwrap()];
    let req = video_origin::signing::native::MintRequest {
        path: path.into(),
        exp,
        scope: Some(scope.into()),
        ..Default::default()
    };
    video_origin::signing::native::mint("k1", &key, &req)
        .unwrap()
        .1
}

fn access_lines(srv: &Server) -> Vec<Value> {
    srv.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

#[test]
fn chromium_plays_a_private_hls_and_dash_ladder_from_one_link_or_a_cookie() {
    // spec signed-urls §8.6 (prefix scope for HLS/DASH): one link, every request admitted.
    let hls_js = npm_file("hls.js/dist/hls.min.js");
    let dash_js = npm_file("dashjs/dist/modern/umd/dash.all.min.js");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&ladder(), &dir.path().join("private/movie42"));
    std::fs::create_dir_all(dir.path().join("private/movie420")).unwrap();
    std::fs::write(dir.path().join("private/movie420/secret.m4s"), b"not yours").unwrap();
    let srv = player_server(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_PLAYER__HLS_JS", hls_js.to_str().unwrap()),
            ("VIDEO_ORIGIN_PLAYER__DASH_JS", dash_js.to_str().unwrap()),
        ],
    );
    let base = format!("http://127.0.0.1:{}", srv.port);
    let master = "/video/private/movie42/master.m3u8";
    let query = prefix_query(master, unix_now() + 600);
    // The link for movie42/ never yields a byte of movie420/.
    let r = srv.get(&format!("/video/private/movie420/secret.m4s?{query}"), &[]);
    assert_eq!(r.status, 403);
    assert!(!r.body.windows(9).any(|w| w == b"not yours"));

    let browser = Browser::start();
    // 1. hls.js (served by the origin, integrity-checked) plays the ladder from one link.
    browser.go(&format!(
        "{base}/player/private/movie42/master.m3u8?{query}"
    ));
    browser.wait_playing_past("HLS playback to advance", 1.5, 40);
    let engine = browser.js("return window.voPlayer.engine");
    assert_eq!(engine, "hls.js 1.7.4", "the library the origin served");
    // 2. A seek to 8 s plays on from there.
    browser.js("document.getElementById('video').currentTime = 8; return true;");
    browser.wait_for(
        "HLS playback after the seek",
        "const v = document.getElementById('video'); return v.currentTime > 8.5;",
        Duration::from_secs(30),
    );
    let id = browser.session_id();
    let lines = session_lines(&srv, &id);
    let paths: Vec<&str> = lines.iter().filter_map(|v| v["path"].as_str()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("/index.m3u8"))
            && paths.iter().any(|p| p.ends_with(".m4s"))
            && paths.iter().any(|p| p.ends_with(".mp4")),
        "variant playlists, init and media segments in this session: {paths:?}"
    );
    for v in &lines {
        assert_eq!(
            v["token"], "ok",
            "every request of the session admitted: {v}"
        );
        assert!(v["status"] == 200 || v["status"] == 206, "{v}");
        assert!(
            v["path"]
                .as_str()
                .unwrap()
                .starts_with("/video/private/movie42/"),
            "{v}"
        );
    }

    // 3. The same ladder with the VO1 cookie (minted by `sign --cookie`, set through WebDriver)
    // and no token in the URL: playlists are served as stored, the cookie admits every request.
    let (ok, out, err) = run_cli(
        &[
            "sign",
            "private/movie42/master.m3u8",
            "--cookie",
            "--ttl",
            "10m",
            "--assets",
            dir.path().to_str().unwrap(),
        ],
        &[("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY)],
    );
    assert!(ok, "{err}");
    let set_cookie = out
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: VO1="))
        .unwrap_or_else(|| panic!("{out}"));
    let (value, attrs) = set_cookie.split_once("; ").unwrap();
    assert!(
        attrs.starts_with("Path=/video/private/movie42/;"),
        "{attrs}"
    );
    browser.go(&format!("{base}/player/"));
    wd(
        browser.port,
        "POST",
        &format!("/session/{}/cookie", browser.session),
        Some(json!({"cookie": {
            "name": "VO1", "value": value, "path": "/video/private/movie42/",
            "httpOnly": true, "sameSite": "Lax",
        }})),
    );
    let before = access_lines(&srv).len();
    browser.go(&format!("{base}/player/private/movie42/master.m3u8"));
    browser.wait_playing_past("HLS playback with the cookie", 1.5, 40);
    let cookie_lines: Vec<Value> = access_lines(&srv)[before..]
        .iter()
        .filter(|v| v["path"].as_str().unwrap_or("").starts_with("/video/"))
        .cloned()
        .collect();
    assert!(cookie_lines
        .iter()
        .any(|v| v["path"].as_str().unwrap().ends_with(".m4s")));
    for v in &cookie_lines {
        assert_eq!(v["token"], "ok", "admitted by the cookie: {v}");
    }

    // 4. An expired link fails visibly (the query is judged alone, even with the cookie set).
    let expired = prefix_query(master, unix_now() - 60);
    browser.go(&format!(
        "{base}/player/private/movie42/master.m3u8?{expired}"
    ));
    browser.expect_refusal("expired");

    // 5. dash.js (also served by the origin) plays the DASH variant from one link.
    let mpd = "/video/private/movie42/dash/manifest.mpd";
    browser.go(&format!(
        "{base}/player/private/movie42/dash/manifest.mpd?{}",
        prefix_query(mpd, unix_now() + 600)
    ));
    browser.wait_playing_past("DASH playback to advance", 1.5, 40);
    let engine = browser.js("return window.voPlayer.engine");
    assert!(
        engine.as_str().unwrap().starts_with("dash.js 5.2.1"),
        "{engine}"
    );
    for v in access_lines(&srv) {
        let path = v["path"].as_str().unwrap_or("");
        if path.starts_with("/video/private/movie42/dash/") {
            assert_eq!(v["token"], "ok", "{v}");
        }
    }
}

#[test]
fn player_libraries_are_served_pinned_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.m3u8"), b"#EXTM3U\n").unwrap();
    let srv = player_server(dir.path(), &[]);
    let page = srv.get("/player/a.m3u8", &[]);
    let html = String::from_utf8(page.body.clone()).unwrap();
    // Nothing configured: no script source beyond the inline page, nothing from other hosts.
    assert!(html.contains(r#"<meta name="video-hls-js" content="" data-integrity="">"#));
    assert!(page
        .h("content-security-policy")
        .contains("script-src 'unsafe-inline';"));
    assert!(!html.contains("https://"), "no third-party URL in the page");
    // A library file is served under /player/.lib/ with its digest in the URL and the page.
    let lib = dir.path().join("lib.js");
    std::fs::write(&lib, b"window.Hls = undefined;").unwrap();
    let srv = player_server(
        dir.path(),
        &[("VIDEO_ORIGIN_PLAYER__HLS_JS", lib.to_str().unwrap())],
    );
    let html = String::from_utf8(srv.get("/player/a.m3u8", &[]).body).unwrap();
    let sri = video_origin::player::libraries::integrity_of(b"window.Hls = undefined;");
    assert!(
        html.contains(&format!("data-integrity=\"{sri}\"")),
        "{html}"
    );
    let r = srv.get("/player/.lib/hls.js", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"window.Hls = undefined;");
    assert_eq!(r.h("content-type"), "text/javascript; charset=utf-8");
    assert!(r.h("cache-control").contains("immutable"));
    // A URL without its integrity value stops the server, naming the key.
    let (ok, _, err) = run_cli(
        &["check-config", "--assets", dir.path().to_str().unwrap()],
        &[(
            "VIDEO_ORIGIN_PLAYER__DASH_JS",
            "https://cdn.example/dash.all.min.js",
        )],
    );
    assert!(!ok);
    assert!(err.contains("player.dash_js_integrity"), "{err}");
}
