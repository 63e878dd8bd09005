//! Command line: parse, load config, hand over to the library. anyhow lives only here.

mod allocator;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use video_origin::config::{self, LogFormat, Overrides, Settings};
use video_origin::App;

#[derive(Parser)]
#[command(name = "video-origin", version, about = "CDN origin server for video")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Public listen address (overrides server.listen).
        #[arg(long, value_name = "ADDR:PORT", value_parser = video_origin::config::parse_listen)]
        listen: Option<SocketAddr>,
    },
    /// Precompute content digests (ETags) for every file into the index file; a running
    /// server picks it up within seconds.
    Index {
        #[command(flatten)]
        common: Common,
        /// Print each file with its size and digest.
        #[arg(long)]
        verbose: bool,
    },
    /// Mint a signed playback link and print the full URL.
    Sign {
        #[command(flatten)]
        common: Common,
        /// Asset path (`private/movie42/master.m3u8`) or URL path (`/video/...`).
        path: String,
        /// Lifetime: seconds, or with a unit (90s, 15m, 1h, 2d). Default: signing.default_ttl_secs.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Grant the whole directory of PATH (an HLS/DASH ladder), not just PATH.
        #[arg(long)]
        prefix: bool,
        /// Bind the link to this client address.
        #[arg(long, value_name = "ADDR")]
        ip: Option<std::net::IpAddr>,
        /// Token format: native, cloudflare, akamai or cloudfront.
        #[arg(long, default_value = "native", value_parser = parse_format)]
        format: video_origin::signing::links::LinkFormat,
        /// Mint cookies for PATH's directory instead of a token in the URL (native or
        /// cloudfront): prints one `Set-Cookie:` line each, then the plain URL.
        #[arg(long)]
        cookie: bool,
        /// With --cookie: the cookies' Domain attribute (default: host-only).
        #[arg(long, value_name = "HOST", requires = "cookie")]
        cookie_domain: Option<String>,
        /// With --cookie: SameSite (Strict, Lax or None; None for a player on another site).
        #[arg(long, default_value = "Lax", value_parser = parse_same_site, requires = "cookie")]
        same_site: video_origin::signing::links::SameSite,
        /// Print JSON {url, expires_at[, set_cookie]} instead of the bare URL.
        #[arg(long)]
        json: bool,
    },
    /// Show which cache rule matches a path and the exact headers it would emit.
    Explain {
        #[command(flatten)]
        common: Common,
        /// Asset path (`series/e1.mp4`) or URL path (`/video/series/e1.mp4`).
        path: String,
    },
    /// Exit 0 if the server answers 200: a health check for images without curl or a shell.
    /// Without --url it follows the configuration: /healthz of the public listener on
    /// loopback, over TLS (trusting exactly tls.cert_file) when tls.enabled.
    Probe {
        #[command(flatten)]
        common: Common,
        /// An http:// or https:// URL on this host instead (https trusts tls.cert_file).
        #[arg(long)]
        url: Option<String>,
        /// Give up (exit 1) when no answer has arrived after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Validate the configuration and print the effective settings (secrets redacted).
    CheckConfig {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// Config file (default: config/origin.toml if present, else the embedded defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Asset directory (overrides assets.root).
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
}

fn load(common: &Common, listen: Option<SocketAddr>) -> anyhow::Result<Settings> {
    let overrides = Overrides {
        config_file: common.config.clone(),
        listen,
        assets: common.assets.clone(),
    };
    Ok(config::load(&overrides)?)
}

/// Logs go to stderr. Worker threads buffer their lines (see `logbuf`); other threads write
/// each line straight through.
fn init_logging(settings: &Settings) {
    use std::io::IsTerminal;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(video_origin::observe::logbuf::ThreadBufferedStderr);
    match settings.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    // Access lines in the same format, without the formatter's per-field cost.
    video_origin::observe::access_log::write_directly(settings.log.format);
}

fn main() -> std::process::ExitCode {
    no_huge_pages();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("video-origin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { common } => {
            let settings = load(&common, None)?;
            let app = App::new(Arc::new(settings.clone()))?;
            // Comments first, so the whole output stays valid TOML.
            println!("# sources (later wins):");
            for layer in &settings.provenance.layers {
                println!("#   {layer}");
            }
            println!("# warnings:");
            if app.warnings.is_empty() {
                println!("#   none");
            }
            for w in &app.warnings {
                println!("#   {w}");
            }
            for line in settings.rule_listing() {
                println!("# {line}");
            }
            println!();
            print!("{}", toml::to_string_pretty(&settings.redacted())?);
            Ok(())
        }
        Command::Sign {
            common,
            path,
            ttl,
            prefix,
            ip,
            format,
            cookie,
            cookie_domain,
            same_site,
            json,
        } => {
            let settings = Arc::new(load(&common, None)?);
            let app = App::new(Arc::clone(&settings))?;
            if let Some(warning) = app.unprotected_warning(&path) {
                eprintln!("video-origin: warning: {warning}");
            }
            let request = video_origin::signing::links::LinkRequest {
                path,
                ttl_secs: ttl.unwrap_or(settings.signing.default_ttl_secs),
                prefix,
                ip,
                format,
                cookie: cookie.then_some(video_origin::signing::links::CookieOptions {
                    domain: cookie_domain,
                    same_site,
                }),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let link = app
                .minter
                .mint(&request, now)
                .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
            if json {
                println!("{}", serde_json::to_string(&link)?);
            } else {
                for value in &link.set_cookie {
                    println!("Set-Cookie: {value}");
                }
                println!("{}", link.url);
            }
            Ok(())
        }
        Command::Probe {
            common,
            url,
            timeout_secs,
        } => {
            let timeout = Duration::from_secs(timeout_secs);
            // The configuration matters only for its listener and certificate.
            let settings = load(&common, None);
            let url = match url {
                Some(u) => u,
                None => {
                    let s = settings
                        .as_ref()
                        .map_err(|e| anyhow::anyhow!("probe: {e}"))?;
                    let listen = s.server.listen;
                    let host = if listen.ip().is_unspecified() {
                        match listen.ip() {
                            std::net::IpAddr::V4(_) => "127.0.0.1".to_string(),
                            std::net::IpAddr::V6(_) => "[::1]".to_string(),
                        }
                    } else {
                        match listen.ip() {
                            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                            v4 => v4.to_string(),
                        }
                    };
                    let scheme = if s.tls.enabled { "https" } else { "http" };
                    format!("{scheme}://{host}:{}/healthz", listen.port())
                }
            };
            let pinned = if url.starts_with("https://") {
                let s = settings
                    .as_ref()
                    .map_err(|e| anyhow::anyhow!("probe: {e}"))?;
                if s.tls.cert_file.as_os_str().is_empty() {
                    anyhow::bail!(
                        "probe: an https:// URL needs tls.cert_file (the certificate to trust)"
                    );
                }
                Some(
                    video_origin::server::tls::pinned_client_config(&s.tls.cert_file)
                        .map_err(|e| anyhow::anyhow!("probe: tls.cert_file: {e}"))?,
                )
            } else {
                None
            };
            probe(&url, pinned, timeout)
        }
        Command::Explain { common, path } => {
            let settings = load(&common, None)?;
            print!("{}", explain(&settings, &path)?);
            Ok(())
        }
        Command::Index { common, verbose } => {
            let settings = load(&common, None)?;
            if settings.storage.backend == video_origin::config::BackendKind::S3 {
                return index_bucket(&settings, verbose);
            }
            let root = settings.canonical_root().map_err(anyhow::Error::msg)?;
            let out = settings.index_path(&root);
            let started = std::time::Instant::now();
            let mut last_report = started;
            let mut report = |p: &video_origin::storage::local::metadata::IndexProgress<'_>| {
                if verbose {
                    eprintln!(
                        "{}  {} bytes  {}",
                        p.path,
                        p.bytes_done,
                        hex::encode(p.digest)
                    );
                }
                let done = p.files_done == p.files_total;
                if done || last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = std::time::Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!(
                        "indexed {}/{} files, {:.1}/{:.1} MiB, {:.0} MB/s",
                        p.files_done,
                        p.files_total,
                        p.bytes_done as f64 / 1048576.0,
                        p.bytes_total as f64 / 1048576.0,
                        p.bytes_done as f64 / 1e6 / secs
                    );
                }
            };
            let n = video_origin::storage::local::metadata::build_index(&root, &out, &mut report)
                .with_context(|| format!("building index {}", out.display()))?;
            println!("indexed {n} files into {}", out.display());
            Ok(())
        }
        Command::Serve { common, listen } => {
            let settings = Arc::new(load(&common, listen)?);
            init_logging(&settings);
            serve(settings)
        }
    }
}

/// `index` on the s3 backend: records the digest of every object that lacks it.
fn index_bucket(settings: &Settings, verbose: bool) -> anyhow::Result<()> {
    use video_origin::storage::s3::index::Indexed;
    let app = App::new(Arc::new(settings.clone()))?;
    app.check_store()?;
    let store = app.store.s3().expect("the s3 backend");
    let started = std::time::Instant::now();
    let mut last_report = started;
    let mut hashed = 0u64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = rt
        .block_on(store.index(|asset, outcome, size, done, total| {
            if let Indexed::Recorded(_) = outcome {
                hashed += size;
            }
            if verbose {
                let what = match outcome {
                    Indexed::Had => "had its digest".to_owned(),
                    Indexed::Recorded(d) => hex::encode(d),
                    Indexed::Changed => "replaced meanwhile, left alone".to_owned(),
                };
                eprintln!("{asset}  {size} bytes  {what}");
            }
            if done == total || last_report.elapsed() >= Duration::from_secs(1) {
                last_report = std::time::Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                eprintln!(
                    "indexed {done}/{total} objects, {:.1} MiB hashed, {:.0} MB/s",
                    hashed as f64 / 1048576.0,
                    hashed as f64 / 1e6 / secs
                );
            }
        }))
        .map_err(|e| anyhow::anyhow!("index: object store said {e}"))?;
    println!(
        "indexed {} objects in s3://{}/{}: {} digests recorded, {} replaced meanwhile and left alone",
        summary.objects,
        store.bucket(),
        store.prefix(),
        summary.recorded,
        summary.changed
    );
    Ok(())
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 1h, 2d"))?;
    n.checked_mul(mult)
        .ok_or_else(|| "duration too large".to_string())
}

fn parse_format(s: &str) -> Result<video_origin::signing::links::LinkFormat, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}`: use native, cloudflare, akamai or cloudfront"))
}

fn parse_same_site(s: &str) -> Result<video_origin::signing::links::SameSite, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}`: use Strict, Lax or None"))
}

fn explain(settings: &Settings, path: &str) -> anyhow::Result<String> {
    use std::fmt::Write;
    use video_origin::http::cache_policy::ResponseClass;
    let mount = format!("{}/", settings.assets.mount);
    let raw = path.strip_prefix(&mount).unwrap_or(path);
    let asset = video_origin::storage::path::normalize(raw)
        .map_err(|e| anyhow::anyhow!("`{path}` is not a servable path: {e}"))?;
    let policy = settings
        .cache_policy()
        .map_err(|e| anyhow::anyhow!("cache.rules[{}].{}: {}", e.index, e.field, e.reason))?;
    let mut out = String::new();
    writeln!(out, "path: {}", asset.as_str())?;
    writeln!(out, "url:  {}{}", mount, asset.as_str())?;
    writeln!(out, "cdn:  {:?}", policy.cdn())?;
    for (label, class) in [
        ("200/206/304/HEAD", ResponseClass::Success),
        ("404", ResponseClass::NotFound),
    ] {
        let ex = policy.explain(asset.as_str(), class);
        match &ex.rule {
            Some((i, name, pattern)) => writeln!(
                out,
                "\n{label}: cache.rules[{i}]{} match = \"{pattern}\"",
                name.as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )?,
            None => writeln!(out, "\n{label}: no rule matches (fallback)")?,
        }
        for (name, value) in &ex.headers {
            writeln!(out, "  {}: {}", name, value.to_str().unwrap_or("?"))?;
        }
    }
    writeln!(
        out,
        "\nalways: 400/403/405/412/416/503 -> cache-control: no-store"
    )?;
    for w in policy.warnings() {
        writeln!(out, "warning: {w}")?;
    }
    Ok(out)
}

fn probe(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = match (
        url.strip_prefix("http://"),
        url.strip_prefix("https://"),
        &tls,
    ) {
        (Some(rest), _, _) => rest,
        (_, Some(rest), Some(_)) => rest,
        _ => anyhow::bail!("probe: only http:// and https:// URLs (got {url})"),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("probe: cannot resolve {authority}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("probe: no address for {authority}"))?;
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("probe: cannot connect to {addr}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: video-origin-probe\r\n\r\n"
    );
    let mut head = Vec::new();
    match tls {
        None => {
            tcp.write_all(request.as_bytes())?;
            let mut buf = [0u8; 64];
            let n = tcp.read(&mut buf)?;
            head.extend_from_slice(&buf[..n]);
        }
        Some(config) => {
            // The name is not checked (the certificate is pinned); any valid one will do.
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(|e| anyhow::anyhow!("probe: {e}"))?;
            let mut conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| anyhow::anyhow!("probe: {e}"))?;
            let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
            stream
                .write_all(request.as_bytes())
                .with_context(|| format!("probe: TLS to {addr}"))?;
            let mut buf = [0u8; 64];
            let n = stream
                .read(&mut buf)
                .with_context(|| format!("probe: TLS to {addr}"))?;
            head.extend_from_slice(&buf[..n]);
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split(' ').nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        anyhow::bail!(
            "probe: {url} answered {:?}",
            line.lines().next().unwrap_or("")
        )
    }
}

/// Opts this process out of transparent huge pages. mimalloc asks for them on its arenas
/// (`MADV_HUGEPAGE`), so every 2 MiB region it touches became resident whole: an idle server
/// held 18 MiB of huge pages for a few hundred KiB of data. Page faults check this flag, so
/// it applies to the arena mimalloc reserved before `main` as well.
fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        // Old kernels lack it; memory is then as before.
        eprintln!("video-origin: note: cannot disable transparent huge pages (prctl)");
    }
}

/// Raises the soft open-file limit to the hard limit: every stream and connection is a
/// descriptor, and the default soft limit (often 1024) is far too low for an origin.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!("cannot read RLIMIT_NOFILE");
            return;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    soft = before,
                    hard = lim.rlim_max,
                    "cannot raise RLIMIT_NOFILE"
                );
                return;
            }
        }
        tracing::info!(
            soft_before = before,
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            "open file limit"
        );
    }
}

fn serve(settings: Arc<Settings>) -> anyhow::Result<()> {
    raise_fd_limit();
    let app = Arc::new(App::new(Arc::clone(&settings))?);
    app.check_store()?;
    app.open_outbox()?;
    let workers = match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let cert = if settings.tls.enabled {
        let cert = video_origin::server::tls::ReloadingCert::load(
            &settings.tls.cert_file,
            &settings.tls.key_file,
        )
        .map_err(|e| {
            anyhow::anyhow!("invalid configuration: key `tls.cert_file`/`tls.key_file`: {e}")
        })?;
        Some(cert)
    } else {
        None
    };
    let public = video_origin::server::ListenerSpec {
        which: video_origin::server::Listener::Public,
        tls: cert.as_ref().map(|c| {
            tokio_rustls::TlsAcceptor::from(video_origin::server::tls::server_config(
                Arc::clone(c),
                settings.tls.http2,
            ))
        }),
        http2: if settings.tls.enabled {
            settings.tls.http2
        } else {
            settings.server.h2c
        },
        max_connections: settings.server.max_connections,
    };
    if !settings.server.share_port && video_origin::server::already_served(settings.server.listen) {
        anyhow::bail!(
            "server.listen: {} is already in use by another process (this server's sockets would share it through SO_REUSEPORT and split the traffic); stop the other one, pick another port, or set server.share_port = true to share it on purpose",
            settings.server.listen
        );
    }
    let listeners = video_origin::server::bind_listeners(settings.server.listen, workers)
        .with_context(|| format!("binding server.listen {}", settings.server.listen))?;
    let addr = listeners[0].local_addr()?;
    let scheme = if settings.tls.enabled {
        "https"
    } else {
        "http"
    };
    let admin = if settings.admin.tokens.is_empty() && !settings.metrics.admin {
        tracing::info!("admin listener off (no admin.tokens, metrics.admin = false)");
        None
    } else {
        if settings.admin.tokens.is_empty() {
            tracing::info!("admin API disabled (no admin.tokens); admin listener serves health and metrics only");
        }
        let l = std::net::TcpListener::bind(settings.admin.listen)
            .with_context(|| format!("binding admin.listen {}", settings.admin.listen))?;
        l.set_nonblocking(true)?;
        // Printed before the public line, which scripts wait for last.
        println!("admin listening on http://{}", l.local_addr()?);
        Some(l)
    };
    for w in &app.warnings {
        tracing::warn!("{w}");
    }
    for line in settings.rule_listing() {
        tracing::info!("{line}");
    }
    app.spawn_index_reload(Duration::from_secs(2));
    app.spawn_health_watch(Duration::from_secs(1));
    app.spawn_watcher();
    // Machine-readable line on stdout: tests and scripts learn the ephemeral port from it.
    println!("listening on {scheme}://{addr}");
    tracing::info!(%addr, workers, library = %app.store.describe(), mount = %settings.assets.mount, "video-origin serving");
    // Uploads a crash interrupted leave hidden temporary files; sweep them off the start path.
    // (In a bucket, interrupted multipart uploads are aborted by the upload itself, and a
    // lifecycle rule catches those a crash left: see the README.)
    let root = app.store.local().map(|l| Arc::clone(&l.root));
    std::thread::Builder::new()
        .name("upload-sweep".into())
        .spawn(move || {
            let Some(root) = root else { return };
            let n = video_origin::storage::local::beneath::remove_abandoned_uploads(
                &root,
                Duration::from_secs(600),
            );
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "removed temporary files of interrupted uploads"
                );
            }
        })?;
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    let warm = settings.metadata.warm_up.then(|| Arc::clone(&app));
    let outbox = Arc::clone(&app);
    let shutdown = async move {
        outbox.spawn_outbox();
        if let Some(app) = warm {
            app.spawn_warm_up();
        }
        video_origin::server::shutdown_signal().await;
    };
    video_origin::server::run_workers(app, public, listeners, admin, cert, grace, shutdown)?;
    Ok(())
}

// mimalloc: per-thread free lists suit thread-per-core workers, and freed chunk buffers go
// back to the OS instead of piling up in glibc arenas under thousands of slow streams.
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;
