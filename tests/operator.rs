//! Issue #18 (operator experience), the points done so far: every documented metric family is
//! present from start, readiness changes are logged once each, nearing the descriptor limit is
//! warned (rate-limited, counted), a second server on a served port refuses to start, access-log
//! durations have fixed precision, admin JSON errors name the field, signing-key errors name
//! what is missing and where it came from, listen-address and asset-root errors name the value,
//! its source and the expected form, and `explain` words a refused path plainly.
//! (A client leaving mid-body is in streaming.rs.)

mod common;
use common::*;
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789abcdef0123456789";

/// The metric names of the README's *Metrics* table, with their label values where listed.
fn documented_metrics() -> Vec<(String, Vec<String>)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    for line in readme.lines().filter(|l| l.starts_with("| `video_origin_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let values: Vec<String> = cells[3]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        for name in cells[1].split('`').skip(1).step_by(2) {
            let labelled = name.contains('{');
            let bare = name.split('{').next().unwrap().to_string();
            out.push((bare, if labelled { values.clone() } else { vec![] }));
        }
    }
    assert!(out.len() >= 20, "the table was read: {out:?}");
    out
}

#[test]
fn every_documented_metric_is_there_from_start() {
    let dir = assets(&[("a.mp4", b"x")]);
    // Invalidation on (its series exist only then); nothing is queued, so nothing is sent.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_INVALIDATION__ENABLED", "true"),
            (
                "VIDEO_ORIGIN_INVALIDATION__DISTRIBUTION_ID",
                "E1234567890ABC",
            ),
            ("VIDEO_ORIGIN_INVALIDATION__ENDPOINT_URL", &nowhere),
            ("VIDEO_ORIGIN_INVALIDATION__ACCESS_KEY_ID", "testing"),
            ("VIDEO_ORIGIN_INVALIDATION__SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let text = scrape(&srv);
    for (name, values) in documented_metrics() {
        assert!(
            text.lines().any(|l| l.starts_with(&name)),
            "`{name}` missing from a fresh /metrics:\n{text}"
        );
        for v in values {
            // Route names are label values of other metrics; only reason/result/outcome rows.
            if name.ends_with("requests_total") || name.ends_with("response_bytes_total") {
                continue;
            }
            let series = text
                .lines()
                .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("=\"{v}\"")));
            assert!(
                series.is_some_and(|l| l.ends_with(" 0")),
                "`{name}` has no zero sample for `{v}`:\n{text}"
            );
        }
    }
}

#[test]
fn durations_have_fixed_precision() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(dir.path(), &[("VIDEO_ORIGIN_LOG__FORMAT", "json")]);
    for _ in 0..20 {
        srv.get("/video/a.mp4", &[]);
    }
    assert!(eventually(Duration::from_secs(5), || srv
        .log_text()
        .matches("\"target\":\"access\"")
        .count()
        >= 20));
    for line in srv
        .log_text()
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ms = v["duration_ms"].to_string();
        let decimals = ms.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 3, "{ms} in {line}");
    }
}

#[test]
fn admin_json_errors_name_the_field() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(
        dir.path(),
        &[
            ("VIDEO_ORIGIN_ADMIN__TOKENS__OPS", ADMIN),
            ("VIDEO_ORIGIN_SIGNING__KEYS__K1", TEST_KEY),
        ],
    );
    for (route, body, field) in [
        ("/admin/cache/evict", r#"{"paths":"x"}"#, "paths"),
        (
            "/admin/sign",
            r#"{"path":"a.mp4","ttl_secs":"soon"}"#,
            "ttl_secs",
        ),
        ("/admin/cache/evict", r#"{"paths":["a",3]}"#, "paths[1]"),
    ] {
        let r = srv.admin("POST", route, Some(ADMIN), Some(body));
        assert_eq!(r.status, 400);
        let msg: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let msg = msg["error"].as_str().unwrap().to_string();
        assert!(msg.contains(&format!("{field}: ")), "{msg}");
    }
}

#[test]
fn explain_words_a_refused_path_plainly() {
    let (ok, _, err) = run_cli(&["explain", "/video/../etc/passwd"], &[]);
    assert!(!ok);
    assert!(
        err.contains("is not a servable path: dot segment in path"),
        "{err}"
    );
    assert!(!err.contains("BadRequest"), "{err}");
}

#[test]
fn readiness_changes_are_logged_once_each() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("library");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.mp4"), b"x").unwrap();
    let srv = Server::start(&root, &[("VIDEO_ORIGIN_SERVER__DRAIN_SECS", "2")]);
    let lines = |needle: &str| {
        srv.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(srv.get("/readyz", &[]).status, 200);
    assert!(lines("readiness:").is_empty(), "a ready start is no change");
    // The asset root goes away (an unmounted volume): noticed without any probe, logged once
    // with the reason, however often it is probed.
    std::fs::rename(&root, parent.path().join("gone")).unwrap();
    assert!(eventually(Duration::from_secs(5), || !lines(
        "readiness: not ready"
    )
    .is_empty()));
    for _ in 0..3 {
        assert_eq!(srv.get("/readyz", &[]).status, 503);
    }
    let down = lines("readiness: not ready");
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].contains("asset root unreadable"), "{}", down[0]);
    // Back: one line again.
    std::fs::rename(parent.path().join("gone"), &root).unwrap();
    assert!(eventually(Duration::from_secs(5), || lines(
        "readiness: ready again"
    )
    .len()
        == 1));
    assert_eq!(srv.get("/readyz", &[]).status, 200);
    // Draining on SIGTERM is a change too.
    srv.sigterm();
    assert!(eventually(Duration::from_secs(5), || lines(
        "reason=\"draining\""
    )
    .len()
        == 1));
    assert_eq!(lines("readiness: ready again").len(), 1);
}

#[test]
fn nearing_the_descriptor_limit_is_warned_at_most_once_a_minute() {
    use std::io::{BufRead, Read, Write};
    let dir = assets(&[("a.mp4", b"x")]);
    let workdir = tempfile::tempdir().unwrap();
    let log = workdir.path().join("log");
    // 256 descriptors, a warning past 10 % of them (26).
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" serve --listen 127.0.0.1:0 --assets \"$1\"")
        .arg(BIN)
        .arg(dir.path())
        .current_dir(workdir.path())
        .env("VIDEO_ORIGIN_LOG__BUFFER_BYTES", "0")
        .env("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0")
        .env("VIDEO_ORIGIN_LIMITS__FD_WARN_PERCENT", "10")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ports = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        ports.push(
            line.trim()
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap(),
        );
    }
    let (admin, public) = (ports[0], ports[1]);
    let held: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", public)).unwrap())
        .collect();
    let warnings = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("file descriptors:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(5), || !warnings().is_empty()));
    std::thread::sleep(Duration::from_millis(2500));
    let seen = warnings();
    assert_eq!(seen.len(), 1, "rate-limited: {seen:?}");
    assert!(seen[0].contains("of 256 in use"), "{}", seen[0]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(metric(&text, "video_origin_fd_warnings_total"), Some(1.0));
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_second_server_on_a_served_port_refuses_to_start_unless_told_to_share() {
    use std::io::BufRead;
    let dir = assets(&[("a.mp4", b"x")]);
    let first = Server::start(dir.path(), &[]);
    let listen = format!("127.0.0.1:{}", first.port);
    let args = [
        "serve",
        "--listen",
        &listen,
        "--assets",
        dir.path().to_str().unwrap(),
    ];
    let env = [("VIDEO_ORIGIN_ADMIN__LISTEN", "127.0.0.1:0")];
    let (ok, _, err) = run_cli(&args, &env);
    assert!(!ok, "a second server must not start silently");
    assert!(
        err.contains(&listen) && err.contains("server.share_port"),
        "{err}"
    );
    // Opted in: it starts (and the kernel spreads connections over both).
    let mut second = std::process::Command::new(BIN)
        .args(args)
        .envs(env)
        .env("VIDEO_ORIGIN_SERVER__SHARE_PORT", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(second.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.starts_with("listening on ") {
        line.clear();
    }
    let _ = second.kill();
    let _ = second.wait();
    assert!(line.contains(&listen), "{line:?}");
    // The first still serves.
    assert_eq!(first.get("/healthz", &[]).status, 200);
}

#[test]
fn signing_key_errors_name_what_is_missing_and_where_it_came_from() {
    let dir = assets(&[("a.mp4", b"x")]);
    let root = dir.path().to_str().unwrap();
    let key = "hex:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let sign = |env: &[(&str, &str)]| {
        let (ok, _, err) = run_cli(&["sign", "/video/a.mp4", "--assets", root], env);
        assert!(!ok, "{err}");
        assert!(
            !err.contains("0123456789abcdef"),
            "no secret in errors: {err}"
        );
        err
    };
    // No keys at all: the missing thing is signing.keys, with the variable to set.
    let err = sign(&[]);
    assert!(
        err.contains("signing.keys is empty") && err.contains("VIDEO_ORIGIN_SIGNING__KEYS__<ID>"),
        "{err}"
    );
    // An upper-case signing_key against an environment key (ids from the environment are
    // lower-cased): blamed on the variable that set signing_key, listing the ids there are.
    let err = sign(&[
        ("VIDEO_ORIGIN_SIGNING__KEYS__K2026A", key),
        ("VIDEO_ORIGIN_SIGNING__SIGNING_KEY", "K2026A"),
    ]);
    assert!(
        err.contains("environment variable VIDEO_ORIGIN_SIGNING__SIGNING_KEY")
            && err.contains("(k2026a)")
            && err.contains("lower-cased"),
        "{err}"
    );
    // Two keys from the environment and no signing_key: blamed on where the keys came from.
    let err = sign(&[
        ("VIDEO_ORIGIN_SIGNING__KEYS__A", key),
        ("VIDEO_ORIGIN_SIGNING__KEYS__B", key),
    ]);
    assert!(
        err.contains("environment variable VIDEO_ORIGIN_SIGNING__KEYS")
            && !err.contains("embedded defaults")
            && err.contains("(a, b)")
            && err.contains("signing.signing_key"),
        "{err}"
    );
}

#[test]
fn address_and_root_errors_name_the_value_the_source_and_the_form() {
    let dir = assets(&[("a.mp4", b"x")]);
    let root = dir.path().to_str().unwrap();
    let (ok, _, err) = run_cli(&["serve", "--listen", "18841", "--assets", root], &[]);
    assert!(!ok && err.contains("`18841` is not IP:PORT"), "{err}");
    let (ok, _, err) = run_cli(
        &["check-config", "--assets", root],
        &[("VIDEO_ORIGIN_SERVER__LISTEN", "localhost:8080")],
    );
    assert!(
        !ok && err.contains("environment variable VIDEO_ORIGIN_SERVER__LISTEN")
            && err.contains("`localhost:8080` is not IP:PORT"),
        "{err}"
    );
    // A missing root: the same words from serve, check-config and index, with where the value
    // came from and what a relative path was taken from.
    for command in ["serve", "check-config", "index"] {
        let (ok, _, err) = run_cli(&[command, "--assets", "no-such-library"], &[]);
        assert!(!ok, "{command}");
        assert!(
            err.contains("command line: --assets: key `assets.root`: cannot use no-such-library")
                && err.contains("taken from the working directory"),
            "{command}: {err}"
        );
    }
    let (_, _, err) = run_cli(&["check-config"], &[]);
    assert!(
        err.contains("embedded defaults: key `assets.root`"),
        "{err}"
    );
}
