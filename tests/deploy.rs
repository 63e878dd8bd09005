//! The deployment templates in deploy/ are checked with the tools their platforms use
//! (installed by tests/run-all.sh into target/deploy-venv and from Debian), and the
//! configuration they ship is loaded by the real binary.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let p = root().join("target/deploy-venv/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: run tests/run-all.sh, which installs it",
        p.display()
    );
    p
}

/// Runs a checker; fails the test with its output unless it exits 0.
fn check(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn cloudformation_template_passes_cfn_lint() {
    check(Command::new(tool("cfn-lint")).arg(root().join("deploy/cloudfront/video-origin.yaml")));
    // The stand-alone IAM policy grants the three invalidation actions and nothing else.
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/cloudfront/invalidation-policy.json"))
            .unwrap(),
    )
    .unwrap();
    let actions: Vec<&str> = policy["Statement"][0]["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "cloudfront:CreateInvalidation",
            "cloudfront:GetInvalidation",
            "cloudfront:ListInvalidations"
        ]
    );
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1);
}

/// The Secret's variables, set as the Deployment sets them.
const POD_SECRETS: [(&str, &str); 3] = [
    ("VIDEO_ORIGIN_SIGNING__KEYS__K2026A", TEST_KEY),
    (
        "VIDEO_ORIGIN_ADMIN__TOKENS__OPS",
        "admin-token-0123456789abcdef0123456789",
    ),
    (
        "VIDEO_ORIGIN_ORIGIN_PROTECTION__VALUES",
        "[\"cdn-secret-0123456789abcdef\"]",
    ),
];

/// The YAML files of `dir`, after kubernetes-validate passed them (strict, Kubernetes 1.37).
fn validate_manifests(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let out = check(
        Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", "1.37.0"])
            .args(&files),
    );
    assert!(!out.contains("ERROR"), "{out}");
    files
}

/// The `origin.toml` inside a ConfigMap manifest, written to `into`; its path.
fn configmap_toml(manifest: &std::path::Path, into: &std::path::Path) -> PathBuf {
    let cm = std::fs::read_to_string(manifest).unwrap();
    let start = cm.find("origin.toml: |\n").unwrap() + "origin.toml: |\n".len();
    let toml: String = cm[start..]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let file = into.join("origin.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let files = validate_manifests(&root().join("deploy/kubernetes"));
    assert!(files.len() >= 7, "{files:?}");
}

#[test]
fn kubernetes_configmap_config_is_accepted_by_the_binary() {
    // The origin.toml inside the ConfigMap, with the Secret's variables set as the Deployment
    // sets them.
    let dir = tempfile::tempdir().unwrap();
    let file = configmap_toml(&root().join("deploy/kubernetes/configmap.yaml"), dir.path());
    let assets = assets(&[("a.mp4", b"x")]);
    check(
        Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&file)
            .arg("--assets")
            .arg(assets.path())
            .envs(POD_SECRETS),
    );
}

#[test]
fn kubernetes_s3_variant_validates_and_its_config_loads() {
    // deploy/kubernetes/s3: the volume-less Deployment for the s3 backend (IRSA identity).
    let dir = root().join("deploy/kubernetes/s3");
    let files = validate_manifests(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    let deployment = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    assert!(!deployment.contains("persistentVolumeClaim"));
    for json in ["iam-policy.json", "lifecycle.json"] {
        let text = std::fs::read_to_string(dir.join(json)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = configmap_toml(&dir.join("configmap.yaml"), tmp.path());
    let out = check(
        Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&file)
            .envs(POD_SECRETS),
    );
    assert!(out.contains("backend = \"s3\""), "{out}");
}

#[test]
fn dockerfile_passes_hadolint() {
    check(Command::new(tool("hadolint")).arg(root().join("deploy/Dockerfile")));
}

#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(root().join("deploy/systemd/video-origin.service"))
        .unwrap()
        .replace("/usr/local/bin/video-origin", BIN);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video-origin.service");
    std::fs::write(&path, unit).unwrap();
    let out = check(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(!out.contains("Unknown"), "{out}");
    let out = check(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&path),
    );
    let level: f64 = out
        .lines()
        .find_map(|l| l.split("video-origin.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(
        level <= 2.0,
        "exposure {level} (systemd scale 0-10, lower is better)"
    );
}

#[test]
fn probe_subcommand_is_the_container_health_check() {
    let dir = assets(&[("a.mp4", b"x")]);
    let srv = Server::start(dir.path(), &[]);
    let probe = |path: &str| {
        Command::new(BIN)
            .args(["probe", "--url"])
            .arg(format!("http://127.0.0.1:{}{path}", srv.port))
            .status()
            .unwrap()
            .success()
    };
    assert!(probe("/healthz"));
    assert!(!probe("/missing"));
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    // The image's health check follows its configuration (listener, TLS): tests/tls.rs.
    assert!(dockerfile.contains("\"probe\", \"--config\", \"/etc/video-origin/origin.toml\""));
}
