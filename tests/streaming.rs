//! The plaintext HTTP/1.x path (`server::plain`) against the real binary: a slow reader still
//! gets exact bytes (the path drops what the socket refuses and reads it again), pipelining,
//! HTTP/1.0 keep-alive, the handoff to hyper for anything else on the same connection, and a
//! client that leaves mid-body. Framing rules: ../shared/specs/http-origin.md (RFC 9112).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

/// A client socket with a small receive buffer, so the server's socket fills quickly.
fn small_window(srv: &Server) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", srv.port).parse().unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads `want` bytes in small bites with pauses, as a stalled then recovering viewer would.
fn read_slowly(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(want);
    let mut bite = [0u8; 1500];
    let mut reads = 0;
    while out.len() < want {
        let n = s.read(&mut bite).unwrap();
        assert!(n > 0, "closed after {} of {want} bytes", out.len());
        out.extend_from_slice(&bite[..n]);
        reads += 1;
        if reads % 40 == 0 && out.len() < 2 << 20 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    out
}

/// The parts of a multipart/byteranges response, by the boundary its Content-Type names.
fn parts_of(r: &Resp) -> Vec<Part> {
    let boundary = r.h("content-type").split("boundary=").nth(1).unwrap();
    parse_multipart(&r.body, boundary)
}

fn head_end(buf: &[u8]) -> usize {
    buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

#[test]
fn a_slow_reader_gets_every_byte_in_order() {
    let data = pattern(6 << 20);
    let dir = assets(&[("v.mp4", &data)]);
    let srv = Server::start(dir.path(), &[]);
    let mut s = small_window(&srv);
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n")
        .unwrap();
    let mut got = read_slowly(&mut s, 300);
    let end = head_end(&got);
    let want = data.len() - 1000;
    got.extend(read_slowly(&mut s, end + want - got.len()));
    let r = Resp::parse(&got);
    assert_eq!(r.status, 206);
    assert_eq!(r.content_length(), want);
    assert!(r.body == data[1000..], "bytes differ from the file's");
    // The same connection still serves (keep-alive after a slow body).
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.body, data[..10]);
}

#[test]
fn a_slow_reader_gets_exact_multipart_framing() {
    let data = pattern(3 << 20);
    let dir = assets(&[("v.mp4", &data)]);
    let srv = Server::start(dir.path(), &[]);
    let mut s = small_window(&srv);
    s.write_all(
        b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99,1000000-2999999\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut bite = [0u8; 1000];
    loop {
        let n = s.read(&mut bite).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&bite[..n]);
    }
    let r = Resp::parse(&got);
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), r.content_length());
    let parts = parts_of(&r);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].data == data[..100]);
    assert!(parts[1].data == data[1_000_000..3_000_000]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let data = pattern(100_000);
    let dir = assets(&[("v.mp4", &data)]);
    let srv = Server::start(dir.path(), &[]);
    let mut s = srv.connect();
    s.write_all(
        b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\n\r\n\
          GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let got = read_responses(&mut s, 3);
    assert_eq!(got[0].body, data[..5]);
    assert_eq!(got[1].body, data[5..10]);
    assert_eq!(got[2].body, b"ok\n");
}

/// `n` responses framed by Content-Length, read from one connection.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<Resp> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut bite = [0u8; 4096];
    while out.len() < n {
        let r = s.read(&mut bite).unwrap();
        assert!(r > 0, "closed after {} responses", out.len());
        buf.extend_from_slice(&bite[..r]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let len = Resp::parse(&buf[..end + 4]).content_length();
            if buf.len() < end + 4 + len {
                break;
            }
            out.push(Resp::parse(&buf[..end + 4 + len]));
            buf.drain(..end + 4 + len);
        }
    }
    out
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let dir = assets(&[("v.mp4", b"0123456789")]);
    let srv = Server::start(dir.path(), &[]);
    let mut s = srv.connect();
    s.write_all(b"GET /video/v.mp4 HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let r = Resp::parse(&all);
    assert!(
        all.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    assert_eq!(r.body, b"0123456789");

    // ab -k: HTTP/1.0 with Connection: keep-alive gets it back and the connection stays.
    let mut s = srv.connect();
    for _ in 0..2 {
        s.write_all(b"HEAD /video/v.mp4 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let r = Resp::parse(&buf[..n]);
        assert_eq!(r.status, 200);
        assert_eq!(r.h("connection"), "keep-alive");
        assert_eq!(r.content_length(), 10);
        assert!(r.body.is_empty(), "HEAD has no body");
    }
}

#[test]
fn other_requests_on_the_same_connection_are_served_too() {
    let dir = assets(&[("v.mp4", b"0123456789")]);
    let srv = Server::start(dir.path(), &[]);
    let mut s = srv.connect();
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).body, b"0123456789");
    // A request with a body and another method: answered, the body consumed, and the
    // connection still in step for the next GET.
    s.write_all(
        b"POST /video/v.mp4 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=2-3\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 405);
    let r = read_response(&mut s);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"23");
    // A malformed head still gets hyper's 400, not a hang or a reset.
    s.write_all(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn a_client_leaving_mid_body_is_logged_incomplete() {
    let data = pattern(32 << 20);
    let dir = assets(&[("v.mp4", &data)]);
    let srv = Server::start(
        dir.path(),
        &[("VIDEO_ORIGIN_LOG__ACCESS_FORMAT", "combined")],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    s.read_exact(&mut first).unwrap();
    drop(s);
    let r = srv.get("/video/v.mp4", &[("range", "bytes=0-0")]);
    assert_eq!(r.status, 206);
    let lines = || {
        srv.log_text()
            .lines()
            .filter(|l| l.contains("\"GET /video/v.mp4"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(10), || lines().len() == 2),
        "{:?}",
        lines()
    );
    let all = lines();
    let left = all.iter().find(|l| l.contains(" 200 ")).unwrap();
    assert!(left.contains("complete=false"), "{left}");
    let sent: u64 = left.split(' ').nth(9).unwrap().parse().unwrap();
    assert!(sent >= 64 * 1024 && sent < data.len() as u64, "{left}");
    let whole = all.iter().find(|l| l.contains(" 206 ")).unwrap();
    assert!(whole.contains("complete=true"), "{whole}");
}

#[test]
fn sendfile_mode_sends_exact_bytes_and_ends_short_on_a_rewrite() {
    let data = pattern(16 << 20);
    let dir = assets(&[("v.mp4", &data)]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_STREAMING__SENDFILE", "true")]);
    // A slow reader, a range, and multipart framing between file bytes.
    let mut s = small_window(&srv);
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=7-\r\n\r\n")
        .unwrap();
    let mut got = read_slowly(&mut s, 300);
    let end = head_end(&got);
    got.extend(read_slowly(&mut s, end + data.len() - 7 - got.len()));
    assert!(
        Resp::parse(&got).body == data[7..],
        "bytes differ from the file's"
    );
    let r = srv.get("/video/v.mp4", &[("range", "bytes=0-9,5000000-5999999")]);
    let parts = parts_of(&r);
    assert!(parts[0].data == data[..10] && parts[1].data == data[5_000_000..6_000_000]);

    // An in-place rewrite mid-response: the response ends short of its Content-Length (what
    // sendfile cannot promise is that no byte of the new version went out; see README).
    let mut s = small_window(&srv);
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = read_slowly(&mut s, 64 * 1024);
    std::fs::write(dir.path().join("v.mp4"), vec![b'B'; data.len()]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    first.extend_from_slice(&rest);
    let r = Resp::parse(&first);
    assert_eq!(r.content_length(), data.len());
    assert!(r.body.len() < data.len(), "the response must end early");
}

/// A connection's reads clear its readiness when they empty the socket (not only on EAGAIN):
/// a head that arrives in pieces, requests that come after pauses, and a pipelined pair must
/// each still wake the connection. A lost wake-up shows here as a read timeout.
#[test]
fn heads_in_pieces_after_pauses_and_pipelined_are_all_answered() {
    let dir = assets(&[("v.mp4", b"0123456789")]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_SERVER__WORKERS", "1")]);
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for round in 0..5 {
        for piece in [
            &b"GET /video/v.mp4 HT"[..],
            b"TP/1.1\r\nHost: x\r\nRange: bytes=2-",
            b"5\r\n",
            b"\r\n",
        ] {
            s.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        let r = read_response(&mut s);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (206, &b"2345"[..]),
            "round {round}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.write_all(b"GET /video/v.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\nGET /video/v.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = read_responses(&mut s, 2);
    assert_eq!(got[0].body, b"0");
    assert_eq!(got[1].body, b"0123456789");
}

/// Small files are sent by `sendfile` from a sealed in-memory copy of their version (README
/// *Streaming*): exact bytes, ranges and multipart included, and a rewrite in place mid-response
/// cannot reach a response of the old version, which ends whole with the old bytes. With the
/// copies off, the same rewrite ends the response short (the file itself is read, checked).
#[test]
fn a_small_file_is_sent_from_a_copy_that_a_rewrite_in_place_cannot_change() {
    // Larger than the socket buffers hold, so a rewrite comes while most of it is unsent.
    let len = 16 << 20;
    let data = pattern(len);
    let dir = assets(&[("s.mp4", &data)]);
    let copies_up_to_16mib = ("VIDEO_ORIGIN_STREAMING__MEMORY_COPY_MAX_FILE", "16777216");
    let srv = Server::start(dir.path(), &[copies_up_to_16mib]);
    let whole = srv.get("/video/s.mp4", &[]);
    assert!(whole.status == 200 && whole.body == data, "whole file");
    assert_eq!(
        metric(&scrape(&srv), "video_origin_memory_copy_bytes"),
        Some(len as f64)
    );
    let r = srv.get("/video/s.mp4", &[("range", "bytes=7-")]);
    assert!(r.status == 206 && r.body == data[7..]);
    let parts = parts_of(&srv.get("/video/s.mp4", &[("range", "bytes=0-9,500000-599999")]));
    assert!(parts[0].data == data[..10] && parts[1].data == data[500_000..600_000]);
    // 16 MiB is hashed in the background: the old version's ETag, once known.
    let etag = |srv: &Server| {
        srv.head("/video/s.mp4", &[])
            .header("etag")
            .map(str::to_owned)
    };
    assert!(eventually(Duration::from_secs(10), || etag(&srv).is_some()));
    let old_etag = etag(&srv);

    let rewritten_mid_response = |srv: &Server| {
        let mut s = small_window(srv);
        s.write_all(b"GET /video/s.mp4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = read_slowly(&mut s, 64 * 1024);
        std::thread::sleep(Duration::from_millis(20));
        // In place: same inode, same size, every byte other.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("s.mp4"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![b'B'; len], 0).unwrap();
        drop(f);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        got.extend_from_slice(&rest);
        let r = Resp::parse(&got);
        assert_eq!(r.content_length(), len);
        r
    };
    let r = rewritten_mid_response(&srv);
    assert_eq!(r.body.len(), len, "the old version's response ends whole");
    assert!(r.body == data, "and with the old version's bytes only");
    let new = srv.get("/video/s.mp4", &[]);
    assert!(new.body.iter().all(|&b| b == b'B') && new.body.len() == len);
    assert!(eventually(Duration::from_secs(10), || {
        etag(&srv).is_some_and(|e| Some(e) != old_etag)
    }));
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &scrape(&srv),
            "video_origin_memory_copy_bytes"
        ) == Some(len as f64)),
        "the old version's copy is gone with its cache entry and its last response"
    );

    std::fs::write(dir.path().join("s.mp4"), &data).unwrap();
    let off = Server::start(
        dir.path(),
        &[
            copies_up_to_16mib,
            ("VIDEO_ORIGIN_STREAMING__MEMORY_COPIES_BYTES", "0"),
        ],
    );
    assert!(off.get("/video/s.mp4", &[]).body == data);
    let r = rewritten_mid_response(&off);
    assert!(r.body.len() < len, "without a copy the response ends short");
    assert_eq!(
        metric(&scrape(&off), "video_origin_memory_copy_bytes"),
        Some(0.0)
    );
}

/// Fairness between connections of one worker: a client that pipelines thousands of requests
/// (or sends each next one the moment it has an answer) gets one answer per turn, as on nginx's
/// event loop; another viewer's request is answered meanwhile, not after the whole pipeline.
#[test]
fn a_client_that_pipelines_many_requests_does_not_hold_its_worker() {
    const N: usize = 20_000;
    let dir = assets(&[("v.mp4", b"0123456789")]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_SERVER__WORKERS", "1")]);
    let a = srv.connect();
    let mut writer = a.try_clone().unwrap();
    std::thread::spawn(move || {
        let one = b"HEAD /video/v.mp4 HTTP/1.1\r\nHost: x\r\n\r\n";
        let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * N).collect();
        let _ = writer.write_all(&all);
    });
    // Drains A's answers, counting heads (a HEAD answer is a head alone).
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&answered);
    let mut reader = a;
    let drain = std::thread::spawn(move || {
        let mut bite = [0u8; 65536];
        let mut tail: Vec<u8> = Vec::new();
        while counter.load(std::sync::atomic::Ordering::Relaxed) < N {
            let n = reader.read(&mut bite).unwrap();
            assert!(n > 0, "closed");
            tail.extend_from_slice(&bite[..n]);
            let heads = tail.windows(4).filter(|w| w == b"\r\n\r\n").count();
            counter.fetch_add(heads, std::sync::atomic::Ordering::Relaxed);
            let keep = tail.len().min(3);
            tail.drain(..tail.len() - keep);
        }
    });
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut b = srv.connect();
    b.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = read_responses(&mut b, 1);
    let a_done = answered.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(got[0].body, b"ok\n");
    assert!(
        a_done < N / 2,
        "the other viewer waited for {a_done} of the {N} pipelined answers"
    );
    drain.join().unwrap();
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), N);
}
