//! Cache policy against the real server (spec http-origin §3, H-17..H-21).

mod common;
use common::*;
use std::process::Command;

fn default_assets() -> tempfile::TempDir {
    assets(&[
        ("private/movie42/master.m3u8", b"#EXTM3U\n"),
        ("private/movie42/a.mp4", b"private bytes"),
        ("live/ch1/index.m3u8", b"#EXTM3U\n"),
        ("vod/x.mpd", b"<MPD/>"),
        ("v/seg-9f86d081884c7d65.m4s", b"immutable segment"),
        ("v/seg-20241231.m4s", b"dated, not content-addressed"),
        ("series/s1/e1.mp4", b"0123456789abcdef"),
        ("top.mp4", b"top"),
    ])
}

/// A server with a signing key, so private paths can be requested with a valid link.
fn start_with_key(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut e = vec![("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY)];
    e.extend_from_slice(env);
    Server::start(dir, &e)
}

fn caching(r: &Resp) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = r
        .headers
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "cache-control"
                    | "cdn-cache-control"
                    | "cloudflare-cdn-cache-control"
                    | "surrogate-control"
                    | "vary"
                    | "cache-tag"
                    | "surrogate-key"
                    | "etag"
            )
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    v.sort();
    v
}

#[test]
fn default_classes() {
    // spec: http-origin H-17 (immutable), H-18 (replaceable), H-19 (private), H-20 (errors)
    let dir = default_assets();
    let srv = start_with_key(dir.path(), &[]);
    let r = srv.get(&signed("/video/private/movie42/a.mp4"), &[]);
    assert_eq!(r.h("cache-control"), "private, no-store");
    assert!(r.header("cdn-cache-control").is_none() && r.header("cache-tag").is_none());

    for p in ["/video/live/ch1/index.m3u8", "/video/vod/x.mpd"] {
        let r = srv.get(p, &[]);
        assert_eq!(r.h("cache-control"), "public, max-age=2", "{p}");
        assert_eq!(
            r.h("cdn-cache-control"),
            "max-age=2, stale-while-revalidate=4, stale-if-error=60",
            "{p}"
        );
    }
    let r = srv.get("/video/v/seg-9f86d081884c7d65.m4s", &[]);
    assert_eq!(r.h("cache-control"), "public, max-age=31536000, immutable");
    let r = srv.get("/video/v/seg-20241231.m4s", &[]);
    assert_eq!(
        r.h("cache-control"),
        "public, max-age=60, s-maxage=86400",
        "a date is not a content hash"
    );

    let r = srv.get("/video/series/s1/e1.mp4", &[]);
    assert_eq!(r.h("cache-control"), "public, max-age=60, s-maxage=86400");
    assert_eq!(
        r.h("cdn-cache-control"),
        "max-age=86400, stale-while-revalidate=60, stale-if-error=86400"
    );
    assert_eq!(
        r.h("cache-tag"),
        "video,dir:series/s1,file:series/s1/e1.mp4"
    );
    assert_eq!(
        r.h("surrogate-key"),
        "video dir:series/s1 file:series/s1/e1.mp4"
    );
    assert!(
        r.header("surrogate-control").is_none(),
        "never by default (H-15)"
    );
    assert!(r.header("vary").is_none(), "Vary only where configured");

    let r = srv.get("/video/series/missing.mp4", &[]);
    assert_eq!(
        (r.status, r.h("cache-control")),
        (404, "public, max-age=10")
    );
    let r = srv.get(&signed("/video/private/movie42/missing.mp4"), &[]);
    assert_eq!((r.status, r.h("cache-control")), (404, "private, no-store"));
    let r = srv.get("/outside-mount", &[]);
    assert_eq!(
        (r.status, r.h("cache-control")),
        (404, "public, max-age=10")
    );
    for (headers, status) in [
        (vec![("Range", "bytes=999-")], 416),
        (vec![("If-Match", "\"nope\"")], 412),
    ] {
        let r = srv.get("/video/series/s1/e1.mp4", &headers);
        assert_eq!((r.status, r.h("cache-control")), (status, "no-store"));
        assert!(r.header("cdn-cache-control").is_none() && r.header("cache-tag").is_none());
    }
    assert_eq!(srv.get("/video/a%00", &[]).h("cache-control"), "no-store"); // 400
    assert_eq!(
        srv.request("DELETE", "/video/top.mp4", &[])
            .h("cache-control"),
        "no-store"
    ); // 405
}

#[test]
fn same_policy_on_200_206_304_and_head() {
    // spec: http-origin H-21, C-19, C-21
    let dir = default_assets();
    let srv = start_with_key(dir.path(), &[]);
    let private = signed("/video/private/movie42/a.mp4");
    for path in [
        "/video/series/s1/e1.mp4",
        "/video/live/ch1/index.m3u8",
        private.as_str(),
    ] {
        let full = srv.get(path, &[]);
        let etag = full.h("etag").to_string();
        let part = srv.get(path, &[("Range", "bytes=0-3")]);
        let nm = srv.get(path, &[("If-None-Match", &etag)]);
        let head = srv.head(path, &[]);
        let head_nm = srv.head(path, &[("If-None-Match", &etag)]);
        assert_eq!(
            (full.status, part.status, nm.status, head_nm.status),
            (200, 206, 304, 304)
        );
        for other in [&part, &nm, &head, &head_nm] {
            assert_eq!(
                caching(&full),
                caching(other),
                "{path}: status {}",
                other.status
            );
        }
    }
}

#[test]
fn first_match_order_and_custom_rules_from_a_file() {
    let dir = default_assets();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("origin.toml");
    std::fs::write(
        &cfg,
        r#"
[cache]
cdn = "cloudflare"
# This file's rules are the whole list (without it they go before the shipped ones).
replace_rules = true
[[cache.rules]]
match = "series/s1/**"
cache_control = "public, max-age=5"
vary = "Origin"
tags = ["season:{seg1}", "ep:{stem}"]
[[cache.rules]]
match = "series/**"
cache_control = "public, max-age=6"
[[cache.rules]]
match = "**"
cache_control = "public, max-age=7"
surrogate_control = "max-age=99"
"#,
    )
    .unwrap();
    let srv = Server::start_with(dir.path(), &[], &["--config", cfg.to_str().unwrap()]);
    let r = srv.get("/video/series/s1/e1.mp4", &[]);
    assert_eq!(r.h("cache-control"), "public, max-age=5");
    assert_eq!(r.h("vary"), "Origin");
    assert_eq!(r.h("cache-tag"), "season:s1,ep:e1");
    assert!(
        r.header("surrogate-key").is_none(),
        "cloudflare preset: Cache-Tag only"
    );
    assert_eq!(srv.get("/video/series/s2.mp4", &[]).status, 404);
    let r = srv.get("/video/top.mp4", &[]);
    assert_eq!(r.h("cache-control"), "public, max-age=7");
    assert!(
        r.header("surrogate-control").is_none(),
        "never sent to Cloudflare (H-15)"
    );
    // No 404 rule in this config: 404s fall back to no-store.
    assert_eq!(
        srv.get("/video/nope.mp4", &[]).h("cache-control"),
        "no-store"
    );
    let log = srv.log_text();
    assert!(
        log.contains("Surrogate-Control makes Cloudflare ignore Cache-Control"),
        "{log}"
    );
}

#[test]
fn cloudfront_preset_puts_cdn_ttl_in_s_maxage() {
    // spec: http-origin H-14
    let dir = default_assets();
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_CACHE__CDN", "cloudfront")]);
    let r = srv.get("/video/live/ch1/index.m3u8", &[]);
    assert_eq!(r.h("cache-control"), "public, max-age=2, s-maxage=2");
    assert!(r.header("cdn-cache-control").is_none());
    let r = srv.get("/video/series/s1/e1.mp4", &[]);
    assert_eq!(r.h("cache-control"), "public, max-age=60, s-maxage=86400");
    assert!(r.header("cache-tag").is_none() && r.header("surrogate-key").is_none());
    assert!(srv
        .log_text()
        .contains("CloudFront ignores CDN-Cache-Control"));
}

#[test]
fn bad_rules_are_rejected_at_startup_with_index_and_reason() {
    let work = tempfile::tempdir().unwrap();
    let cases = [
        (
            "cache_control = \"s-maxage=60, stale-while-revalidate=30\"",
            "cache.rules[1].cache_control",
            "s-maxage",
        ),
        (
            "cache_control = \"no-store, max-age=5\"",
            "cache.rules[1].cache_control",
            "no-store",
        ),
        (
            "cache_control = \"immutable, must-revalidate\"",
            "cache.rules[1].cache_control",
            "contradict",
        ),
        (
            "cache_control = \"Max-Age=5\"",
            "cache.rules[1].cache_control",
            "lowercase",
        ),
        (
            "cache_control = \"public\"\ncdn_cache_control = \"max-age = 5\"",
            "cache.rules[1].cdn_cache_control",
            "unknown directive",
        ),
        (
            "cache_control = \"public\"\nvary = \"*\"",
            "cache.rules[1].vary",
            "Vary: *",
        ),
        (
            "cache_control = \"public\"\ntags = [\"{bogus}\"]",
            "cache.rules[1].tags",
            "unknown variable",
        ),
    ];
    for (body, key, why) in cases {
        let cfg = work.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("[cache]\ncdn = \"generic\"\n[[cache.rules]]\nmatch = \"**\"\ncache_control = \"public\"\n[[cache.rules]]\nmatch = \"x/**\"\n{body}\n"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{body}");
        assert!(
            err.contains(key) && err.contains(why) && err.contains("c.toml"),
            "{body}: {err}"
        );
    }
    let cfg = work.path().join("c.toml");
    std::fs::write(&cfg, "[cache]\ncdn = \"akamai\"\nrules = []\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cache.cdn"), "{err}");
    std::fs::write(
        &cfg,
        "[[cache.rules]]\nmatch = \"a**\"\ncache_control = \"public\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cache.rules[0].match") && err.contains("whole path segment"),
        "{err}"
    );
}

#[test]
fn explain_prints_rule_and_headers() {
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("explain")
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["/video/series/s1/e1.mp4"]);
    assert!(out.contains("path: series/s1/e1.mp4"), "{out}");
    assert!(
        out.contains("200/206/304/HEAD: cache.rules[3] (media) match = \"**\""),
        "{out}"
    );
    assert!(
        out.contains("  cache-control: public, max-age=60, s-maxage=86400"),
        "{out}"
    );
    assert!(
        out.contains("  cache-tag: video,dir:series/s1,file:series/s1/e1.mp4"),
        "{out}"
    );
    assert!(out.contains("404: cache.rules[4] (not-found)"), "{out}");
    let out = run(&["private/movie42/seg1.ts"]);
    assert!(
        out.contains("cache.rules[0] (private)")
            && out.contains("cache-control: private, no-store"),
        "{out}"
    );
    let out = Command::new(BIN)
        .args(["explain", "../etc/passwd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
