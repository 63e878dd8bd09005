//! Test helpers: run the real `video-origin` binary on 127.0.0.1:0 and talk raw HTTP/1.1 to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod s3;

/// An Akamai EdgeAuth key (hex) and the `[signing.akamai]` section that configures it.
pub const AKAMAI_KEY: &str = "hex:52a152a152a152a152a152a1";
pub const AKAMAI_SIGNING: &str = r#"
[signing.akamai]
keys = ["52a152a152a152a152a152a1"]
algorithm = "sha256"
param = "__token__"
"#;

pub const BIN: &str = env!("CARGO_BIN_EXE_video-origin");

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Admin listener port, when admin tokens were configured.
    pub admin_port: Option<u16>,
    pub assets: PathBuf,
    pub log: PathBuf,
    /// The bucket served, when the test file runs on the s3 backend (`s3::s3_mode`).
    pub bucket: Option<s3::Bucket>,
    _workdir: tempfile::TempDir,
}

impl Server {
    /// Starts the server over `assets` with extra `VIDEO_ORIGIN_*` environment.
    pub fn start(assets: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(assets, env, &[])
    }

    pub fn start_with(assets: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        // The same test on the s3 backend: the folder's files go into a fresh bucket first.
        let bucket = s3::s3_mode().then(|| {
            let b = s3::Bucket::new(&s3::Moto::shared().endpoint);
            b.upload_dir(assets);
            b
        });
        let bucket_env = bucket.as_ref().map(|b| b.env()).unwrap_or_default();
        // An empty working directory, so no config/origin.toml is picked up by accident.
        let workdir = tempfile::tempdir().unwrap();
        let log = workdir.path().join("server.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--assets")
            .arg(assets)
            .args(args)
            .current_dir(workdir.path())
            .env_remove("RUST_LOG")
            // Unbuffered log so tests can read each request's line at once; the buffered mode
            // has its own test (serving.rs).
            .env("VIDEO_ORIGIN_LOG__BUFFER_BYTES", "0")
            // The admin listener also serves /metrics, so it starts in every test: never on the
            // fixed default port, which parallel tests would fight over.
            .env("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0")
            .envs(bucket_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("spawn video-origin");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut admin_port = None;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            match line.strip_prefix("admin listening on http://") {
                Some(rest) => {
                    admin_port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok())
                }
                None => break,
            }
        }
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no listening line (got {line:?}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Server {
            child,
            port,
            admin_port,
            assets: assets.to_path_buf(),
            log,
            bucket,
            _workdir: workdir,
        }
    }

    /// After a test changed `rel` in its folder: on the s3 backend, uploads it again (as a
    /// publisher would) and waits out the metadata TTL; nothing to do on the fs backend.
    pub fn republish(&self, rel: &str) {
        if let Some(b) = &self.bucket {
            b.put(rel, &std::fs::read(self.assets.join(rel)).unwrap(), true);
            // storage.s3.metadata_ttl_secs (5 by default) is how long a replica may keep the
            // old version; the suites run with the default.
            std::thread::sleep(Duration::from_millis(5200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers)
    }

    pub fn head(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("HEAD", path, headers)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        self.raw(raw.as_bytes())
    }

    /// Sends raw bytes and reads the response until the server closes the connection.
    pub fn raw(&self, request: &[u8]) -> Resp {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf); // a reset after a short body still leaves `buf`
        Resp::parse(&buf)
    }

    /// One admin request with an optional bearer token and JSON body.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let port = self.admin_port.expect("admin listener not started");
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(t) = bearer {
            raw.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Resp::parse(&buf)
    }

    /// Raw bytes to the admin listener (a head and a body); the response when it closes.
    pub fn admin_raw(&self, head: &str, body: &[u8]) -> Resp {
        let port = self.admin_port.expect("admin listener not started");
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        // A server may answer (413, 401) and close before the whole body is sent.
        let _ = s.write_all(body);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Resp::parse(&buf)
    }

    /// `PUT /admin/assets/{path}` with `body`, authorized by `bearer`.
    pub fn admin_put(&self, path: &str, bearer: &str, body: &[u8]) -> Resp {
        let head = format!(
            "PUT /admin/assets/{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.admin_raw(&head, body)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Number of open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The fd count once it has stopped changing (closing sockets settle first).
    pub fn settled_fds(&self) -> usize {
        let mut last = self.open_fds();
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.open_fds();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// Open descriptors that point into the asset directory.
    pub fn open_asset_fds(&self) -> usize {
        let root = std::fs::canonicalize(&self.assets).unwrap();
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&root)))
            .count()
    }

    pub fn sigterm(&self) {
        unsafe_kill(self.pid(), "TERM");
    }

    pub fn sighup(&self) {
        unsafe_kill(self.pid(), "HUP");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held. A wait for an
/// eventual state, not a speed assertion.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn parse(buf: &[u8]) -> Resp {
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
        let head = std::str::from_utf8(&buf[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Resp {
            status,
            headers,
            body: buf[end + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("missing header {name} in {:?}", self.headers))
    }

    pub fn content_length(&self) -> usize {
        self.h("content-length").parse().unwrap()
    }
}

/// A part of a multipart/byteranges body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    pub content_type: String,
    pub content_range: String,
    pub data: Vec<u8>,
}

/// Strict multipart/byteranges parser (spec http-origin R-30, R-33): exact framing, every part
/// has Content-Type and Content-Range, and nothing follows the closing delimiter.
pub fn parse_multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = body;
    let open = format!("--{boundary}\r\n");
    let next = format!("\r\n--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--\r\n");
    rest = rest
        .strip_prefix(open.as_bytes())
        .expect("body starts with the boundary");
    loop {
        let hend = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part header end");
        let head = std::str::from_utf8(&rest[..hend]).unwrap();
        let mut ct = None;
        let mut cr = None;
        for l in head.split("\r\n") {
            let (k, v) = l.split_once(": ").expect("part header line");
            match k {
                "Content-Type" => ct = Some(v.to_string()),
                "Content-Range" => cr = Some(v.to_string()),
                other => panic!("unexpected part header {other}"),
            }
        }
        let content_range = cr.expect("part Content-Range");
        let (_, span) = content_range.split_once(' ').unwrap();
        let (se, _) = span.split_once('/').unwrap();
        let (s, e) = se.split_once('-').unwrap();
        let len = e.parse::<usize>().unwrap() - s.parse::<usize>().unwrap() + 1;
        let data_start = hend + 4;
        let data = rest[data_start..data_start + len].to_vec();
        parts.push(Part {
            content_type: ct.expect("part Content-Type"),
            content_range,
            data,
        });
        rest = &rest[data_start + len..];
        if let Some(r) = rest.strip_prefix(next.as_bytes()) {
            rest = r;
            continue;
        }
        assert_eq!(
            rest,
            close.as_bytes(),
            "closing delimiter and nothing after it"
        );
        return parts;
    }
}

/// Writes `files` (relative path → bytes) into a fresh temp dir.
pub fn assets(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    dir
}

/// The VO1 key the tests configure as `k1` (spec signed-urls §8.7 K1).
pub const TEST_KEY: &str = "hex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// `path` with a valid VO1 token (key `k1` = [`TEST_KEY`], 10 minutes), minted with the library
/// as a Rust backend would.
pub fn signed(path: &str) -> String {
    signed_with(path, unix_now() + 600, None)
}

/// `path` with a VO1 token expiring at `exp` (unix seconds), optionally bound to `ip`.
pub fn signed_with(path: &str, exp: u64, ip: Option<std::net::IpAddr>) -> String {
    let key = video_origin::signing::keys::decode_secret(TEST_KEY).unwrap();
    let req = video_origin::signing::native::MintRequest {
        path: path.into(),
        exp,
        ip,
        ..Default::default()
    };
    let (p, q) = video_origin::signing::native::mint("k1", &key, &req).unwrap();
    format!("{p}?{q}")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A loopback port that was free a moment ago (for tools that cannot report an ephemeral one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of one series in a /metrics text, e.g. `video_origin_open_fds`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// `GET /metrics` on the admin listener.
pub fn scrape(srv: &Server) -> String {
    let r = srv.admin("GET", "/metrics", None, None);
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// One HTTP/1.1 response, by Content-Length or chunked framing (not by connection close), so
/// the connection can be used again. It reads exactly the response's bytes: a pipelined
/// response behind it stays in the socket for the next call.
pub fn read_response(s: &mut TcpStream) -> Resp {
    fn line(s: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut byte = [0u8; 1];
        loop {
            let n = s.read(&mut byte).unwrap();
            assert!(n > 0, "connection closed before a whole response");
            buf.push(byte[0]);
            if buf.ends_with(b"\r\n") {
                return;
            }
        }
    }
    let mut buf = Vec::new();
    loop {
        let before = buf.len();
        line(s, &mut buf);
        if buf.len() - before == 2 {
            break;
        }
    }
    let r = Resp::parse(&buf);
    if let Some(len) = r.header("content-length") {
        let at = buf.len();
        buf.resize(at + len.parse::<usize>().unwrap(), 0);
        s.read_exact(&mut buf[at..]).unwrap();
    } else if r.header("transfer-encoding").is_some() {
        loop {
            let at = buf.len();
            line(s, &mut buf);
            let size = std::str::from_utf8(&buf[at..buf.len() - 2]).unwrap();
            let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
            let at = buf.len();
            buf.resize(at + size + 2, 0);
            s.read_exact(&mut buf[at..]).unwrap();
            if size == 0 {
                break;
            }
        }
    } else if !matches!(r.status, 100..=199 | 204 | 304) {
        // Delimited by the connection's close.
        s.read_to_end(&mut buf).unwrap();
    }
    Resp::parse(&buf)
}

/// The payload of a chunked body (strict: every chunk well framed, a final 0 chunk).
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

/// Sets a file's modification time.
pub fn set_mtime(p: &Path, t: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

// --- WebSocket at the frame level (RFC 6455) ------------------------------------------

/// Opens `/ws` with a raw handshake; returns the socket after the 101 head.
pub fn ws_open(srv: &Server, query: &str) -> Result<TcpStream, Resp> {
    ws_open_on(srv.connect(), query, "")
}

/// [`ws_open`] on a socket of the caller's, with extra header lines (`Name: value\r\n`).
pub fn ws_open_on(mut s: TcpStream, query: &str, extra: &str) -> Result<TcpStream, Resp> {
    write!(
        s,
        "GET /ws?{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let r = Resp::parse(&head);
    if r.status != 101 {
        let mut rest = vec![0u8; r.content_length()];
        s.read_exact(&mut rest).unwrap();
        return Err(Resp { body: rest, ..r });
    }
    // RFC 6455 §1.3's example key and answer.
    assert_eq!(r.h("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    Ok(s)
}

/// A masked client frame (RFC 6455 §5.2).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one server frame: (opcode, payload).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let mut len = (h[1] & 0x7f) as usize;
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l)?;
        len = u16::from_be_bytes(l) as usize;
    } else if len == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l)?;
        len = u64::from_be_bytes(l) as usize;
    }
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[0] & 0x0f, p))
}

/// Runs the binary with `args` in an empty working directory; (success, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let workdir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(args)
        .current_dir(workdir.path())
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback TCP forwarder to `target` that can be shut like a stopped server: while closed
/// it does not listen, so connections are refused exactly as with the server gone; opened
/// again, it listens on the same port.
pub struct Gate {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    pub fn start(target: u16, open: bool) -> Gate {
        use std::sync::atomic::Ordering;
        let port = free_port();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(open));
        let f = std::sync::Arc::clone(&flag);
        std::thread::spawn(move || loop {
            while !f.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            listener.set_nonblocking(true).unwrap();
            while f.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let (mut cl, mut up) = (client, upstream);
                    let _ = std::io::copy(&mut cl, &mut up);
                    let _ = up.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        if open {
            assert!(
                eventually(Duration::from_secs(5), || TcpStream::connect((
                    "127.0.0.1",
                    port
                ))
                .is_ok()),
                "gate listening"
            );
        }
        Gate { port, open: flag }
    }

    pub fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A JSON response body (panics with the body when it is not JSON).
pub fn body_json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&r.body)))
}

/// The invalidation job `id` as `GET /admin/invalidations/{id}` shows it.
pub fn invalidation_job(srv: &Server, bearer: &str, id: &str) -> serde_json::Value {
    body_json(&srv.admin(
        "GET",
        &format!("/admin/invalidations/{id}"),
        Some(bearer),
        None,
    ))
}
