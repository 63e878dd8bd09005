//! Configuration: figment layers (embedded defaults → config file → `VIDEO_ORIGIN_*` env →
//! command-line overrides), strict deserialization, then semantic validation.
//!
//! Every error names where the bad value came from (file path, environment variable, flag or
//! the embedded defaults), the key and the reason, so startup fails fast and legibly.
//! Secrets must never be printed: `Settings::redacted` is what `check-config` shows.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::http::cache_policy::{CachePolicy, Cdn, RuleConfig};

/// The shipped `config/origin.toml`, compiled in.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../config/origin.toml");
/// Looked for in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "config/origin.toml";
pub const ENV_PREFIX: &str = "VIDEO_ORIGIN_";

/// A secret from the config or the environment. It can be read with [`Secret::expose`] but
/// never printed: `Debug` and `Serialize` (so `check-config`) show `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// Native (VO1) keys by key id: `hex:…` or `base64:…`, at least 32 bytes.
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
    /// Key id new links are signed with; may be empty when exactly one key is configured.
    #[serde(default)]
    pub signing_key: String,
    pub skew_secs: u64,
    pub max_ttl_secs: u64,
    pub default_ttl_secs: u64,
    /// Scheme and host of minted URLs; empty = `http://<server.listen>`.
    #[serde(default)]
    pub public_base_url: String,
    pub cloudflare: CloudflareSettings,
    pub akamai: AkamaiSettings,
    pub cloudfront: CloudfrontSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSettings {
    /// Secrets of the WAF rule (UTF-8 text); the first mints, all verify.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    pub ttl_secs: u64,
    pub url_safe: bool,
    /// Directory scope length in bytes (the rule's `substring(..., 0, N)`); 0 = exact paths.
    pub prefix_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashName {
    Sha256,
    Sha1,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkamaiSettings {
    /// The property's encryption key (hex), then an optional transition key.
    #[serde(default)]
    pub keys: Vec<Secret>,
    pub algorithm: HashName,
    pub param: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudfrontSettings {
    #[serde(default)]
    pub key_pair_id: String,
    #[serde(default)]
    pub private_key_file: PathBuf,
    pub hash: HashName,
    /// e.g. `https://d111111abcdef8.cloudfront.net`
    #[serde(default)]
    pub base_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSettings {
    /// In one layer: drop the rules of every earlier layer instead of adding before them.
    #[serde(default, skip_serializing)]
    pub replace_rules: bool,
    pub rules: Vec<crate::access::AccessRuleConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginProtectionSettings {
    /// Header the CDN adds (CloudFront origin custom header, Cloudflare Transform Rule).
    pub header: String,
    /// Accepted values (several during rotation); empty = protection off.
    #[serde(default)]
    pub values: Vec<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed to read responses from scripts (`https://player.example.com`), or `*`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Seconds browsers may cache a preflight answer.
    pub max_age_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Concurrent streaming responses in the whole process (0 = unlimited).
    pub max_streams: usize,
    /// Concurrent streaming responses per client address (0 = unlimited).
    pub max_streams_per_client: usize,
    /// Seconds suggested to shed clients in `Retry-After`.
    pub retry_after_secs: u64,
    /// Requests over the cap may wait this long for a slot (0 = no queue: shed at once).
    pub queue_wait_ms: u64,
    /// At most this many requests wait at a time; beyond it they are shed at once.
    pub queue_max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Peers (CIDR ranges) whose client-address headers are believed; empty = none.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// The CDN directly in front, whose edge header (`CloudFront-Viewer-Address`,
    /// `CF-Connecting-IP`, …) may then be listed in `client_headers`.
    pub cdn: crate::proxy::EdgeCdn,
    /// Headers naming the client, in order of preference.
    pub client_headers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `GET /metrics` on the admin listener (which then starts even without tokens).
    pub admin: bool,
    /// Also serve it on the public listener (subject to origin protection).
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerSettings {
    /// Serve `GET /player/{path}` and the `/ws` presence socket.
    pub enabled: bool,
    /// A session without a heartbeat for this long is closed.
    pub session_timeout_secs: u64,
    /// Open presence sockets per client address (0 = unlimited).
    pub max_sessions_per_client: usize,
    /// Open presence sockets in all (each also counts against server.max_connections).
    pub max_sessions: usize,
    /// Largest WebSocket frame/message accepted; larger closes the socket.
    pub max_frame_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub enabled: bool,
    /// PEM certificate chain and private key; re-read on SIGHUP and when they change.
    #[serde(default)]
    pub cert_file: PathBuf,
    #[serde(default)]
    pub key_file: PathBuf,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 is always offered).
    pub http2: bool,
    /// How often the files are checked for changes (0 = only on SIGHUP).
    pub reload_check_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidationSettings {
    pub enabled: bool,
    #[serde(default)]
    pub distribution_id: String,
    pub region: String,
    /// Optional endpoint (an emulator, a VPC endpoint); empty = AWS.
    #[serde(default)]
    pub endpoint_url: String,
    /// Static credentials; empty = the standard chain (env, profile, IMDS).
    #[serde(default = "empty_secret")]
    pub access_key_id: Secret,
    #[serde(default = "empty_secret")]
    pub secret_access_key: Secret,
    pub max_paths_per_request: usize,
    /// Attempts per AWS call, with exponential backoff (SDK standard retry mode).
    pub max_attempts: u32,
}

fn empty_secret() -> Secret {
    Secret::new("")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Bearer tokens by id (the id appears in audit logs, the token never). The admin listener
    /// starts only when at least one is set.
    #[serde(default)]
    pub tokens: BTreeMap<String, Secret>,
    pub max_body_bytes: usize,
    /// Largest upload accepted by PUT /admin/assets/{path}.
    pub max_upload_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub assets: AssetSettings,
    pub ranges: RangeSettings,
    pub metadata: MetadataSettings,
    pub streaming: StreamingSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
    pub signing: SigningSettings,
    pub access: AccessSettings,
    pub admin: AdminSettings,
    pub invalidation: InvalidationSettings,
    pub limits: LimitSettings,
    pub origin_protection: OriginProtectionSettings,
    pub cors: CorsSettings,
    pub proxy: ProxySettings,
    pub metrics: MetricsSettings,
    pub tls: TlsSettings,
    pub player: PlayerSettings,
    /// Where the values came from (filled by [`load`]; not a config key).
    #[serde(skip)]
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    /// A client must send a complete request header within this time of its first byte
    /// (slowloris).
    pub header_read_timeout_secs: u64,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout_secs: u64,
    /// A response whose client has stopped reading for this long is dropped (its file closed).
    pub write_stall_timeout_secs: u64,
    /// Open connections on the public listener; beyond it new ones get a 503 and are closed
    /// (0 = unlimited).
    pub max_connections: usize,
    /// Accept HTTP/2 with prior knowledge on plain TCP (h2c).
    pub h2c: bool,
    /// More request header fields than this: 431.
    pub max_headers: usize,
    /// Larger request heads (request line + header fields): 431.
    pub max_header_bytes: usize,
    /// On SIGTERM, answer /readyz with 503 for this long before closing the listener, so load
    /// balancers stop sending new requests first.
    pub drain_secs: u64,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSettings {
    pub root: PathBuf,
    pub mount: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSettings {
    pub max_ranges: usize,
    pub coalesce_gap: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSettings {
    pub capacity: u64,
    pub ttl_secs: u64,
    pub open_files: u64,
    pub open_file_idle_secs: u64,
    pub warm_up: bool,
    pub index_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingSettings {
    pub read_size: usize,
    pub blocking_threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub cdn: Cdn,
    /// In one layer: drop the rules of every earlier layer instead of adding before them.
    #[serde(default, skip_serializing)]
    pub replace_rules: bool,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// A log event like any other: JSON with `log.format = "json"`, key=value text otherwise.
    Structured,
    /// The Apache/nginx combined line followed by key=value extras.
    Combined,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
    pub access_format: AccessFormat,
    pub buffer_bytes: usize,
    pub flush_ms: u64,
}

/// Decoded signing material, built once at startup.
pub struct SigningParts {
    pub keys: crate::signing::keys::KeyRing,
    pub cloudflare: Option<(Vec<Vec<u8>>, crate::signing::cloudflare::CloudflareRule)>,
    pub akamai: Option<(Vec<Vec<u8>>, crate::signing::akamai::Algorithm, String)>,
    pub cloudfront: Option<(crate::signing::cloudfront::CloudFrontSigner, String)>,
}

/// A configuration error: where, which key, why. `key` is empty when the whole source is at
/// fault (a file that does not exist or does not parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid configuration: {}: {}", self.source, self.reason)
        } else {
            write!(
                f,
                "invalid configuration: {}: key `{}`: {}",
                self.source, self.key, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Command-line values that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub assets: Option<PathBuf>,
}

/// Where the effective settings came from: the layers read (lowest first), and for every rule
/// of the two ordered rule lists the layer that contributed it. Never holds a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// e.g. `embedded defaults`, `file /etc/video-origin.toml`,
    /// `environment: VIDEO_ORIGIN_SIGNING__KEYS__K1`, `command line: --listen`.
    pub layers: Vec<String>,
    /// Source of `access.rules[i]`.
    pub access_rules: Vec<String>,
    /// Source of `cache.rules[i]`.
    pub cache_rules: Vec<String>,
    /// What a `replace_rules = true` dropped, one sentence each (shown as warnings).
    pub replaced: Vec<String>,
}

/// One configuration layer.
struct Layer {
    /// `embedded defaults`, a file path, `environment` or `command line`.
    name: String,
    kind: LayerKind,
    figment: Figment,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    Embedded,
    File,
    Env,
    CommandLine,
}

impl Layer {
    /// Where a key of this layer was set, as a user would look for it.
    fn source_of(&self, key: &str) -> String {
        match self.kind {
            LayerKind::Env => format!("environment variable {}", env_var_name(key)),
            LayerKind::CommandLine => "command line".into(),
            _ => self.name.clone(),
        }
    }
}

/// `access.rules` -> `VIDEO_ORIGIN_ACCESS__RULES`.
fn env_var_name(key: &str) -> String {
    let parts: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
    format!("{ENV_PREFIX}{}", parts.join("__"))
}

/// The layers, lowest first. `--config` must exist; the default file is optional.
fn layers(o: &Overrides) -> Result<Vec<Layer>, ConfigError> {
    let mut out = vec![Layer {
        name: "embedded defaults".into(),
        kind: LayerKind::Embedded,
        figment: Figment::from(Toml::string(EMBEDDED_DEFAULTS)),
    }];
    let file = match &o.config_file {
        Some(path) if !path.is_file() => {
            return Err(ConfigError {
                source: path.display().to_string(),
                key: String::new(),
                reason: "config file not found (given with --config)".into(),
            });
        }
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
    };
    if let Some(path) = file {
        out.push(Layer {
            name: path.display().to_string(),
            kind: LayerKind::File,
            figment: Figment::from(Toml::file_exact(&path)),
        });
    }
    out.push(Layer {
        name: "environment".into(),
        kind: LayerKind::Env,
        figment: Figment::from(Env::prefixed(ENV_PREFIX).split("__")),
    });
    let mut flags = Figment::new();
    if let Some(listen) = o.listen {
        flags = flags.merge(("server.listen", listen.to_string()));
    }
    if let Some(assets) = &o.assets {
        flags = flags.merge(("assets.root", assets.display().to_string()));
    }
    out.push(Layer {
        name: "command line".into(),
        kind: LayerKind::CommandLine,
        figment: flags,
    });
    // A layer that does not parse is reported as a whole, before anything else.
    for l in &out {
        if let Err(e) = figment::Provider::data(&l.figment) {
            return Err(ConfigError {
                source: l.name.clone(),
                key: String::new(),
                reason: without_source_lines(&e.to_string()),
            });
        }
    }
    Ok(out)
}

/// A TOML syntax error without the echoed source lines (`3 | key = value`): they may hold a
/// secret. Line and column stay in the first line of the message.
fn without_source_lines(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            let gutter = l
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !l.is_empty() && !gutter.starts_with('|')
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An ordered rule list over all layers: the rules, the source of each, and what a
/// `replace_rules = true` dropped.
type ComposedRules = (Vec<figment::value::Value>, Vec<String>, Vec<String>);

/// The ordered rule list of `section` (`access` or `cache`) over all layers.
///
/// A later layer's rules go *before* the earlier ones (first match wins), so adding a rule can
/// never drop the protection or caching an earlier layer gave; a layer that says
/// `replace_rules = true` drops every earlier rule instead. A rule repeated verbatim (the
/// shipped config/origin.toml restates the embedded defaults) is kept once, at its first place.
/// Returns the rules with the source of each, and what a replacement dropped.
fn compose_rules(layers: &[Layer], section: &str) -> Result<ComposedRules, ConfigError> {
    use figment::value::Value;
    let list_key = format!("{section}.rules");
    let flag_key = format!("{section}.replace_rules");
    let mut rules: Vec<(Value, String)> = Vec::new();
    let mut replaced = Vec::new();
    for layer in layers {
        let replace = match layer.figment.find_value(&flag_key) {
            Err(_) => false,
            Ok(Value::Bool(_, b)) => b,
            Ok(_) => {
                return Err(ConfigError {
                    source: layer.source_of(&flag_key),
                    key: flag_key,
                    reason: "must be true or false".into(),
                })
            }
        };
        let mine: Vec<(Value, String)> = match layer.figment.find_value(&list_key) {
            Err(_) => Vec::new(),
            Ok(Value::Array(_, items)) => items
                .into_iter()
                .map(|v| (v, layer.source_of(&list_key)))
                .collect(),
            Ok(_) => {
                return Err(ConfigError {
                    source: layer.source_of(&list_key),
                    key: list_key,
                    reason: format!("must be a list of rules (`[[{section}.rules]]` tables)"),
                })
            }
        };
        if replace {
            if !rules.is_empty() {
                let dropped: Vec<String> = rules
                    .iter()
                    .map(|(v, src)| {
                        let pattern = v.find_ref("match").and_then(Value::as_str).unwrap_or("?");
                        format!("`{pattern}` ({src})")
                    })
                    .collect();
                replaced.push(format!(
                    "{flag_key} = true in {}: dropped the earlier {section} rules {}",
                    layer.source_of(&flag_key),
                    dropped.join(", ")
                ));
            }
            rules = mine;
        } else if !mine.is_empty() {
            rules = mine.into_iter().chain(rules).collect();
        }
    }
    let mut unique: Vec<(Value, String)> = Vec::with_capacity(rules.len());
    for (v, src) in rules {
        if !unique.iter().any(|(u, _)| *u == v) {
            unique.push((v, src));
        }
    }
    let (values, sources) = unique.into_iter().unzip();
    Ok((values, sources, replaced))
}

/// The figment with every layer merged and both rule lists composed.
fn figment(o: &Overrides) -> Result<(Figment, Provenance), ConfigError> {
    use figment::providers::Serialized;
    let layers = layers(o)?;
    let (access, access_src, mut replaced) = compose_rules(&layers, "access")?;
    let (cache, cache_src, cache_replaced) = compose_rules(&layers, "cache")?;
    replaced.extend(cache_replaced);
    let mut fig = Figment::new();
    let mut described = Vec::new();
    for l in &layers {
        fig = fig.merge(l.figment.clone());
        match l.kind {
            LayerKind::Embedded => described.push(l.name.clone()),
            LayerKind::File => described.push(format!("file {}", l.name)),
            LayerKind::Env => {
                // Names only: values may be secrets.
                let mut vars: Vec<String> = std::env::vars_os()
                    .filter_map(|(k, _)| k.into_string().ok())
                    .filter(|k| k.starts_with(ENV_PREFIX))
                    .collect();
                vars.sort();
                if !vars.is_empty() {
                    described.push(format!("environment: {}", vars.join(", ")));
                }
            }
            LayerKind::CommandLine => {
                let mut flags = Vec::new();
                if o.listen.is_some() {
                    flags.push("--listen");
                }
                if o.assets.is_some() {
                    flags.push("--assets");
                }
                if !flags.is_empty() {
                    described.push(format!("command line: {}", flags.join(", ")));
                }
            }
        }
    }
    let fig = fig
        .merge(Serialized::default("access.rules", access))
        .merge(Serialized::default("cache.rules", cache));
    Ok((
        fig,
        Provenance {
            layers: described,
            access_rules: access_src,
            cache_rules: cache_src,
            replaced,
        },
    ))
}

/// Loads and validates the settings.
pub fn load(o: &Overrides) -> Result<Settings, ConfigError> {
    let (fig, provenance) = figment(o)?;
    let mut settings: Settings = fig
        .extract()
        .map_err(|e| from_figment(&fig, &provenance, e))?;
    settings.validate().map_err(|(key, reason)| ConfigError {
        source: source_of(&fig, key),
        key: key.to_string(),
        reason,
    })?;
    settings
        .signing_parts()
        .map_err(|(key, reason)| ConfigError {
            source: source_of(
                &fig,
                key.split('.')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(".")
                    .as_str(),
            ),
            key,
            reason,
        })?;
    settings.cache_policy().map_err(|e| ConfigError {
        source: rule_source(&provenance.cache_rules, e.index),
        key: format!("cache.rules[{}].{}", e.index, e.field),
        reason: e.reason,
    })?;
    crate::access::check_rules(&settings.access.rules).map_err(|(i, reason)| ConfigError {
        source: rule_source(&provenance.access_rules, i),
        key: format!("access.rules[{i}]"),
        reason,
    })?;
    settings.provenance = provenance;
    Ok(settings)
}

fn rule_source(sources: &[String], i: usize) -> String {
    sources
        .get(i)
        .cloned()
        .unwrap_or_else(|| "configuration".into())
}

fn describe(meta: &figment::Metadata, key_path: &[String]) -> String {
    use figment::Source;
    match &meta.source {
        Some(Source::File(p)) => p.display().to_string(),
        Some(Source::Code(_)) => "command line".into(),
        Some(Source::Custom(s)) => s.clone(),
        Some(_) => meta.name.to_string(),
        None if meta.name.contains("environment") => {
            // Name the exact variable the user set.
            let var: Vec<String> = key_path.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("environment variable {ENV_PREFIX}{}", var.join("__"))
        }
        None => "embedded defaults".into(),
    }
}

fn source_of(fig: &Figment, key: &str) -> String {
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    fig.find_metadata(key)
        .map(|m| describe(m, &path))
        .unwrap_or_else(|| "configuration".into())
}

/// Keys whose values are secrets: no error about them may show the value.
const SECRET_KEYS: &[&str] = &[
    "signing.keys",
    "signing.cloudflare.secrets",
    "signing.akamai.keys",
    "admin.tokens",
    "origin_protection.values",
    "invalidation.access_key_id",
    "invalidation.secret_access_key",
];

fn is_secret_key(path: &[String]) -> bool {
    let dotted = path.join(".");
    SECRET_KEYS
        .iter()
        .any(|k| dotted == *k || dotted.starts_with(&format!("{k}.")))
}

/// `cache.rules.2.x` -> `cache.rules[2].x`: one notation for list items everywhere.
pub fn key_notation(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// What kind of value was found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

fn from_figment(fig: &Figment, provenance: &Provenance, e: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = e.path.clone();
    let secret = is_secret_key(&path);
    let reason = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(&**field) {
                path.push(field.to_string());
            }
            "missing key".into()
        }
        Kind::UnknownVariant(found, expected) if !secret => {
            format!("`{found}` is not one of: {}", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) if secret => {
            format!(
                "found {}, expected {expected} (the value is not shown: this key holds a secret)",
                kind_of(actual)
            )
        }
        _ if secret => "invalid value (not shown: this key holds a secret)".into(),
        other => other.to_string(),
    };
    // Items of the composed rule lists carry the source of their own layer.
    let source = match path.as_slice() {
        [section, rules, index, ..]
            if rules == "rules" && (section == "access" || section == "cache") =>
        {
            let list = if section == "access" {
                &provenance.access_rules
            } else {
                &provenance.cache_rules
            };
            rule_source(list, index.parse().unwrap_or(usize::MAX))
        }
        _ => match &e.metadata {
            Some(meta) => describe(meta, &path),
            None => source_of(fig, &path.join(".")),
        },
    };
    ConfigError {
        source,
        key: key_notation(&path),
        reason,
    }
}

impl Settings {
    /// Semantic checks that types alone cannot express. Returns (key, reason).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let m = &self.assets.mount;
        if !m.starts_with('/') || m.ends_with('/') || m.contains("//") || m.contains(['?', '#']) {
            return Err((
                "assets.mount",
                format!("must start with `/`, not end with `/` and hold no `//`, `?` or `#` (got `{m}`)"),
            ));
        }
        if self.log.buffer_bytes > 16 << 20 {
            return Err(("log.buffer_bytes", "must be at most 16 MiB".into()));
        }
        if !(1..=60_000).contains(&self.log.flush_ms) {
            return Err(("log.flush_ms", "must be between 1 and 60000".into()));
        }
        if !(1..=300).contains(&self.server.header_read_timeout_secs) {
            return Err((
                "server.header_read_timeout_secs",
                "must be between 1 and 300".into(),
            ));
        }
        if !(8..=1000).contains(&self.server.max_headers) {
            return Err(("server.max_headers", "must be between 8 and 1000".into()));
        }
        if !(4096..=1 << 20).contains(&self.server.max_header_bytes) {
            return Err((
                "server.max_header_bytes",
                "must be between 4096 and 1048576".into(),
            ));
        }
        if self.server.drain_secs > 600 {
            return Err(("server.drain_secs", "must be at most 600".into()));
        }
        if self.server.workers > 1024 {
            return Err((
                "server.workers",
                "must be at most 1024 (0 = one per CPU)".into(),
            ));
        }
        if self.ranges.max_ranges == 0 {
            return Err(("ranges.max_ranges", "must be at least 1".into()));
        }
        if !(4096..=16 << 20).contains(&self.streaming.read_size) {
            return Err((
                "streaming.read_size",
                format!(
                    "must be between 4096 and 16777216 bytes (got {})",
                    self.streaming.read_size
                ),
            ));
        }
        if !(1..=1024).contains(&self.streaming.blocking_threads) {
            return Err((
                "streaming.blocking_threads",
                "must be between 1 and 1024".into(),
            ));
        }
        if self.metadata.open_files > 0 && self.metadata.open_file_idle_secs == 0 {
            return Err((
                "metadata.open_file_idle_secs",
                "must be at least 1 when open_files > 0".into(),
            ));
        }
        if self.metadata.capacity == 0 {
            return Err(("metadata.capacity", "must be at least 1".into()));
        }
        if self.metadata.ttl_secs == 0 {
            return Err(("metadata.ttl_secs", "must be at least 1".into()));
        }
        if self.server.shutdown_grace_secs > 3600 {
            return Err(("server.shutdown_grace_secs", "must be at most 3600".into()));
        }
        if self.signing.skew_secs > 3600 {
            return Err(("signing.skew_secs", "must be at most 3600".into()));
        }
        if self.signing.default_ttl_secs == 0 {
            return Err(("signing.default_ttl_secs", "must be at least 1".into()));
        }
        if self.signing.max_ttl_secs > 0
            && self.signing.default_ttl_secs > self.signing.max_ttl_secs
        {
            return Err((
                "signing.default_ttl_secs",
                "must not exceed signing.max_ttl_secs".into(),
            ));
        }
        for (id, token) in &self.admin.tokens {
            if token.expose().len() < 32 {
                return Err((
                    "admin.tokens",
                    format!("token `{id}` must be at least 32 characters"),
                ));
            }
        }
        let op = &self.origin_protection;
        if ::http::HeaderName::from_bytes(op.header.as_bytes()).is_err() {
            return Err((
                "origin_protection.header",
                format!("`{}` is not a header name", op.header),
            ));
        }
        for v in &op.values {
            if v.expose().len() < 16 {
                return Err((
                    "origin_protection.values",
                    "each value needs at least 16 characters".into(),
                ));
            }
        }
        for o in &self.cors.allowed_origins {
            let ok = o == "*"
                || ((o.starts_with("https://") || o.starts_with("http://"))
                    && !o.ends_with('/')
                    && !o.contains(char::is_whitespace));
            if !ok {
                return Err((
                    "cors.allowed_origins",
                    format!("`{o}` must be `*` or scheme://host[:port] without a trailing /"),
                ));
            }
        }
        let inv = &self.invalidation;
        if inv.enabled && inv.distribution_id.is_empty() {
            return Err((
                "invalidation.distribution_id",
                "required when invalidation.enabled = true".into(),
            ));
        }
        if !inv.distribution_id.is_empty()
            && !inv
                .distribution_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        {
            return Err((
                "invalidation.distribution_id",
                "must be letters and digits (e.g. E2QWRUHAPOMQZL)".into(),
            ));
        }
        if !(1..=3000).contains(&inv.max_paths_per_request) {
            return Err((
                "invalidation.max_paths_per_request",
                "must be between 1 and 3000".into(),
            ));
        }
        if !(1..=10).contains(&inv.max_attempts) {
            return Err((
                "invalidation.max_attempts",
                "must be between 1 and 10".into(),
            ));
        }
        if inv.access_key_id.expose().is_empty() != inv.secret_access_key.expose().is_empty() {
            return Err((
                "invalidation.secret_access_key",
                "set both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        if !inv.endpoint_url.is_empty()
            && !inv.endpoint_url.starts_with("http://")
            && !inv.endpoint_url.starts_with("https://")
        {
            return Err((
                "invalidation.endpoint_url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if self.admin.max_upload_bytes == 0 {
            return Err(("admin.max_upload_bytes", "must be at least 1".into()));
        }
        if !(1024..=64 << 20).contains(&self.admin.max_body_bytes) {
            return Err((
                "admin.max_body_bytes",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ("log.level", e.to_string()))?;
        for (key, secs) in [
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            (
                "server.write_stall_timeout_secs",
                self.server.write_stall_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err((key, "must be between 1 and 3600".into()));
            }
        }
        if self.limits.queue_wait_ms > 60_000 {
            return Err(("limits.queue_wait_ms", "must be at most 60000".into()));
        }
        if self.limits.queue_wait_ms > 0 && self.limits.queue_max == 0 {
            return Err((
                "limits.queue_max",
                "must be at least 1 when queue_wait_ms > 0".into(),
            ));
        }
        crate::proxy::parse_ranges(&self.proxy.trusted).map_err(|r| ("proxy.trusted", r))?;
        for h in &self.proxy.client_headers {
            crate::proxy::ClientHeader::parse(h)
                .and_then(|parsed| parsed.check(self.proxy.cdn))
                .map_err(|r| ("proxy.client_headers", r))?;
        }
        if !(3..=3600).contains(&self.player.session_timeout_secs) {
            return Err((
                "player.session_timeout_secs",
                "must be between 3 and 3600 (the page sends a heartbeat every 2 s)".into(),
            ));
        }
        if !(256..=1 << 20).contains(&self.player.max_frame_bytes) {
            return Err((
                "player.max_frame_bytes",
                "must be between 256 and 1048576".into(),
            ));
        }
        let tls = &self.tls;
        if tls.enabled {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(("tls.cert_file", "required when tls.enabled = true".into()));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(("tls.key_file", "required when tls.enabled = true".into()));
            }
        }
        Ok(())
    }

    /// The effective access and cache rules in order, each with the layer it came from, and a
    /// one-line summary of what needs a token. For `check-config` and the startup log.
    pub fn rule_listing(&self) -> Vec<String> {
        let p = &self.provenance;
        let from = |list: &[String], i: usize| rule_source(list, i);
        let mut out = vec!["access rules (first match wins):".to_string()];
        for (i, r) in self.access.rules.iter().enumerate() {
            let forms: Vec<&str> = r.tokens.iter().map(|t| t.as_str()).collect();
            out.push(format!(
                "  access.rules[{i}] match = \"{}\" tokens = [{}] edge_verified = {}  ({})",
                r.pattern,
                forms.join(", "),
                r.edge_verified,
                from(&p.access_rules, i)
            ));
        }
        out.push(format!(
            "  summary: {}",
            crate::access::summary(&self.access.rules)
        ));
        out.push("cache rules (first match wins):".to_string());
        for (i, r) in self.cache.rules.iter().enumerate() {
            out.push(format!(
                "  cache.rules[{i}]{} match = \"{}\" status = [{}] cache_control = \"{}\"  ({})",
                r.name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                r.pattern,
                r.status.join(", "),
                r.cache_control,
                from(&p.cache_rules, i)
            ));
        }
        out
    }

    /// A copy safe to print: every [`Secret`] serializes as `<redacted>`.
    pub fn redacted(&self) -> Settings {
        self.clone()
    }

    /// Decodes and checks every signing secret. Errors are (key, reason) and never contain
    /// secret material.
    pub fn signing_parts(&self) -> Result<SigningParts, (String, String)> {
        use crate::signing::{akamai, cloudflare::CloudflareRule, cloudfront, keys};
        let sg = &self.signing;
        let mut ring = Vec::new();
        for (kid, secret) in &sg.keys {
            let key = keys::decode_secret(secret.expose())
                .map_err(|r| (format!("signing.keys.{kid}"), r))?;
            ring.push((kid.clone(), key));
        }
        let signing = match (sg.signing_key.as_str(), ring.len()) {
            ("", 1) => Some(ring[0].0.clone()),
            ("", _) => None,
            (id, _) => Some(id.to_owned()),
        };
        if signing.is_none() && ring.len() > 1 {
            return Err((
                "signing.signing_key".into(),
                "several keys are configured: name the one that signs".into(),
            ));
        }
        let keys =
            keys::KeyRing::new(ring, signing).map_err(|r| ("signing.keys".to_string(), r))?;

        let cf = &sg.cloudflare;
        let cloudflare = if cf.secrets.is_empty() {
            None
        } else {
            for s in &cf.secrets {
                if s.expose().len() < keys::MIN_KEY_BYTES {
                    return Err((
                        "signing.cloudflare.secrets".into(),
                        format!("each secret needs at least {} bytes", keys::MIN_KEY_BYTES),
                    ));
                }
            }
            if cf.ttl_secs == 0 {
                return Err((
                    "signing.cloudflare.ttl_secs".into(),
                    "must be at least 1".into(),
                ));
            }
            if sg.max_ttl_secs > 0 && cf.ttl_secs > sg.max_ttl_secs {
                return Err((
                    "signing.cloudflare.ttl_secs".into(),
                    format!(
                        "the rule's TTL ({}s) is the lifetime of every Cloudflare link; it must not exceed signing.max_ttl_secs ({}s)",
                        cf.ttl_secs, sg.max_ttl_secs
                    ),
                ));
            }
            Some((
                cf.secrets
                    .iter()
                    .map(|s| s.expose().as_bytes().to_vec())
                    .collect::<Vec<_>>(),
                CloudflareRule {
                    ttl: cf.ttl_secs,
                    url_safe: cf.url_safe,
                    prefix_len: (cf.prefix_len > 0).then_some(cf.prefix_len),
                },
            ))
        };

        let ak = &sg.akamai;
        let akamai = if ak.keys.is_empty() {
            None
        } else {
            let mut decoded = Vec::new();
            for s in &ak.keys {
                let text = s.expose().trim();
                let text = text.strip_prefix("hex:").unwrap_or(text);
                let key = keys::decode_secret(&format!("hex:{text}")).map_err(|_| {
                    (
                        "signing.akamai.keys".to_string(),
                        "each key must be even-length hex (the property's encryption key)"
                            .to_string(),
                    )
                })?;
                if key.is_empty() {
                    return Err(("signing.akamai.keys".into(), "empty key".into()));
                }
                decoded.push(key);
            }
            let alg = match ak.algorithm {
                HashName::Sha256 => akamai::Algorithm::Sha256,
                HashName::Sha1 => akamai::Algorithm::Sha1,
            };
            if ak.param.is_empty()
                || !ak
                    .param
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    "signing.akamai.param".into(),
                    "must be a plain parameter name like __token__".into(),
                ));
            }
            Some((decoded, alg, ak.param.clone()))
        };

        let cfr = &sg.cloudfront;
        let cloudfront = if cfr.key_pair_id.is_empty() {
            None
        } else {
            let pem = std::fs::read_to_string(&cfr.private_key_file).map_err(|e| {
                (
                    "signing.cloudfront.private_key_file".to_string(),
                    format!(
                        "cannot read {}: {}",
                        cfr.private_key_file.display(),
                        e.kind()
                    ),
                )
            })?;
            let hash = match cfr.hash {
                HashName::Sha1 => cloudfront::Hash::Sha1,
                HashName::Sha256 => cloudfront::Hash::Sha256,
            };
            let signer = cloudfront::CloudFrontSigner::from_pem(&pem, &cfr.key_pair_id, hash, 2048)
                .map_err(|r| ("signing.cloudfront.private_key_file".to_string(), r))?;
            if !cfr.base_url.starts_with("https://") && !cfr.base_url.starts_with("http://") {
                return Err((
                    "signing.cloudfront.base_url".into(),
                    "must be the distribution URL, e.g. https://d111111abcdef8.cloudfront.net"
                        .into(),
                ));
            }
            Some((signer, cfr.base_url.trim_end_matches('/').to_owned()))
        };
        Ok(SigningParts {
            keys,
            cloudflare,
            akamai,
            cloudfront,
        })
    }

    /// Scheme and host of minted URLs: `signing.public_base_url`, else the public listener's
    /// address. An unspecified listen address (`0.0.0.0`, `::`) is not a place viewers can
    /// reach, so then the error says which key to set.
    pub fn public_base_url(&self) -> Result<String, String> {
        if !self.signing.public_base_url.is_empty() {
            return Ok(self
                .signing
                .public_base_url
                .trim_end_matches('/')
                .to_owned());
        }
        let listen = self.server.listen;
        if listen.ip().is_unspecified() {
            return Err(format!(
                "signing.public_base_url is not set and server.listen is {listen}, which no viewer can reach: \
                 set signing.public_base_url to the URL viewers use (e.g. VIDEO_ORIGIN_SIGNING__PUBLIC_BASE_URL=https://cdn.example.com)"
            ));
        }
        let scheme = if self.tls.enabled { "https" } else { "http" };
        Ok(format!("{scheme}://{listen}"))
    }

    /// The compiled cache policy (validated at load, so this only fails for unvalidated settings).
    pub fn cache_policy(&self) -> Result<CachePolicy, crate::http::cache_policy::RuleError> {
        CachePolicy::compile(&self.cache.rules, self.cache.cdn)
    }

    /// The index file path, resolved against the asset root when relative.
    pub fn index_path(&self, root: &Path) -> PathBuf {
        root.join(&self.metadata.index_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[allow(clippy::result_large_err)] // figment's Jail closure type, test-only
    fn load_in_jail(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        o: Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut out = None;
        Jail::expect_with(|jail| {
            for (name, body) in files {
                if let Some(dir) = Path::new(name).parent() {
                    std::fs::create_dir_all(jail.directory().join(dir)).unwrap();
                }
                jail.create_file(name, body)?;
            }
            for (k, v) in env {
                jail.set_env(k, v);
            }
            out = Some(load(&o));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn embedded_defaults_load() {
        let s = load_in_jail(&[], &[], Overrides::default()).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.assets.mount, "/video");
        assert_eq!(s.ranges.max_ranges, 16);
    }

    #[test]
    fn layers_override_in_order() {
        let s = load_in_jail(
            &[(
                "config/origin.toml",
                "[ranges]\nmax_ranges = 4\ncoalesce_gap = 0\n",
            )],
            &[("VIDEO_ORIGIN_RANGES__MAX_RANGES", "8")],
            Overrides {
                listen: Some("127.0.0.1:9999".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.ranges.max_ranges, 8, "env beats file");
        assert_eq!(s.ranges.coalesce_gap, 0, "file beats defaults");
        assert_eq!(s.server.listen.port(), 9999, "flag beats all");
    }

    #[test]
    fn errors_name_source_key_and_reason() {
        let e = load_in_jail(
            &[("config/origin.toml", "[ranges]\nmax_ranges = \"many\"\n")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.source.ends_with("config/origin.toml"), "{e}");
        assert_eq!(e.key, "ranges.max_ranges");
        assert!(e.reason.contains("string"), "{e}");

        let e = load_in_jail(
            &[("config/origin.toml", "[ranges]\nmax_rangez = 3\n")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "ranges.max_rangez");
        assert!(e.reason.contains("unknown key"), "{e}");

        let e = load_in_jail(
            &[],
            &[("VIDEO_ORIGIN_STREAMING__READ_SIZE", "12")],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "streaming.read_size");
        assert!(
            e.source.contains("VIDEO_ORIGIN_STREAMING__READ_SIZE"),
            "{e}"
        );

        let e = load_in_jail(
            &[(
                "my.toml",
                "[cache]\nfile_cache_control = \"no-store, max-age=5\"\n",
            )],
            &[],
            Overrides {
                config_file: Some("my.toml".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "cache.file_cache_control");
        assert!(e.source.ends_with("my.toml"), "{e}");

        let e = load_in_jail(
            &[],
            &[],
            Overrides {
                config_file: Some("absent.toml".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("not found"), "{e}");

        let e = load_in_jail(
            &[("config/origin.toml", "[assets]\nmount = \"video\"\n")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "assets.mount");

        let e = load_in_jail(
            &[("config/origin.toml", "this is not toml")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.source.ends_with("config/origin.toml"), "{e}");
    }
}
