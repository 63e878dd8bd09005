//! Loading: the figment layers (embedded defaults → config file → `VIDEO_ORIGIN_*` → flags),
//! the ordered rule lists composed across layers, where every value came from, and error text
//! that names source, key and reason (and never a secret).

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::provenance::{rule_source, Provenance};
use super::settings::Settings;

/// The shipped `config/origin.toml`, compiled in.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../config/origin.toml");
/// Looked for in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "config/origin.toml";
pub const ENV_PREFIX: &str = "VIDEO_ORIGIN_";

/// A configuration error: where, which key, why. `key` is empty when the whole source is at
/// fault (a file that does not exist or does not parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
            // Filled in by `load`, which knows the override.
            assets_root: String::new(),
            s3_bucket: String::new(),
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
    crate::signing::access::check_rules(&settings.access.rules).map_err(|(i, reason)| {
        ConfigError {
            source: rule_source(&provenance.access_rules, i),
            key: format!("access.rules[{i}]"),
            reason,
        }
    })?;
    settings.provenance = Provenance {
        assets_root: if o.assets.is_some() {
            "command line: --assets".into()
        } else {
            source_of(&fig, "assets.root")
        },
        s3_bucket: source_of(&fig, "storage.s3.bucket"),
        ..provenance
    };
    Ok(settings)
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
    "invalidation.cloudflare.api_token",
    "storage.s3.access_key_id",
    "storage.s3.secret_access_key",
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
