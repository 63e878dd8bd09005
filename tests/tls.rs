//! TLS (rustls) with HTTP/2 by ALPN beside HTTP/1.1, certificate reload without dropping
//! connections, and h2c (issue #6 point 6). The certificate is generated here with rcgen; the
//! client is hyper's, speaking each protocol over tokio-rustls.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Pair {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.key_pair.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

/// Writes the pair as the server's files, atomically (rename), as a cert manager would.
fn install(dir: &Path, p: &Pair) {
    for (name, text) in [("cert.pem", &p.cert_pem), ("key.pem", &p.key_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn connector(trust: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust {
        roots.add((*c).clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// HTTP/2 with prior knowledge on plain TCP; the connection task's handle is returned too.
async fn h2c(
    port: u16,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    (h2, tokio::spawn(conn))
}

async fn tls_connect(port: u16, c: &tokio_rustls::TlsConnector) -> Tls {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    c.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn get(path: &str, range: Option<&str>) -> http::Request<Empty<Bytes>> {
    let mut b = http::Request::get(format!("https://localhost{path}"));
    if let Some(r) = range {
        b = b.header("range", r);
    }
    b.body(Empty::new()).unwrap()
}

/// (status, version, body) of one request over an established HTTP/1.1 sender.
async fn send_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, Vec<u8>) {
    let mut req = get(path, None);
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("localhost"));
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

fn tls_server(assets: &Path, certs: &Path, extra: &[(&str, &str)]) -> Server {
    let cert = certs.join("cert.pem").display().to_string();
    let key = certs.join("key.pem").display().to_string();
    let mut env = vec![
        ("VIDEO_ORIGIN_TLS__ENABLED", "true"),
        ("VIDEO_ORIGIN_TLS__CERT_FILE", cert.as_str()),
        ("VIDEO_ORIGIN_TLS__KEY_FILE", key.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(assets, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_http1_by_alpn() {
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let dir = assets(&[("a.mp4", &content)]);
    let certs = tempfile::tempdir().unwrap();
    let pair = self_signed();
    install(certs.path(), &pair);
    let srv = tls_server(dir.path(), certs.path(), &[]);

    // HTTP/2, negotiated by ALPN.
    let tls = tls_connect(srv.port, &connector(&[&pair.der], &[b"h2", b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Several streams at once on one connection.
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let req = get(
            "/video/a.mp4",
            Some(&format!("bytes={}-{}", i * 1000, i * 1000 + 999)),
        );
        tasks.push(h2.send_request(req));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let resp = t.await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 206);
        assert!(resp.headers().contains_key("etag"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &content[i * 1000..i * 1000 + 1000]);
    }
    let full = h2.send_request(get("/video/a.mp4", None)).await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(
        full.into_body().collect().await.unwrap().to_bytes().len(),
        content.len()
    );

    // HTTP/1.1 on the same port for clients that only offer it.
    let tls = tls_connect(srv.port, &connector(&[&pair.der], &[b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (status, body) = send_h1(&mut h1, "/video/a.mp4").await;
    assert_eq!((status, body.len()), (200, content.len()));

    // No ALPN at all: HTTP/1.1.
    let tls = tls_connect(srv.port, &connector(&[&pair.der], &[])).await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(send_h1(&mut h1, "/healthz").await.0, 200);

    // Plain HTTP on the TLS port gets nowhere.
    let r = tokio::task::spawn_blocking({
        let port = srv.port;
        move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(b"GET /video/a.mp4 HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf
        }
    })
    .await
    .unwrap();
    assert!(!r.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_on_sighup_and_on_change_keeps_connections() {
    let dir = assets(&[("a.mp4", b"abc")]);
    let certs = tempfile::tempdir().unwrap();
    let (a, b, c) = (self_signed(), self_signed(), self_signed());
    install(certs.path(), &a);
    let srv = tls_server(
        dir.path(),
        certs.path(),
        &[("VIDEO_ORIGIN_TLS__RELOAD_CHECK_SECS", "1")],
    );
    let trust = connector(&[&a.der, &b.der, &c.der], &[b"http/1.1"]);
    let presented = |t: &Tls| t.get_ref().1.peer_certificates().unwrap()[0].clone();

    // A keep-alive connection made with certificate A.
    let tls = tls_connect(srv.port, &trust).await;
    assert_eq!(presented(&tls), a.der);
    let (mut held, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        send_h1(&mut held, "/video/a.mp4").await,
        (200, b"abc".to_vec())
    );

    // SIGHUP with B on disk: new handshakes present B.
    install(certs.path(), &b);
    srv.sighup();
    let mut seen = None;
    for _ in 0..100 {
        let t = tls_connect(srv.port, &trust).await;
        if presented(&t) == b.der {
            seen = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.is_some(), "certificate B in service after SIGHUP");

    // File change alone (no signal): C appears within the check interval.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct mtime
    install(certs.path(), &c);
    let mut seen = false;
    for _ in 0..100 {
        let t = tls_connect(srv.port, &trust).await;
        if presented(&t) == c.der {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "certificate C in service after the files changed");

    // A broken pair is refused and C stays in service.
    std::fs::write(certs.path().join("key.pem"), "not a key").unwrap();
    srv.sighup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = tls_connect(srv.port, &trust).await;
    assert_eq!(presented(&t), c.der);
    assert!(eventually_async(|| srv.log_text().contains("TLS certificate reload failed")).await);

    // The connection made before any reload was never dropped.
    assert_eq!(
        send_h1(&mut held, "/video/a.mp4").await,
        (200, b"abc".to_vec())
    );
}

async fn eventually_async(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn bad_tls_files_fail_startup_with_the_key_and_reason() {
    let dir = assets(&[("a.mp4", b"abc")]);
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("cert.pem"), "nothing here").unwrap();
    std::fs::write(certs.path().join("key.pem"), "nothing here").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_TLS__ENABLED", "true")
        .env("VIDEO_ORIGIN_TLS__CERT_FILE", certs.path().join("cert.pem"))
        .env("VIDEO_ORIGIN_TLS__KEY_FILE", certs.path().join("key.pem"))
        .env("VIDEO_ORIGIN_METRICS__ADMIN", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.cert_file") && err.contains("cert.pem"),
        "{err}"
    );
    // Enabled without files: a config error naming the key.
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_TLS__ENABLED", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("tls.cert_file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_when_enabled() {
    let dir = assets(&[("a.mp4", b"0123456789")]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_SERVER__H2C", "true")]);
    let (mut h2, _conn) = h2c(srv.port).await;
    let resp = h2
        .send_request(
            http::Request::get(format!("http://127.0.0.1:{}/video/a.mp4", srv.port))
                .header("range", "bytes=2-4")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 206);
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"234"
    );
    // HTTP/1.1 still works on the same port.
    assert_eq!(srv.get("/video/a.mp4", &[]).status, 200);

    // Off (the default): the HTTP/2 preface is not an HTTP/1.1 request.
    let plain = Server::start(dir.path(), &[]);
    let (mut h2, _conn) = h2c(plain.port).await;
    let r = h2
        .send_request(
            http::Request::get(format!("http://127.0.0.1:{}/video/a.mp4", plain.port))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await;
    assert!(r.is_err(), "h2c refused when server.h2c = false");
}

/// HTTP/2 flow control stops a stream without any blocked socket write; the write-stall
/// timeout must still drop a client that stops reading, and close its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_client_that_stops_reading_is_dropped() {
    let dir = assets(&[("big.mp4", &vec![5u8; 32 << 20])]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SERVER__H2C", "true"),
            ("VIDEO_ORIGIN_SERVER__WRITE_STALL_TIMEOUT_SECS", "1"),
            ("VIDEO_ORIGIN_METADATA__OPEN_FILES", "0"),
        ],
    );
    let (mut h2, conn) = h2c(srv.port).await;
    let resp = h2
        .send_request(
            http::Request::get(format!("http://127.0.0.1:{}/video/big.mp4", srv.port))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Hold the body unread: the stream's window fills and the server can send no more.
    let held = resp;
    let fds_closed = tokio::task::spawn_blocking({
        let pid = srv.pid();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        move || {
            let open = || {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .flatten()
                    .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&root)))
                    .count()
            };
            eventually(Duration::from_secs(3), || open() == 1)
                && eventually(Duration::from_secs(15), || open() == 0)
        }
    })
    .await
    .unwrap();
    assert!(fds_closed, "the stalled stream's file is closed");
    // The connection was closed by the server.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "client connection ended");
    drop(held);
    let metrics = tokio::task::spawn_blocking(move || {
        String::from_utf8(srv.admin("GET", "/metrics", None, None).body).unwrap()
    })
    .await
    .unwrap();
    assert!(
        metrics
            .contains("video_origin_connections_closed_by_server_total{reason=\"write_stall\"} 1"),
        "{metrics}"
    );
}

#[test]
fn probe_checks_the_tls_listener_trusting_exactly_the_servers_certificate() {
    // #18.13: the container health check with TLS on.
    let dir = assets(&[("a.mp4", b"x")]);
    let certs = tempfile::tempdir().unwrap();
    let pair = self_signed();
    install(certs.path(), &pair);
    let srv = tls_server(dir.path(), certs.path(), &[]);
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    let listen = format!("127.0.0.1:{}", srv.port);
    let probe = |cert_file: &Path, args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("probe")
            .args(args)
            .arg("--assets")
            .arg(dir.path())
            .env("VIDEO_ORIGIN_TLS__ENABLED", "true")
            .env("VIDEO_ORIGIN_TLS__CERT_FILE", cert_file)
            .env("VIDEO_ORIGIN_TLS__KEY_FILE", &key)
            .env("VIDEO_ORIGIN_SERVER__LISTEN", &listen)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Without --url: https on the configured listener's port, loopback, /healthz.
    let (ok, err) = probe(&cert, &[]);
    assert!(ok, "{err}");
    let url = format!("https://127.0.0.1:{}/healthz", srv.port);
    assert!(probe(&cert, &["--url", &url]).0);
    // A server presenting another certificate is not trusted.
    let other = tempfile::tempdir().unwrap();
    install(other.path(), &self_signed());
    let (ok, err) = probe(&other.path().join("cert.pem"), &[]);
    assert!(!ok);
    assert!(err.contains("not the one in tls.cert_file"), "{err}");
    // Plain http to the TLS listener is no health.
    let plain = format!("http://127.0.0.1:{}/healthz", srv.port);
    assert!(!probe(&cert, &["--url", &plain]).0);
}
