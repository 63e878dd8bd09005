//! Signed playback links end to end: minting (CLI, admin API, library), checking at the origin,
//! reasons, scope, rotation, edge formats, cache interaction, bad input (spec signed-urls).

mod common;
use common::*;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use video_origin::signing::{akamai, cloudflare, native};

const K1: &str = "hex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const K0: &str = "hex:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// `[signing.cloudflare]` for the edge-format tests (with `AKAMAI_SIGNING`).
const CLOUDFLARE_SIGNING: &str = r#"
[signing.cloudflare]
secrets = ["mysecretmysecretmysecretmysecret"]
ttl_secs = 600
url_safe = false
prefix_len = 0
"#;
const ADMIN: &str = "admin-token-0123456789abcdef0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_bytes(k: &str) -> Vec<u8> {
    video_origin::signing::keys::decode_secret(k).unwrap()
}

fn library() -> tempfile::TempDir {
    assets(&[
        ("private/movie42/master.m3u8", b"#EXTM3U\n"),
        ("private/movie42/1080p/seg_00001.m4s", b"segment-one-bytes"),
        ("private/movie420/x.ts", b"other title"),
        ("private/a b/clip.mp4", b"0123456789"),
        ("public/free.mp4", b"free for all"),
    ])
}

fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1),
        ("VIDEO_ORIGIN_SIGNING__KEYS__K0", K0),
        ("VIDEO_ORIGIN_SIGNING__SIGNING_KEY", "k1"),
        ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
        ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    env.extend_from_slice(extra);
    Server::start(dir, &env)
}

/// A VO1 link (path and query) minted with the library, as a Rust backend would.
fn link(
    kid: &str,
    key: &str,
    path: &str,
    exp: u64,
    nbf: Option<u64>,
    scope: Option<&str>,
) -> String {
    let req = native::MintRequest {
        path: path.into(),
        exp,
        nbf,
        scope: scope.map(str::to_string),
        ip: None,
    };
    let (p, q) = native::mint(kid, &key_bytes(key), &req).unwrap();
    format!("{p}?{q}")
}

#[test]
fn private_paths_need_a_valid_link() {
    let dir = library();
    let srv = start(dir.path(), &[]);
    let exp = now() + 600;
    // spec: signed-urls §8.5 reason classes, §7 S-6 (403, reason only, no-store)
    let r = srv.get("/video/private/movie42/master.m3u8", &[]);
    assert_eq!(
        (r.status, &r.body[..], r.h("cache-control")),
        (403, &b"missing\n"[..], "no-store")
    );

    let good = link(
        "k1",
        K1,
        "/video/private/movie42/master.m3u8",
        exp,
        None,
        None,
    );
    let r = srv.get(&good, &[]);
    assert_eq!((r.status, &r.body[..]), (200, &b"#EXTM3U\n"[..]));
    assert_eq!(
        r.h("cache-control"),
        "private, no-store",
        "origin-verified: never in a shared cache"
    );
    assert!(r.header("cdn-cache-control").is_none() && r.header("cache-tag").is_none());
    // Same policy on 206 and 304 (H-21); ETag is the content hash, not the token (K-2).
    let etag = r.h("etag").to_string();
    let other = link(
        "k0",
        K0,
        "/video/private/movie42/master.m3u8",
        exp + 5,
        None,
        None,
    );
    assert_eq!(
        srv.get(&other, &[]).h("etag"),
        etag,
        "token parameters never enter the ETag"
    );
    let r206 = srv.get(&good, &[("Range", "bytes=0-1")]);
    assert_eq!(
        (r206.status, r206.h("cache-control")),
        (206, "private, no-store")
    );
    let r304 = srv.get(&good, &[("If-None-Match", &etag)]);
    assert_eq!(
        (r304.status, r304.h("cache-control")),
        (304, "private, no-store")
    );
    // 403 wins over preconditions and over existence (step 0).
    assert_eq!(
        srv.get(
            "/video/private/movie42/master.m3u8",
            &[("If-None-Match", &etag)]
        )
        .status,
        403
    );
    assert_eq!(srv.get("/video/private/nothing-here.mp4", &[]).status, 403);
    assert_eq!(
        srv.head("/video/private/movie42/master.m3u8", &[]).status,
        403
    );

    let reason = |target: &str| {
        let r = srv.get(target, &[]);
        assert_eq!(r.status, 403, "{target}");
        String::from_utf8(r.body).unwrap().trim().to_string()
    };
    let expired = link(
        "k1",
        K1,
        "/video/private/movie42/master.m3u8",
        now() - 100,
        None,
        None,
    );
    assert_eq!(reason(&expired), "expired");
    let early = link(
        "k1",
        K1,
        "/video/private/movie42/master.m3u8",
        exp + 3600,
        Some(now() + 1800),
        None,
    );
    assert_eq!(reason(&early), "not-yet-valid");
    assert_eq!(
        reason(&good.replace("master.m3u8", "1080p/seg_00001.m4s")),
        "bad-signature"
    );
    assert_eq!(reason(&good.replace("kid=k1", "kid=k9")), "unknown-key");
    let q = good.split_once('?').unwrap().1;
    let sig_value = q.rsplit_once("sig=").unwrap().1.to_string();
    // Bad input: garbage, truncated, duplicated, oversized, non-UTF-8 → malformed, never 5xx.
    for bad in [
        format!("/video/private/movie42/master.m3u8?{q}&{q}"),
        format!("/video/private/movie42/master.m3u8?{}", &q[..q.len() - 5]),
        "/video/private/movie42/master.m3u8?exp=zzz&kid=k1&sig=abc".to_string(),
        "/video/private/movie42/master.m3u8?exp=1&kid=k1&sig=%ff%fe".to_string(),
        "/video/private/movie42/master.m3u8?exp=1&kid=k1&sig=%zz".to_string(),
        format!(
            "/video/private/movie42/master.m3u8?exp=1&kid=k1&sig={}",
            "A".repeat(5000)
        ),
        format!("/video/private/movie42/master.m3u8?{q}&scope=not-a-path/"),
    ] {
        assert_eq!(reason(&bad), "malformed", "{bad}");
    }
    // Public paths ignore tokens, even broken ones.
    assert_eq!(
        srv.get("/video/public/free.mp4?exp=x&kid=&sig=%ff", &[])
            .status,
        200
    );
    // The log has the reason and detail, never a token or signature.
    let log = srv.log_text();
    assert!(
        log.contains("signed link refused") && log.contains("reason=\"bad-signature\""),
        "{log}"
    );
    assert!(!log.contains(&sig_value), "signatures never reach the log");
}

#[test]
fn prefix_scope_plays_a_ladder_and_nothing_else() {
    // spec: signed-urls §8.3, §8.7 N-2 shape; issue: one token for an HLS/DASH ladder
    let dir = library();
    let srv = start(dir.path(), &[]);
    let exp = now() + 600;
    let master = link(
        "k1",
        K1,
        "/video/private/movie42/master.m3u8",
        exp,
        None,
        Some("/video/private/movie42/"),
    );
    let q = master.split_once('?').unwrap().1;
    assert_eq!(srv.get(&master, &[]).status, 200);
    let seg = srv.get(
        &format!("/video/private/movie42/1080p/seg_00001.m4s?{q}"),
        &[],
    );
    assert_eq!(
        (seg.status, &seg.body[..]),
        (200, &b"segment-one-bytes"[..])
    );
    let r = srv.get(&format!("/video/private/movie420/x.ts?{q}"), &[]);
    assert_eq!(
        (r.status, &r.body[..]),
        (403, &b"wrong-scope\n"[..]),
        "the scope's trailing / matters"
    );
    // `..` and encoded tricks cannot widen a scope: they never reach the token check as a
    // different path (the path is refused first, or canonicalised identically).
    for trick in [
        "/video/private/movie42/../movie420/x.ts",
        "/video/private/movie42/%2e%2e/movie420/x.ts",
        "/video/private/movie42/%2E%2E%2Fmovie420/x.ts",
        "/video/private/movie42/..%5cmovie420/x.ts",
    ] {
        let r = srv.get(&format!("{trick}?{q}"), &[]);
        assert!(r.status == 400 || r.status == 403, "{trick}: {}", r.status);
        assert_ne!(r.body, b"other title");
    }
    // A scope the token was not minted with cannot be added.
    let exact = link(
        "k1",
        K1,
        "/video/private/movie42/master.m3u8",
        exp,
        None,
        None,
    );
    let widened = format!("{exact}&scope=/video/private/");
    assert_eq!(srv.get(&widened, &[]).body, b"bad-signature\n");
}

#[test]
fn key_rotation_and_non_ascii_paths() {
    let dir = library();
    let exp = now() + 600;
    let old = link("k0", K0, "/video/private/a b/clip.mp4", exp, None, None);
    assert!(old.starts_with("/video/private/a%20b/clip.mp4?"), "{old}");
    let srv = start(dir.path(), &[]);
    assert_eq!(
        srv.get(&old, &[]).status,
        200,
        "an old key still verifies while configured"
    );
    drop(srv);
    // Retire k0: only k1 remains.
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1),
            ("VIDEO_ORIGIN_SIGNING__SIGNING_KEY", "k1"),
        ],
    );
    assert_eq!(srv.get(&old, &[]).body, b"unknown-key\n");
}

/// `video-origin sign private/movie42/master.m3u8 --ttl 10m <how>` with key k1 and the
/// cdn.example.com base: its stdout.
fn sign_ladder(assets: &std::path::Path, how: &str) -> String {
    let (ok, out, err) = run_cli(
        &[
            "sign",
            "private/movie42/master.m3u8",
            "--ttl",
            "10m",
            how,
            "--assets",
            assets.to_str().unwrap(),
        ],
        &[
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1),
            (
                "VIDEO_ORIGIN_SIGNING__PUBLIC_BASE_URL",
                "https://cdn.example.com",
            ),
        ],
    );
    assert!(ok, "{err}");
    out
}

#[test]
fn cli_mints_links_that_play() {
    let dir = library();
    let srv = start(dir.path(), &[]);
    let url = sign_ladder(dir.path(), "--prefix").trim().to_string();
    assert!(
        url.starts_with("https://cdn.example.com/video/private/movie42/master.m3u8?exp="),
        "{url}"
    );
    assert!(url.contains("&scope=/video/private/movie42/&"));
    let path_and_query = url.trim_start_matches("https://cdn.example.com");
    assert_eq!(srv.get(path_and_query, &[]).status, 200);
    // Max TTL is enforced at mint time.
    let out = Command::new(BIN)
        .args(["sign", "private/a.mp4", "--ttl", "30d", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_ttl"));
}

#[test]
fn admin_sign_endpoint() {
    let dir = library();
    let srv = start(dir.path(), &[]);
    let body = r#"{"path": "private/movie42/master.m3u8", "ttl_secs": 300}"#;
    let r = srv.admin("POST", "/admin/sign", None, Some(body));
    assert_eq!(r.status, 401);
    assert!(r.h("www-authenticate").starts_with("Bearer"));
    assert_eq!(
        srv.admin(
            "POST",
            "/admin/sign",
            Some("wrong-token-wrong-token-wrong-token"),
            Some(body)
        )
        .status,
        401
    );
    let r = srv.admin("POST", "/admin/sign", Some(ADMIN), Some(body));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.h("cache-control"), "private, no-store");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let url = v["url"].as_str().unwrap();
    let expires_at = v["expires_at"].as_u64().unwrap();
    assert!((now() + 299..=now() + 301).contains(&expires_at));
    let path = url.split_once("://").unwrap().1;
    let path = &path[path.find('/').unwrap()..];
    assert_eq!(srv.get(path, &[]).status, 200);
    // Bad input names the problem; client mistakes are 4xx.
    let bad = |b: &str| {
        let r = srv.admin("POST", "/admin/sign", Some(ADMIN), Some(b));
        (r.status, String::from_utf8(r.body).unwrap())
    };
    let (s, m) = bad(r#"{"path": "a.mp4", "ttl_secs": "soon"}"#);
    assert!(
        s == 400 && m.contains("ttl_secs") || m.contains("invalid type"),
        "{m}"
    );
    let (s, m) = bad(r#"{"pathh": "a.mp4"}"#);
    assert!(s == 400 && m.contains("pathh"), "{m}");
    let (s, m) = bad(r#"{"ttl_secs": 5}"#);
    assert!(s == 400 && m.contains("path"), "{m}");
    let (s, _) = bad("{not json");
    assert_eq!(s, 400);
    let (s, m) = bad(r#"{"path": "private/a.mp4", "ttl_secs": 999999}"#);
    assert!(s == 400 && m.contains("max_ttl"), "{m}");
    let (s, _) = bad(&format!(r#"{{"path": "{}"}}"#, "a".repeat(100_000)));
    assert_eq!(s, 413);
    assert_eq!(
        srv.admin("GET", "/admin/sign", Some(ADMIN), None).status,
        405
    );
    // Audit: who (token id), never the token.
    let log = srv.log_text();
    assert!(
        log.contains("who=\"ops\"") && log.contains("action=\"sign\""),
        "{log}"
    );
    assert!(!log.contains(ADMIN));
    // Several tokens are accepted at once (rotation): each is identified by its own id.
    let two = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1),
            (
                "VIDEO_ORIGIN_ADMIN__TOKENS__OLD",
                "old-admin-token-0123456789abcdef012345",
            ),
            (
                "VIDEO_ORIGIN_ADMIN__TOKENS__NEW",
                "new-admin-token-0123456789abcdef012345",
            ),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    );
    for t in [
        "old-admin-token-0123456789abcdef012345",
        "new-admin-token-0123456789abcdef012345",
    ] {
        assert_eq!(
            two.admin("POST", "/admin/sign", Some(t), Some(body)).status,
            200,
            "{t}"
        );
    }
    let audit = two.log_text();
    assert!(
        audit.contains("who=\"old\"") && audit.contains("who=\"new\""),
        "{audit}"
    );
    // The admin API is not on the public port.
    assert_eq!(
        srv.request(
            "POST",
            "/admin/sign",
            &[("Authorization", &format!("Bearer {ADMIN}"))]
        )
        .status,
        404
    );
}

#[test]
fn ip_bound_links() {
    let dir = library();
    let srv = start(dir.path(), &[]);
    let mint = |ip: &str| {
        let req = native::MintRequest {
            path: "/video/private/movie42/master.m3u8".into(),
            exp: now() + 600,
            ip: Some(ip.parse().unwrap()),
            ..Default::default()
        };
        let (p, q) = native::mint("k1", &key_bytes(K1), &req).unwrap();
        format!("{p}?{q}")
    };
    assert_eq!(srv.get(&mint("127.0.0.1"), &[]).status, 200);
    assert_eq!(srv.get(&mint("203.0.113.9"), &[]).body, b"wrong-ip\n");
}

#[test]
fn edge_token_forms_and_edge_verified_caching() {
    let dir = library();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("origin.toml");
    std::fs::write(
        &cfg,
        CLOUDFLARE_SIGNING.to_owned()
            + AKAMAI_SIGNING
            + r#"[cache]
cdn = "generic"
[[cache.rules]]
match = "private/movie42/**"
cache_control = "public, max-age=30"
[[cache.rules]]
match = "**"
cache_control = "public, max-age=60"
[[access.rules]]
match = "private/movie42/**"
tokens = ["cloudflare", "akamai"]
edge_verified = true
[[access.rules]]
match = "private/**"
tokens = ["native"]
"#,
    )
    .unwrap();
    let srv = Server::start_with(dir.path(), &[], &["--config", cfg.to_str().unwrap()]);
    let path = "/video/private/movie42/master.m3u8";
    // Cloudflare is_timed_hmac_valid_v0 form (spec signed-urls §1).
    let q = cloudflare::mint(b"mysecretmysecretmysecretmysecret", path, now() - 5, false);
    let r = srv.get(&format!("{path}?{q}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.h("cache-control"),
        "public, max-age=30",
        "edge_verified: the cache rules apply (the CDN checks tokens and keys without them)"
    );
    let stale = cloudflare::mint(
        b"mysecretmysecretmysecretmysecret",
        path,
        now() - 700,
        false,
    );
    assert_eq!(srv.get(&format!("{path}?{stale}"), &[]).body, b"expired\n");
    // Akamai EdgeAuth form (spec signed-urls §2), ACL scope.
    let key = video_origin::signing::keys::decode_secret(AKAMAI_KEY).unwrap();
    let token = akamai::mint(
        &key,
        akamai::Algorithm::Sha256,
        &akamai::Fields {
            start: Some(now() - 5),
            exp: now() + 300,
            acl: vec!["/video/private/movie42/*".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        srv.get(
            &format!("/video/private/movie42/1080p/seg_00001.m4s?__token__={token}"),
            &[]
        )
        .status,
        200
    );
    assert_eq!(
        srv.get(
            &format!("/video/private/movie420/x.ts?__token__={token}"),
            &[]
        )
        .status,
        403
    );
    assert_eq!(srv.get(path, &[]).body, b"missing\n");
    // Origin-verified paths are forced to private, no-store whatever the cache rules say.
    let exp = now() + 600;
    let config_keys = Server::start_with(
        dir.path(),
        &[("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1)],
        &["--config", cfg.to_str().unwrap()],
    );
    let native_link = link("k1", K1, "/video/private/a b/clip.mp4", exp, None, None);
    let r = config_keys.get(&native_link, &[]);
    assert_eq!((r.status, r.h("cache-control")), (200, "private, no-store"));
    assert_eq!(
        config_keys
            .get("/video/public/free.mp4", &[])
            .h("cache-control"),
        "public, max-age=60"
    );
}

#[test]
fn check_config_redacts_secrets_and_bad_keys_fail_fast() {
    let dir = library();
    let out = Command::new(BIN)
        .args(["check-config", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_SIGNING__KEYS__K1", K1)
        .env("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("k1 = \"<redacted>\"") && text.contains("ops = \"<redacted>\""),
        "{text}"
    );
    assert!(!text.contains("000102030405") && !text.contains(ADMIN));

    for (var, value, key) in [
        ("VIDEO_ORIGIN_SIGNING__KEYS__K1", "hex:0011", "signing.keys"),
        (
            "VIDEO_ORIGIN_SIGNING__KEYS__K1",
            "plain-text-secret-plain-text-secret",
            "signing.keys.k1",
        ),
        ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", "short", "admin.tokens"),
    ] {
        let out = Command::new(BIN)
            .args(["check-config", "--assets"])
            .arg(dir.path())
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(key), "{var}: {err}");
        assert!(
            !err.contains(value) || value.len() < 8,
            "the secret is never echoed: {err}"
        );
    }
}

#[test]
fn links_minted_in_the_edge_formats_verify() {
    // #18.14: what `sign --format` and POST /admin/sign mint is what the verifiers accept
    // (spec signed-urls §1 Cloudflare, §2 Akamai, §3 CloudFront).
    let dir = library();
    std::fs::create_dir_all(dir.path().join("private/trailers")).unwrap();
    std::fs::write(dir.path().join("private/trailers/t1.mp4"), b"trailer").unwrap();
    let work = tempfile::tempdir().unwrap();
    let pem = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cloudfront/cfk-rsa-2048.pem"
    );
    let cfg = work.path().join("origin.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"{CLOUDFLARE_SIGNING}{AKAMAI_SIGNING}[signing.cloudfront]
key_pair_id = "K2JCJMDEHXQW5F"
private_key_file = "{pem}"
hash = "sha1"
base_url = "https://d111111abcdef8.cloudfront.net"
[[access.rules]]
match = "private/movie42/**"
tokens = ["cloudflare"]
[[access.rules]]
match = "private/**"
tokens = ["akamai"]
"#
        ),
    )
    .unwrap();
    let config = cfg.to_str().unwrap();
    let srv = Server::start_with(
        dir.path(),
        &[("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN)],
        &["--config", config],
    );
    let path_of = |url: &str| -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        format!("/{}", rest.split_once('/').unwrap().1)
    };
    let sign_with = |path: &str, format: &str, extra: &[&str]| -> String {
        let mut args = vec![
            "sign",
            path,
            "--format",
            format,
            "--ttl",
            "5m",
            "--config",
            config,
            "--assets",
            dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = run_cli(&args, &[]);
        assert!(ok, "{err}");
        out.trim().to_owned()
    };
    let sign = |path: &str, format: &str| sign_with(path, format, &[]);
    // Cloudflare and Akamai: the origin's own verifiers admit what the CLI minted.
    let cf = sign("private/movie42/master.m3u8", "cloudflare");
    assert_eq!(srv.get(&path_of(&cf), &[]).status, 200, "{cf}");
    let ak = sign("private/trailers/t1.mp4", "akamai");
    assert_eq!(srv.get(&path_of(&ak), &[]).status, 200, "{ak}");
    // The same through the admin API.
    for (path, format) in [
        ("private/movie42/master.m3u8", "cloudflare"),
        ("private/trailers/t1.mp4", "akamai"),
    ] {
        let r = srv.admin(
            "POST",
            "/admin/sign",
            Some(ADMIN),
            Some(&format!(
                r#"{{"path":"{path}","ttl_secs":300,"format":"{format}"}}"#
            )),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let url = v["url"].as_str().unwrap();
        assert_eq!(srv.get(&path_of(url), &[]).status, 200, "{url}");
    }
    // CloudFront checks its own links; check the RSA signature with the public key, and the
    // policy's resource and expiry (canned policy: Expires, Signature, Key-Pair-Id).
    let url = sign("private/trailers/t1.mp4", "cloudfront");
    assert!(
        url.starts_with("https://d111111abcdef8.cloudfront.net/video/private/trailers/t1.mp4?"),
        "{url}"
    );
    let (resource, query) = url.split_once('?').unwrap();
    let param = |name: &str| -> String {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {url}"))
            .to_owned()
    };
    assert_eq!(param("Key-Pair-Id"), "K2JCJMDEHXQW5F");
    let expires: u64 = param("Expires").parse().unwrap();
    assert!(expires > now() + 200 && expires <= now() + 301, "{expires}");
    let policy = format!(
        r#"{{"Statement":[{{"Resource":"{resource}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    );
    // CloudFront's URL-safe base64: + = / become - _ ~.
    let sig = param("Signature")
        .replace('-', "+")
        .replace('_', "=")
        .replace('~', "/");
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .unwrap();
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let text = std::fs::read_to_string(pem).unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(&text))
        .unwrap();
    let public = rsa::RsaPublicKey::from(&key);
    use sha1::Digest;
    let digest = sha1::Sha1::digest(policy.as_bytes());
    public
        .verify(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &digest, &sig)
        .expect("the signature verifies with the key pair's public key over the canned policy");
    // A different resource does not verify under that signature.
    let other = policy.replace("t1.mp4", "t2.mp4");
    assert!(public
        .verify(
            rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
            &sha1::Sha1::digest(other.as_bytes()),
            &sig
        )
        .is_err());
    // #16.2 CloudFront signed cookies (spec signed-urls §3.5): a custom policy whose resource is
    // the directory with a wildcard, one Set-Cookie per value, scoped to the directory.
    let out = sign_with("private/trailers/t1.mp4", "cloudfront", &["--cookie"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.last().unwrap(),
        &"https://d111111abcdef8.cloudfront.net/video/private/trailers/t1.mp4"
    );
    let cookie = |name: &str| -> String {
        let line = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("Set-Cookie: {name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {out}"));
        let (value, attrs) = line.split_once("; ").unwrap();
        assert!(
            attrs.starts_with("Path=/video/private/trailers/; Max-Age=300; Secure; HttpOnly"),
            "{attrs}"
        );
        value.to_owned()
    };
    assert_eq!(cookie("CloudFront-Key-Pair-Id"), "K2JCJMDEHXQW5F");
    let unb64 = |v: String| {
        base64::engine::general_purpose::STANDARD
            .decode(v.replace('-', "+").replace('_', "=").replace('~', "/"))
            .unwrap()
    };
    let policy = unb64(cookie("CloudFront-Policy"));
    let text = String::from_utf8(policy.clone()).unwrap();
    assert!(
        text.starts_with(r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/video/private/trailers/*","Condition":{"DateLessThan":{"AWS:EpochTime":"#),
        "{text}"
    );
    public
        .verify(
            rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
            &sha1::Sha1::digest(&policy),
            &unb64(cookie("CloudFront-Signature")),
        )
        .expect("the cookie signature verifies over the cookie's policy");
}

/// The `VO1=<value>` pair of a `Set-Cookie` value, as a browser sends it back.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split_once("; ").unwrap().0
}

#[test]
fn vo1_cookies_minted_by_cli_and_admin_admit_the_ladder_only() {
    // #16.2: `sign --cookie` and POST /admin/sign {"cookie": true}; the origin checks the
    // cookie exactly as the query form (spec signed-urls §8), the query taking precedence.
    let dir = library();
    let srv = start(dir.path(), &[]);
    let out = sign_ladder(dir.path(), "--cookie");
    let lines: Vec<&str> = out.lines().collect();
    let [set_cookie, url] = lines.as_slice() else {
        panic!("{out}")
    };
    assert_eq!(
        *url,
        "https://cdn.example.com/video/private/movie42/master.m3u8"
    );
    let set_cookie = set_cookie.strip_prefix("Set-Cookie: ").unwrap();
    assert!(set_cookie.starts_with("VO1=exp="), "{set_cookie}");
    assert!(
        set_cookie.ends_with(
            "; Path=/video/private/movie42/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"
        ),
        "{set_cookie}"
    );
    let cookie = cookie_pair(set_cookie);
    let seg = "/video/private/movie42/1080p/seg_00001.m4s";
    let r = srv.get(seg, &[("cookie", &format!("lang=en; {cookie}"))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"segment-one-bytes");
    assert_eq!(r.h("cache-control"), "private, no-store");
    assert_eq!(srv.get(seg, &[]).status, 403);
    // A directory grant never reaches a sibling whose name merely starts the same.
    let r = srv.get("/video/private/movie420/x.ts", &[("cookie", cookie)]);
    assert_eq!(r.status, 403);
    // A query token is judged alone: a bad one is refused even beside a valid cookie.
    let forged = format!("{seg}?exp={}&kid=k1&sig={}", now() + 60, "A".repeat(43));
    let r = srv.get(&forged, &[("cookie", cookie)]);
    assert_eq!(r.status, 403);
    assert_eq!(r.body, b"bad-signature\n");
    // A tampered cookie gets the same reason as a tampered query.
    let tampered = cookie.replace("exp=", "exp=1");
    let r = srv.get(seg, &[("cookie", &tampered)]);
    assert_eq!(r.status, 403);
    // The admin API mints the same shape.
    let r = srv.admin(
        "POST",
        "/admin/sign",
        Some(ADMIN),
        Some(r#"{"path":"private/movie42/master.m3u8","ttl_secs":120,"cookie":true,"same_site":"None"}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let set = v["set_cookie"][0].as_str().unwrap();
    assert!(
        set.contains("; Max-Age=120; ") && set.ends_with("SameSite=None"),
        "{set}"
    );
    assert!(!v["url"].as_str().unwrap().contains('?'));
    assert_eq!(srv.get(seg, &[("cookie", cookie_pair(set))]).status, 200);
    // Bad cookie options are refused with the field named.
    let r = srv.admin(
        "POST",
        "/admin/sign",
        Some(ADMIN),
        Some(r#"{"path":"private/movie42/master.m3u8","cookie":true,"cookie_domain":"a;b"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("cookie_domain"));
}
