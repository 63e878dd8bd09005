//! The origin as a library: the public pipeline is a tower `Service`, mounted here in a small
//! axum application next to an application route and wrapped in a tower layer, as a Rust
//! backend would (README, *Embedding*).

mod common;
use common::*;

use std::net::IpAddr;
use std::sync::Arc;

use axum::routing::get;
use video_origin::config::{self, Overrides};
use video_origin::{App, ClientAddr, PublicService};

#[tokio::test]
async fn the_public_service_mounts_in_an_axum_app() {
    let dir = assets(&[("a.mp4", b"0123456789"), ("private/p.mp4", b"secret")]);
    let settings = config::load(&Overrides {
        assets: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let app = Arc::new(App::new(Arc::new(settings)).unwrap());
    // A tower layer of the host application: it tells the origin who the client is.
    let origin = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<axum::body::Body>| {
            let ip: IpAddr = "203.0.113.7".parse().unwrap();
            req.extensions_mut().insert(ClientAddr(ip));
            req
        })
        .service(PublicService::new(Arc::clone(&app)));
    let router = axum::Router::new()
        .route("/hello", get(|| async { "hello from the app\n" }))
        .route_service("/video/{*path}", origin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let get = |path: &'static str, range: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            use std::io::{Read, Write};
            let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{range}\r\n"
            )
            .unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            Resp::parse(&buf)
        })
    };
    let r = get("/hello", None).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello from the app\n"[..])
    );
    let r = get("/video/a.mp4", Some("bytes=2-5")).await.unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.h("content-range"), "bytes 2-5/10");
    assert!(r.h("etag").starts_with('"'));
    assert_eq!(r.h("cache-control"), "public, max-age=60, s-maxage=86400");
    // The pipeline's rules hold inside the host app too.
    let r = get("/video/private/p.mp4", None).await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (403, &b"missing\n"[..]));
    let r = get("/video/../etc/passwd", None).await.unwrap();
    assert!(r.status == 400 || r.status == 404, "{}", r.status);
}
