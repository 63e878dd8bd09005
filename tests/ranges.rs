//! Byte ranges against the real server (spec http-origin §1, §5.2, §5.4, §5.5).

mod common;
use common::*;

const FILE: &[u8] = b"0123456789\n"; // Go's testdata/file

fn boundary_of(r: &Resp) -> String {
    let ct = r.h("content-type");
    ct.strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {ct}"))
        .to_string()
}

#[test]
fn go_serve_file_range_tests() {
    // spec: http-origin §5.2 G1–G22, run with coalesce_gap = 0 so Go's multipart rows stay multipart.
    let dir = assets(&[("file", FILE)]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_RANGES__COALESCE_GAP", "0")]);
    type Row = (&'static str, u16, &'static [(&'static str, &'static [u8])]);
    let rows: &[Row] = &[
        ("", 200, &[]),
        ("bytes=0-4", 206, &[("bytes 0-4/11", b"01234")]),
        ("bytes=2-", 206, &[("bytes 2-10/11", b"23456789\n")]),
        ("bytes=-5", 206, &[("bytes 6-10/11", b"6789\n")]),
        ("bytes=3-7", 206, &[("bytes 3-7/11", b"34567")]),
        (
            "bytes=0-0,-2",
            206,
            &[("bytes 0-0/11", b"0"), ("bytes 9-10/11", b"9\n")],
        ),
        (
            "bytes=0-1,5-8",
            206,
            &[("bytes 0-1/11", b"01"), ("bytes 5-8/11", b"5678")],
        ),
        (
            "bytes=0-1,5-",
            206,
            &[("bytes 0-1/11", b"01"), ("bytes 5-10/11", b"56789\n")],
        ),
        ("bytes=5-1000", 206, &[("bytes 5-10/11", b"56789\n")]),
        ("bytes=0-,1-,2-,3-,4-", 200, &[]),
        ("bytes=0-9", 206, &[("bytes 0-9/11", b"0123456789")]),
        ("bytes=0-10", 206, &[("bytes 0-10/11", FILE)]),
        ("bytes=0-11", 206, &[("bytes 0-10/11", FILE)]),
        ("bytes=10-11", 206, &[("bytes 10-10/11", b"\n")]),
        ("bytes=10-", 206, &[("bytes 10-10/11", b"\n")]),
        ("bytes=11-", 416, &[]),
        ("bytes=11-12", 416, &[]),
        ("bytes=12-12", 416, &[]),
        ("bytes=11-100", 416, &[]),
        ("bytes=12-100", 416, &[]),
        ("bytes=100-", 416, &[]),
        ("bytes=100-1000", 416, &[]),
    ];
    for (range, status, parts) in rows {
        let hdrs: Vec<(&str, &str)> = if range.is_empty() {
            vec![]
        } else {
            vec![("Range", range)]
        };
        let r = srv.get("/video/file", &hdrs);
        assert_eq!(r.status, *status, "{range}");
        assert_eq!(
            r.content_length(),
            r.body.len(),
            "{range}: Content-Length equals body"
        );
        match (status, parts.len()) {
            (200, _) => {
                assert_eq!(r.body, FILE, "{range}");
                assert!(r.header("content-range").is_none(), "R-26");
            }
            (416, _) => {
                assert_eq!(r.h("content-range"), "bytes */11", "{range}");
                assert_eq!(r.h("cache-control"), "no-store");
                assert!(r.h("content-type").starts_with("text/plain"));
            }
            (206, 1) => {
                assert_eq!(r.h("content-range"), parts[0].0, "{range}");
                assert_eq!(r.body, parts[0].1, "{range}");
                assert_eq!(
                    r.h("content-type"),
                    "application/octet-stream",
                    "single part is never multipart"
                );
            }
            (206, _) => {
                assert!(
                    r.header("content-range").is_none(),
                    "R-25: no top-level Content-Range"
                );
                let got = parse_multipart(&r.body, &boundary_of(&r));
                assert_eq!(got.len(), parts.len(), "{range}");
                for (g, (cr, data)) in got.iter().zip(parts.iter()) {
                    assert_eq!(g.content_range, *cr, "{range}: request order");
                    assert_eq!(g.data, *data, "{range}");
                    assert_eq!(g.content_type, "application/octet-stream");
                }
            }
            _ => unreachable!(),
        }
    }
    // G23: HEAD without Range.
    let h = srv.head("/video/file", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.h("content-length"), "11");
    assert!(h.body.is_empty());
}

#[test]
fn go_rows_coalesce_with_default_gap() {
    // spec: http-origin §5.2 G6–G8 "video-origin" column with coalesce_gap = 80
    let dir = assets(&[("file", FILE)]);
    let srv = Server::start(dir.path(), &[]);
    for (range, cr) in [
        ("bytes=0-0,-2", "bytes 0-10/11"),
        ("bytes=0-1,5-8", "bytes 0-8/11"),
        ("bytes=0-1,5-", "bytes 0-10/11"),
    ] {
        let r = srv.get("/video/file", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.h("content-range"), cr, "{range}");
    }
}

#[test]
fn invalid_suffix_lengths() {
    // spec: http-origin §5.4 V1–V8 (Go TestServeFileRejectsInvalidSuffixLengths)
    let body = b"index.html says hello\n";
    let dir = assets(&[("index.html", body)]);
    let srv = Server::start(dir.path(), &[]);
    for range in [
        "bytes=--6",
        "bytes=--0",
        "bytes=---0",
        "bytes=-6-",
        "bytes=",
    ] {
        let r = srv.get("/video/index.html", &[("Range", range)]);
        assert_eq!(r.status, 200, "{range}: invalid Range is ignored (R-10)");
        assert_eq!(r.body, body);
    }
    let r = srv.get("/video/index.html", &[("Range", "bytes=-6")]);
    assert_eq!(
        (r.status, r.h("content-range"), &r.body[..]),
        (206, "bytes 16-21/22", &b"hello\n"[..])
    );
    let r = srv.get("/video/index.html", &[("Range", "bytes=6-")]);
    assert_eq!(
        (r.status, r.h("content-range"), &r.body[..]),
        (206, "bytes 6-21/22", &b"html says hello\n"[..])
    );
    let r = srv.get("/video/index.html", &[("Range", "bytes=-0")]);
    assert_eq!(
        (r.status, r.h("content-range")),
        (416, "bytes */22"),
        "V7 / R-12"
    );
}

#[test]
fn range_checklist() {
    // spec: http-origin §1.8 RT-1..RT-20 on a 1000-byte file
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    let dir = assets(&[("a.mp4", &data), ("empty.mp4", b"")]);
    let srv = Server::start(dir.path(), &[]);
    let get = |range: &str| srv.get("/video/a.mp4", &[("Range", range)]);
    let single = |range: &str, cr: &str, s: usize, e: usize| {
        let r = get(range);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.h("content-range"), cr, "{range}");
        assert_eq!(r.body, &data[s..=e], "{range}");
        assert_eq!(r.h("content-type"), "video/mp4");
        // a 206 carries what the 200 would.
        for h in [
            "date",
            "cache-control",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            assert!(r.header(h).is_some(), "{range}: 206 lacks {h}");
        }
    };
    let full = |range: &str| {
        let r = get(range);
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body, data, "{range}");
    };
    let unsatisfiable = |range: &str| {
        let r = get(range);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.h("content-range"), "bytes */1000", "{range}");
    };
    single("bytes=0-0", "bytes 0-0/1000", 0, 0); // RT-1
    single("BYTES=0-0", "bytes 0-0/1000", 0, 0); // RT-2
    single("Bytes=0-0", "bytes 0-0/1000", 0, 0);
    single("bytes=0-", "bytes 0-999/1000", 0, 999); // RT-3
    unsatisfiable("bytes=-0"); // RT-4
    single("bytes=-1005", "bytes 0-999/1000", 0, 999); // RT-5
    unsatisfiable("bytes=1000-"); // RT-6
    unsatisfiable("bytes=1000-1009");
    for r in [
        "bytes=5-3",
        "bytes=0-2,5-4",
        "bytes=--6",
        "bytes=-6-",
        "bytes=A-",
        "bytes=0x1-0x2",
        "bytes=7",
        "bytes=",
        "bytes= , ,",
    ] {
        full(r); // RT-7
    }
    full("items=0-1"); // RT-8
    full("foo");
    full("bytes = 0-1"); // RT-9
    single(
        "bytes=0-99999999999999999999999",
        "bytes 0-999/1000",
        0,
        999,
    ); // RT-10
    unsatisfiable("bytes=99999999999999999999999-"); // RT-11
    single("bytes=1500-,0-5", "bytes 0-5/1000", 0, 5); // RT-12: unsatisfiable spec dropped
    let many = (0..17)
        .map(|i| format!("{}-{}", i * 50, i * 50))
        .collect::<Vec<_>>()
        .join(",");
    full(&format!("bytes={many}")); // RT-13: 17 specs > max_ranges 16
    full("bytes=0-,1-,2-,3-,4-"); // RT-14
    single("bytes=500-700,601-999", "bytes 500-999/1000", 500, 999); // RT-16
    single("bytes=   1 -2   ,  4- 5", "bytes 1-5/1000", 1, 5); // R-5 OWS leniency, coalesced

    // RT-15: multipart, exact length.
    let r = get("bytes=0-99,900-999");
    assert_eq!(r.status, 206);
    let b = boundary_of(&r);
    assert!(b.len() >= 30, "R-29");
    let parts = parse_multipart(&r.body, &b);
    assert_eq!(r.content_length(), r.body.len());
    // Same layout as the R-32 vector (363 with an 8-char boundary), so length = 363 - 8*3 + 3*len(b).
    assert_eq!(r.content_length(), 363 - 24 + 3 * b.len());
    assert_eq!(parts[0].data, &data[0..100]);
    assert_eq!(parts[1].data, &data[900..1000]);
    assert_eq!(parts[0].content_type, "video/mp4");

    // RT-17: any Range on an empty file → 200, Content-Length 0.
    for range in ["bytes=0-128", "bytes=1-", "bytes=-5"] {
        let r = srv.get("/video/empty.mp4", &[("Range", range)]);
        assert_eq!(
            (r.status, r.h("content-length"), r.body.len()),
            (200, "0", 0),
            "{range}"
        );
    }
    // RT-18: HEAD ignores Range.
    let r = srv.head("/video/a.mp4", &[("Range", "bytes=0-4")]);
    assert_eq!((r.status, r.h("content-length")), (200, "1000"));
    assert!(r.header("content-range").is_none());
    assert!(r.body.is_empty());
    // RT-19: a matching If-None-Match wins over Range.
    let etag = srv.get("/video/a.mp4", &[]).h("etag").to_string();
    let r = srv.get(
        "/video/a.mp4",
        &[("Range", "bytes=0-4"), ("If-None-Match", &etag)],
    );
    assert_eq!(r.status, 304);
    // RT-20: the legacy Request-Range header is never processed.
    let r = srv.get("/video/a.mp4", &[("Request-Range", "bytes=0-0")]);
    assert_eq!((r.status, r.body.len()), (200, 1000));
    // two Range lines are invalid → 200.
    let r = srv.get(
        "/video/a.mp4",
        &[("Range", "bytes=0-1"), ("Range", "bytes=5-6")],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn multipart_byte_by_byte_on_real_video() {
    // spec: http-origin R-30..R-33: parts in request order, bytes equal to the file.
    let video = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample.mp4")).unwrap();
    let dir = assets(&[("v/sample.mp4", &video)]);
    let srv = Server::start(dir.path(), &[]);
    let n = video.len();
    let spec = format!(
        "bytes=-1000,0-1023,{}-{},200000-200099",
        n / 2,
        n / 2 + 5000
    );
    let r = srv.get("/video/v/sample.mp4", &[("Range", &spec)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.content_length(), r.body.len());
    let parts = parse_multipart(&r.body, &boundary_of(&r));
    let expect = [
        (n - 1000, n - 1),
        (0, 1023),
        (n / 2, n / 2 + 5000),
        (200000, 200099),
    ];
    assert_eq!(parts.len(), expect.len());
    for (p, (s, e)) in parts.iter().zip(expect) {
        assert_eq!(p.content_range, format!("bytes {s}-{e}/{n}"));
        assert_eq!(p.data, &video[s..=e]);
        assert_eq!(p.content_type, "video/mp4");
    }
}
