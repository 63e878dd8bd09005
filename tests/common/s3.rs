//! The s3 backend in tests: moto's S3 on loopback (spec aws-emulator.md, "S3 on the same moto
//! server"), buckets filled through the real aws-sdk-s3 client, and the switch that runs a
//! whole test file against a bucket instead of a folder.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

/// Test files whose binary name starts with this run their servers on the s3 backend: the
/// range and conditional suites are compiled a second time that way (tests/s3_suites.rs).
pub fn s3_mode() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n.starts_with("s3_suites"))
}

/// A moto server on a free loopback port; stopped when dropped, and when the test process
/// ends without dropping it (the shared one is a `static`, never dropped).
pub struct Moto {
    /// A shell that started moto and waits for its stdin (a pipe from this process) to close,
    /// then stops moto: the kernel closes the pipe however this process ends. Stopping moto
    /// from a `Drop` alone left the shared servers running after every test run, and
    /// `PR_SET_PDEATHSIG` fires when the spawning thread ends, not the process.
    keeper: Child,
    pub endpoint: String,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.keeper.stdin.take());
        let _ = self.keeper.wait();
    }
}

impl Moto {
    pub fn start() -> Moto {
        let bin = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/moto-venv/bin/moto_server"
        );
        assert!(
            Path::new(bin).exists(),
            "moto is not installed: run `bash tests/run-all.sh`, which installs it"
        );
        // The shell gives up its own stderr once moto runs, so that moto dying early still
        // ends the reads below.
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#""$0" -H 127.0.0.1 -p 0 & moto=$!
                exec 2>/dev/null
                cat >/dev/null
                kill "$moto"
                wait "$moto""#,
                bin,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let port: u16 = loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "moto exited before listening"
            );
            if let Some(i) = line.find("Running on http://127.0.0.1:") {
                let port: String = line[i + "Running on http://127.0.0.1:".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                break port.parse().unwrap();
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        Moto {
            keeper: child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// One moto for the whole test process (suites start many servers).
    pub fn shared() -> &'static Moto {
        static MOTO: OnceLock<Moto> = OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A fresh bucket of its own on a moto server.
pub struct Bucket {
    pub name: String,
    pub endpoint: String,
    pub prefix: String,
}

impl Bucket {
    pub fn new(endpoint: &str) -> Bucket {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vo-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let c = client(endpoint);
        runtime()
            .block_on(c.create_bucket().bucket(&name).send())
            .expect("create bucket");
        Bucket {
            name,
            endpoint: endpoint.to_owned(),
            prefix: "lib/".into(),
        }
    }

    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// Puts `bytes` at `rel`, with the `sha256` metadata an upload through the admin API (or
    /// `index`) gives it when `with_digest`.
    pub fn put(&self, rel: &str, bytes: &[u8], with_digest: bool) {
        use sha2::Digest;
        let c = client(&self.endpoint);
        let mut req = c
            .put_object()
            .bucket(&self.name)
            .key(self.key(rel))
            .body(ByteStream::from(bytes.to_vec()));
        if with_digest {
            req = req.metadata("sha256", hex::encode(sha2::Sha256::digest(bytes)));
        }
        runtime().block_on(req.send()).expect("put object");
    }

    pub fn get(&self, rel: &str) -> Option<Vec<u8>> {
        let c = client(&self.endpoint);
        runtime().block_on(async {
            let got = c
                .get_object()
                .bucket(&self.name)
                .key(self.key(rel))
                .send()
                .await
                .ok()?;
            Some(got.body.collect().await.ok()?.into_bytes().to_vec())
        })
    }

    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let c = client(&self.endpoint);
        runtime().block_on(async {
            let got = c.list_objects_v2().bucket(&self.name).send().await.unwrap();
            got.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect()
        })
    }

    /// Keys of upload staging objects (none may be left once an upload has ended).
    pub fn staging_keys(&self) -> Vec<String> {
        let mut keys = self.keys();
        keys.retain(|k| k.contains(".video-origin-uploads"));
        keys
    }

    /// Open multipart uploads (none may be left by a failed upload).
    pub fn open_uploads(&self) -> usize {
        let c = client(&self.endpoint);
        runtime().block_on(async {
            c.list_multipart_uploads()
                .bucket(&self.name)
                .send()
                .await
                .map(|o| o.uploads().len())
                .unwrap_or(0)
        })
    }

    /// Every file under `dir` (dotfiles too: the server must still refuse them).
    pub fn upload_dir(&self, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.is_file() {
                    let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                    self.put(&rel, &std::fs::read(&p).unwrap(), true);
                }
            }
        }
    }

    /// The server environment that serves this bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("VIDEO_ORIGIN_STORAGE__BACKEND".into(), "s3".into()),
            ("VIDEO_ORIGIN_STORAGE__S3__BUCKET".into(), self.name.clone()),
            (
                "VIDEO_ORIGIN_STORAGE__S3__PREFIX".into(),
                self.prefix.clone(),
            ),
            (
                "VIDEO_ORIGIN_STORAGE__S3__ENDPOINT_URL".into(),
                self.endpoint.clone(),
            ),
            (
                "VIDEO_ORIGIN_STORAGE__S3__FORCE_PATH_STYLE".into(),
                "true".into(),
            ),
            (
                "VIDEO_ORIGIN_STORAGE__S3__ACCESS_KEY_ID".into(),
                "test".into(),
            ),
            (
                "VIDEO_ORIGIN_STORAGE__S3__SECRET_ACCESS_KEY".into(),
                "test-secret-never-logged".into(),
            ),
        ]
    }
}
