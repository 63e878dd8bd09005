//! The admin API end to end: replace/delete with CloudFront invalidations against a real AWS
//! API emulator (moto server on loopback) through the real aws-sdk-cloudfront client.
//!
//! tests/run-all.sh installs moto into target/moto-venv; without it these tests fail (not skip).

mod common;
use common::s3::Moto;
use common::*;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudfront::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudfront::types::*;

const ADMIN: &str = "admin-token-0123456789abcdef0123456789";

/// moto's CloudFront, through the real aws-sdk-cloudfront client.
trait CloudFrontMoto {
    fn client(&self) -> aws_sdk_cloudfront::Client;
    fn create_distribution(&self, rt: &tokio::runtime::Runtime) -> String;
    fn invalidated_paths(&self, rt: &tokio::runtime::Runtime, dist: &str) -> Vec<String>;
}

impl CloudFrontMoto for Moto {
    fn client(&self) -> aws_sdk_cloudfront::Client {
        let conf = aws_sdk_cloudfront::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_cloudfront::Client::from_conf(conf)
    }

    /// Creates a distribution through the API, as an operator would; returns its id.
    fn create_distribution(&self, rt: &tokio::runtime::Runtime) -> String {
        let client = self.client();
        rt.block_on(async {
            let origin = Origin::builder()
                .id("origin1")
                .domain_name("videos.s3.amazonaws.com")
                .s3_origin_config(S3OriginConfig::builder().origin_access_identity("").build())
                .build()
                .unwrap();
            let behavior = DefaultCacheBehavior::builder()
                .target_origin_id("origin1")
                .viewer_protocol_policy(ViewerProtocolPolicy::AllowAll)
                .cache_policy_id("658327ea-f89d-4fab-a63d-7e88639e58f6")
                .build()
                .unwrap();
            let cfg = DistributionConfig::builder()
                .caller_reference("video-origin-tests")
                .origins(
                    Origins::builder()
                        .quantity(1)
                        .items(origin)
                        .build()
                        .unwrap(),
                )
                .default_cache_behavior(behavior)
                .comment("video-origin tests")
                .enabled(true)
                .build()
                .unwrap();
            let out = client
                .create_distribution()
                .distribution_config(cfg)
                .send()
                .await
                .unwrap();
            out.distribution().unwrap().id().to_string()
        })
    }

    /// Every path of every invalidation moto has recorded for `dist`.
    fn invalidated_paths(&self, rt: &tokio::runtime::Runtime, dist: &str) -> Vec<String> {
        let client = self.client();
        rt.block_on(async {
            let list = client
                .list_invalidations()
                .distribution_id(dist)
                .send()
                .await
                .unwrap();
            let mut paths = Vec::new();
            for s in list.invalidation_list().unwrap().items() {
                let inv = client
                    .get_invalidation()
                    .distribution_id(dist)
                    .id(s.id())
                    .send()
                    .await
                    .unwrap();
                paths.extend(
                    inv.invalidation()
                        .unwrap()
                        .invalidation_batch()
                        .unwrap()
                        .paths()
                        .unwrap()
                        .items()
                        .iter()
                        .cloned(),
                );
            }
            paths
        })
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn start(dir: &std::path::Path, moto: &Moto, dist: &str) -> Server {
    Server::start(
        dir,
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
            ("VIDEO_ORIGIN_ADMIN__MAX_UPLOAD_BYTES", "1048576"),
            ("VIDEO_ORIGIN_INVALIDATION__ENABLED", "true"),
            ("VIDEO_ORIGIN_INVALIDATION__DISTRIBUTION_ID", dist),
            ("VIDEO_ORIGIN_INVALIDATION__ENDPOINT_URL", &moto.endpoint),
            ("VIDEO_ORIGIN_INVALIDATION__ACCESS_KEY_ID", "testing"),
            ("VIDEO_ORIGIN_INVALIDATION__SECRET_ACCESS_KEY", "testing"),
        ],
    )
}

/// A raw admin request with an arbitrary body.
fn put(srv: &Server, path: &str, body: &[u8]) -> Resp {
    srv.admin_put(path, ADMIN, body)
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().to_string();
        if name.contains(".upload-") {
            out.push(name);
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn replace_serves_new_bytes_and_invalidates_on_cloudfront() {
    let rt = rt();
    let moto = Moto::start();
    let dist = moto.create_distribution(&rt);
    let dir = assets(&[("series/e1.mp4", b"old episode bytes")]);
    let srv = start(dir.path(), &moto, &dist);
    let before = srv.get("/video/series/e1.mp4", &[]);
    assert_eq!(before.body, b"old episode bytes");

    let r = put(&srv, "series/e1.mp4", b"NEW episode bytes, longer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = body_json(&r);
    assert_eq!(v["path"], "series/e1.mp4");
    assert_eq!(v["size"], 25);
    assert_ne!(v["etag"].as_str().unwrap(), before.h("etag"));
    // Answered once the invalidation is in the journal; the outbox sends it.
    let job = &v["invalidation"]["jobs"][0];
    assert_eq!(job["cdn"], "cloudfront");
    assert_eq!(job["paths"], serde_json::json!(["/video/series/e1.mp4"]));
    let job_id = job["id"].as_str().unwrap().to_owned();
    // moto reports COMPLETED at once; real CloudFront says InProgress first.
    assert!(
        eventually(Duration::from_secs(10), || {
            let j = body_json(&srv.admin(
                "GET",
                &format!("/admin/invalidations/{job_id}"),
                Some(ADMIN),
                None,
            ));
            j["state"] == "completed" && j["cdn_ref"].as_str().is_some_and(|r| !r.is_empty())
        }),
        "the job completed"
    );

    let after = srv.get("/video/series/e1.mp4", &[]);
    assert_eq!(after.body, b"NEW episode bytes, longer");
    assert_eq!(
        after.h("etag"),
        v["etag"].as_str().unwrap(),
        "the API's ETag is what GET serves"
    );
    assert!(moto
        .invalidated_paths(&rt, &dist)
        .contains(&"/video/series/e1.mp4".to_string()));

    // Created (201), not invalidated when asked not to.
    let r = put(&srv, "new/dir/clip.mp4?invalidate=false", b"brand new");
    assert_eq!(r.status, 201);
    assert!(body_json(&r)["invalidation"].is_null());
    assert_eq!(srv.get("/video/new/dir/clip.mp4", &[]).body, b"brand new");

    // Invalidation routes.
    let r = srv.admin(
        "POST",
        "/admin/invalidations",
        Some(ADMIN),
        Some(r#"{"paths": ["/video/a.mp4", "series/*"]}"#),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let inv = body_json(&r);
    assert_eq!(
        inv["paths"],
        serde_json::json!(["/video/a.mp4", "/video/series/*"])
    );
    let id = inv["jobs"][0]["id"].as_str().unwrap();
    let got = srv.admin(
        "GET",
        &format!("/admin/invalidations/{id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (got.status, body_json(&got)["id"].as_str()),
        (200, Some(id))
    );
    assert!(eventually(Duration::from_secs(10), || moto
        .invalidated_paths(&rt, &dist)
        .contains(&"/video/series/*".to_string())));
    // A job's cdn_ref is CloudFront's id, which can be looked up too.
    let cf_id = body_json(&srv.admin(
        "GET",
        &format!("/admin/invalidations/{id}"),
        Some(ADMIN),
        None,
    ))["cdn_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = srv.admin(
        "GET",
        &format!("/admin/invalidations/{cf_id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (got.status, body_json(&got)["id"].as_str()),
        (200, Some(cf_id.as_str()))
    );
    let list = body_json(&srv.admin("GET", "/admin/invalidations", Some(ADMIN), None));
    assert!(list["invalidations"].as_array().unwrap().len() >= 2);
    assert_eq!(
        srv.admin("GET", "/admin/invalidations/NOSUCHID123", Some(ADMIN), None)
            .status,
        404
    );
    for (body, why) in [
        (r#"{"paths": []}"#, "at least one"),
        (r#"{"paths": ["/a*b"]}"#, "last character"),
        (r#"{"path": ["/a"]}"#, "path"),
        (r#"{"paths": "/a"}"#, "invalid type"),
    ] {
        let r = srv.admin("POST", "/admin/invalidations", Some(ADMIN), Some(body));
        assert_eq!(r.status, 400, "{body}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(why),
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let too_many =
        serde_json::json!({"paths": (0..101).map(|i| format!("/v{i}")).collect::<Vec<_>>()})
            .to_string();
    assert_eq!(
        srv.admin("POST", "/admin/invalidations", Some(ADMIN), Some(&too_many))
            .status,
        400
    );

    // Delete removes and invalidates.
    let r = srv.admin("DELETE", "/admin/assets/series/e1.mp4", Some(ADMIN), None);
    assert_eq!(r.status, 200);
    assert_eq!(srv.get("/video/series/e1.mp4", &[]).status, 404);
    assert_eq!(
        srv.admin("DELETE", "/admin/assets/series/e1.mp4", Some(ADMIN), None)
            .status,
        404
    );

    // CDN calls by outcome in /metrics (replace, POST, delete all accepted; bursts coalesce).
    let metrics = scrape(&srv);
    let accepted = |m: &str| {
        metric(
            m,
            "video_origin_invalidation_sends_total{cdn=\"cloudfront\",outcome=\"accepted\"}",
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(Duration::from_secs(10), || accepted(&scrape(&srv)) >= 2.0),
        "{metrics}"
    );
    // The failure series exist from start (README Metrics) and stay at zero.
    assert_eq!(
        metric(
            &metrics,
            "video_origin_invalidation_sends_total{cdn=\"cloudfront\",outcome=\"failed\"}"
        ),
        Some(0.0)
    );
    assert!(log_has_states(&srv.log_text()));

    // Audit lines: who, what, outcome; never the token.
    let log = srv.log_text();
    assert!(
        log.contains("who=\"ops\"")
            && log.contains("action=\"replace\"")
            && log.contains("action=\"delete\""),
        "{log}"
    );
    assert!(!log.contains(ADMIN));
}

#[test]
fn failed_uploads_leave_the_old_file_and_no_temp_file() {
    let rt = rt();
    let moto = Moto::start();
    let dist = moto.create_distribution(&rt);
    let dir = assets(&[("a.mp4", b"original")]);
    let srv = start(dir.path(), &moto, &dist);
    // Aborted: the client promises 1000 bytes, sends 10 and hangs up.
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.admin_port.unwrap())).unwrap();
        let head = format!("PUT /admin/assets/a.mp4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 1000\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(b"0123456789").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        eventually(Duration::from_secs(5), || leftovers(dir.path()).is_empty()),
        "temp files left: {:?}",
        leftovers(dir.path())
    );
    assert_eq!(srv.get("/video/a.mp4", &[]).body, b"original");
    // Too large (limit 1 MiB in this test).
    let r = put(&srv, "a.mp4", &vec![b'x'; 1_100_000]);
    assert_eq!(r.status, 413);
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(srv.get("/video/a.mp4", &[]).body, b"original");
    // Path rules of the core apply.
    for bad in ["../escape.mp4", "%2e%2e/escape.mp4", ".hidden", "a%00b"] {
        let r = put(&srv, bad, b"x");
        assert_eq!(r.status, 400, "{bad}");
    }
    assert!(!dir.path().parent().unwrap().join("escape.mp4").exists());
    // Unauthenticated writes are refused.
    let head = "PUT /admin/assets/a.mp4 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n";
    assert_eq!(srv.admin_raw(head, b"bad").status, 401);
    assert_eq!(srv.get("/video/a.mp4", &[]).body, b"original");
}

/// `admin.max_concurrent_uploads` bounds uploads in progress (on the s3 backend each holds a
/// part in memory): one more is refused with 503 and `Retry-After`, naming the key, and the slot
/// comes back when the upload in progress ends, also when its client hangs up.
#[test]
fn uploads_beyond_the_concurrency_limit_are_refused_until_one_ends() {
    let dir = assets(&[("a.mp4", b"original")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
            ("VIDEO_ORIGIN_ADMIN__MAX_CONCURRENT_UPLOADS", "1"),
        ],
    );
    let mut held = std::net::TcpStream::connect(("127.0.0.1", srv.admin_port.unwrap())).unwrap();
    let head = format!("PUT /admin/assets/a.mp4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 1000\r\n\r\n");
    held.write_all(head.as_bytes()).unwrap();
    held.write_all(b"0123456789").unwrap();
    // The held upload has its slot once its temporary file exists.
    assert!(eventually(Duration::from_secs(5), || !leftovers(
        dir.path()
    )
    .is_empty()));
    let r = put(&srv, "b.mp4", b"second");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        String::from_utf8_lossy(&r.body).contains("admin.max_concurrent_uploads = 1"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(srv.get("/video/b.mp4", &[]).status, 404);
    drop(held);
    assert!(eventually(Duration::from_secs(5), || put(
        &srv, "b.mp4", b"second"
    )
    .status
        == 201));
    assert_eq!(srv.get("/video/b.mp4", &[]).body, b"second");
    assert_eq!(srv.get("/video/a.mp4", &[]).body, b"original");
}

/// The s3 backend's replace and delete go through the same outbox as the fs backend's: one
/// moto serves the bucket and the distribution; the journal lives in a folder of its own
/// (required with s3).
#[test]
fn s3_replace_and_delete_invalidate_cloudfront() {
    let rt = rt();
    let moto = Moto::start();
    let dist = moto.create_distribution(&rt);
    let bucket = common::s3::Bucket::new(&moto.endpoint);
    bucket.put("show/ep1.mp4", b"version one", true);
    let journal = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = bucket.env();
    for (k, v) in [
        ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
        ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
        ("VIDEO_ORIGIN_INVALIDATION__ENABLED", "true"),
        ("VIDEO_ORIGIN_INVALIDATION__DISTRIBUTION_ID", &dist),
        ("VIDEO_ORIGIN_INVALIDATION__ENDPOINT_URL", &moto.endpoint),
        ("VIDEO_ORIGIN_INVALIDATION__ACCESS_KEY_ID", "testing"),
        ("VIDEO_ORIGIN_INVALIDATION__SECRET_ACCESS_KEY", "testing"),
        ("VIDEO_ORIGIN_INVALIDATION__BATCH_WINDOW_MS", "50"),
        (
            "VIDEO_ORIGIN_INVALIDATION__JOURNAL_DIR",
            journal.path().to_str().unwrap(),
        ),
    ] {
        env.push((k.into(), v.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let srv = Server::start(empty.path(), &env);

    let r = put(&srv, "show/ep1.mp4", b"version two");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let jobs = &body_json(&r)["invalidation"]["jobs"];
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(bucket.get("show/ep1.mp4").unwrap(), b"version two");
    let r = srv.admin("DELETE", "/admin/assets/show/ep1.mp4", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(bucket.get("show/ep1.mp4"), None);
    assert!(
        eventually(Duration::from_secs(10), || {
            let paths = moto.invalidated_paths(&rt, &dist);
            paths.iter().filter(|p| *p == "/video/show/ep1.mp4").count() >= 1
        }),
        "moto has {:?}",
        moto.invalidated_paths(&rt, &dist)
    );
    assert_eq!(srv.get("/video/show/ep1.mp4", &[]).status, 404);
}

/// An audit line per state change of an invalidation.
fn log_has_states(log: &str) -> bool {
    ["queued", "sent", "completed"].iter().all(|state| {
        log.contains("action=\"invalidation\"") && log.contains(&format!("state=\"{state}\""))
    })
}

/// The state of job `id` as `GET /admin/invalidations/{id}` shows it.
fn job(srv: &Server, id: &str) -> serde_json::Value {
    invalidation_job(srv, ADMIN, id)
}

#[test]
fn a_refused_invalidation_is_marked_failed_and_disabled_makes_no_call() {
    let rt = rt();
    let moto = Moto::start();
    let _ = moto.create_distribution(&rt);
    let dir = assets(&[("a.mp4", b"original")]);
    // A distribution moto does not know: CloudFront answers NoSuchDistribution, which no retry
    // can fix, so the job is failed with the error (and tried again only after a restart).
    let srv = start(dir.path(), &moto, "EDOESNOTEXIST1");
    let r = put(&srv, "a.mp4", b"replaced anyway");
    assert_eq!(
        r.status,
        200,
        "durably queued: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v = body_json(&r);
    assert_eq!(v["size"], 15);
    let id = v["invalidation"]["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(srv.get("/video/a.mp4", &[]).body, b"replaced anyway");
    assert!(
        eventually(Duration::from_secs(10), || job(&srv, &id)["state"]
            == "failed"),
        "{}",
        job(&srv, &id)
    );
    let j = job(&srv, &id);
    assert!(
        j["last_error"]
            .as_str()
            .unwrap()
            .contains("NoSuchDistribution"),
        "{j}"
    );
    assert_eq!(j["attempts"], 1, "not retried");
    assert!(srv.log_text().contains("NoSuchDistribution"));
    let metrics = scrape(&srv);
    assert_eq!(
        metric(
            &metrics,
            "video_origin_invalidation_sends_total{cdn=\"cloudfront\",outcome=\"failed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    drop(srv);
    // Disabled: no AWS client, 409 on the invalidation routes, replace still works.
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(
        srv.admin(
            "POST",
            "/admin/invalidations",
            Some(ADMIN),
            Some(r#"{"paths":["/a"]}"#)
        )
        .status,
        409
    );
    let r = put(&srv, "a.mp4", b"third");
    assert_eq!(
        (r.status, body_json(&r)["invalidation"].is_null()),
        (200, true)
    );
    // Enabled without a distribution id fails config validation.
    let out = Command::new(BIN)
        .args(["check-config", "--assets"])
        .arg(dir.path())
        .env("VIDEO_ORIGIN_INVALIDATION__ENABLED", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalidation.distribution_id"));
}

fn start_behind(dir: &std::path::Path, gate: &Gate, dist: &str) -> Server {
    let endpoint = gate.endpoint();
    Server::start(
        dir,
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
            ("VIDEO_ORIGIN_INVALIDATION__ENABLED", "true"),
            ("VIDEO_ORIGIN_INVALIDATION__DISTRIBUTION_ID", dist),
            ("VIDEO_ORIGIN_INVALIDATION__ENDPOINT_URL", &endpoint),
            ("VIDEO_ORIGIN_INVALIDATION__ACCESS_KEY_ID", "testing"),
            ("VIDEO_ORIGIN_INVALIDATION__SECRET_ACCESS_KEY", "testing"),
            ("VIDEO_ORIGIN_INVALIDATION__MAX_ATTEMPTS", "1"),
            ("VIDEO_ORIGIN_INVALIDATION__MAX_BACKOFF_SECS", "1"),
            ("VIDEO_ORIGIN_INVALIDATION__BATCH_WINDOW_MS", "50"),
        ],
    )
}

/// moto with a distribution, behind a gate that does not listen yet (CloudFront unreachable),
/// and a library with `a.mp4`.
fn behind_a_closed_gate() -> (
    tokio::runtime::Runtime,
    Moto,
    String,
    Gate,
    tempfile::TempDir,
) {
    let rt = rt();
    let moto = Moto::start();
    let dist = moto.create_distribution(&rt);
    let gate = Gate::start(moto.port, false);
    (rt, moto, dist, gate, assets(&[("a.mp4", b"x")]))
}

#[test]
fn an_unreachable_cdn_keeps_the_invalidation_queued_until_it_is_back() {
    // CloudFront (moto) unreachable: the gate in front of it does not listen, so connections
    // are refused as with moto stopped (moto keeps the distribution meanwhile).
    let (rt, moto, dist, gate, dir) = behind_a_closed_gate();
    let srv = start_behind(dir.path(), &gate, &dist);
    let r = put(&srv, "a.mp4", b"new");
    assert_eq!(
        r.status,
        200,
        "the admin call returns: {}",
        String::from_utf8_lossy(&r.body)
    );
    let id = body_json(&r)["invalidation"]["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        eventually(Duration::from_secs(15), || {
            let j = job(&srv, &id);
            j["state"] == "queued" && j["attempts"].as_u64().unwrap_or(0) >= 2
        }),
        "retried while unreachable: {}",
        job(&srv, &id)
    );
    assert!(job(&srv, &id)["last_error"]
        .as_str()
        .unwrap()
        .contains("DispatchFailure"));
    let metrics = scrape(&srv);
    assert_eq!(
        metric(
            &metrics,
            "video_origin_invalidation_queue_depth{cdn=\"cloudfront\"}"
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "video_origin_invalidation_oldest_queued_seconds{cdn=\"cloudfront\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(
        metric(
            &metrics,
            "video_origin_invalidation_sends_total{cdn=\"cloudfront\",outcome=\"retry\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(srv.log_text().contains("retrying"));
    // Back: the next attempt goes through.
    gate.set_open(true);
    assert!(
        eventually(Duration::from_secs(15), || job(&srv, &id)["state"]
            == "completed"),
        "{}",
        job(&srv, &id)
    );
    assert_eq!(
        moto.invalidated_paths(&rt, &dist),
        vec!["/video/a.mp4".to_string()]
    );
    let metrics = scrape(&srv);
    assert_eq!(
        metric(
            &metrics,
            "video_origin_invalidation_queue_depth{cdn=\"cloudfront\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn a_crash_before_the_send_loses_nothing_and_a_torn_journal_still_starts() {
    let (rt, moto, dist, gate, dir) = behind_a_closed_gate();
    let srv = start_behind(dir.path(), &gate, &dist);
    let r = put(&srv, "a.mp4", b"new bytes");
    assert_eq!(r.status, 200);
    // kill -9 between the replace and the send (CloudFront unreachable until now).
    unsafe_kill(srv.pid(), "9");
    drop(srv);
    assert!(moto.invalidated_paths(&rt, &dist).is_empty());
    gate.set_open(true);
    let srv = start_behind(dir.path(), &gate, &dist);
    assert!(
        eventually(Duration::from_secs(15), || !moto
            .invalidated_paths(&rt, &dist)
            .is_empty()),
        "replayed after the restart"
    );
    // Sent exactly once, also after more time and another restart.
    std::thread::sleep(Duration::from_secs(2));
    drop(srv);
    let srv = start_behind(dir.path(), &gate, &dist);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        moto.invalidated_paths(&rt, &dist),
        vec!["/video/a.mp4".to_string()]
    );
    drop(srv);

    // The journal of another replica that died (its lock is free), with its last record cut
    // short by the crash: start succeeds, says so, takes it over and sends the complete
    // records, and removes the file.
    use video_origin::cdn::journal::{encode, Record};
    let queued = |job: &str, path: &str| Record::Queued {
        job: job.into(),
        cdn: video_origin::config::CdnKind::Cloudfront,
        paths: vec![path.into()],
        at: 1,
    };
    let mut journal = encode(&queued("j1", "/video/one.mp4"));
    journal.extend(encode(&queued("j2", "/video/two.mp4")));
    let torn = encode(&queued("j3", "/video/three.mp4"));
    journal.extend_from_slice(&torn[..torn.len() - 9]);
    let orphan = dir
        .path()
        .join(".video-origin-invalidations-crashed-replica.journal");
    std::fs::write(&orphan, &journal).unwrap();
    let srv = start_behind(dir.path(), &gate, &dist);
    assert!(
        eventually(Duration::from_secs(15), || {
            let paths = moto.invalidated_paths(&rt, &dist);
            paths.contains(&"/video/one.mp4".to_string())
                && paths.contains(&"/video/two.mp4".to_string())
        }),
        "{:?}",
        moto.invalidated_paths(&rt, &dist)
    );
    assert!(!moto
        .invalidated_paths(&rt, &dist)
        .contains(&"/video/three.mp4".to_string()));
    assert!(
        srv.log_text().contains("dropped an unfinished last record"),
        "{}",
        srv.log_text()
    );
    assert!(srv.log_text().contains("taken over"));
    assert!(!orphan.exists(), "the taken-over journal is removed");
}

#[test]
fn cache_eviction_and_stats() {
    let dir = assets(&[("a.mp4", b"one"), ("b.mp4", b"two")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    );
    srv.get("/video/a.mp4", &[]);
    srv.get("/video/a.mp4", &[]);
    srv.get("/video/b.mp4", &[]);
    let s = body_json(&srv.admin("GET", "/admin/cache/stats", Some(ADMIN), None));
    assert!(
        s["hits"].as_u64().unwrap() >= 1 && s["misses"].as_u64().unwrap() >= 2,
        "{s}"
    );
    assert!(s["entries"].as_u64().is_some());
    let r = srv.admin(
        "POST",
        "/admin/cache/evict",
        Some(ADMIN),
        Some(r#"{"paths": ["/a.mp4", "b.mp4"]}"#),
    );
    assert_eq!(
        body_json(&r)["evicted"],
        serde_json::json!(["a.mp4", "b.mp4"])
    );
    assert_eq!(
        srv.admin(
            "POST",
            "/admin/cache/evict",
            Some(ADMIN),
            Some(r#"{"paths": ["../x"]}"#)
        )
        .status,
        400
    );
    assert_eq!(
        srv.admin("GET", "/admin/cache/stats", None, None).status,
        401
    );
}

#[test]
fn concurrent_replace_and_range_reads_never_mix_versions() {
    let len = 2 * 1024 * 1024;
    let a: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..len).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    let dir = assets(&[("v.mp4", &a)]);
    let srv = Arc::new(Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0"),
            ("VIDEO_ORIGIN_ADMIN__MAX_UPLOAD_BYTES", "4194304"),
        ],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (Arc::new(a), Arc::new(b));
    let readers: Vec<_> = (0..3)
        .map(|k| {
            let (srv, stop, a, b) = (srv.clone(), stop.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut checked = 0;
                let mut i = k * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 31 + 17) % (len - 70_000);
                    let r = srv.get(
                        "/video/v.mp4",
                        &[("Range", &format!("bytes={i}-{}", i + 65_535))],
                    );
                    assert_eq!(r.status, 206);
                    assert_eq!(r.body.len(), 65_536, "complete body");
                    let want_a = &a[i..i + 65_536];
                    let want_b = &b[i..i + 65_536];
                    assert!(
                        r.body == want_a || r.body == want_b,
                        "bytes of two versions mixed at {i}"
                    );
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    for round in 0..8 {
        let data = if round % 2 == 0 { &b } else { &a };
        let r = put(&srv, "v.mp4?invalidate=false", data);
        assert_eq!(r.status, 200);
    }
    stop.store(true, Ordering::Relaxed);
    let total: usize = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 20, "readers ran ({total} checks)");
    assert!(leftovers(dir.path()).is_empty());
}
