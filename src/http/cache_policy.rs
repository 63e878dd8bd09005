//! Cache policy: an ordered list of rules, first match wins, that decides the caching headers of
//! every file response (spec http-origin §3).
//!
//! A rule matches the normalized asset path by glob and applies to served files (`2xx`: 200,
//! 206, 304 and HEAD alike, H-21) or to 404s. It sets `Cache-Control` and optionally the
//! targeted fields (`CDN-Cache-Control`, `Cloudflare-CDN-Cache-Control`, `Surrogate-Control`),
//! `Vary`, and purge tags rendered from the path (`Cache-Tag` for Cloudflare, `Surrogate-Key`
//! for Fastly). The `cdn` preset drops what the chosen CDN ignores or misreads and says so in
//! startup warnings. Errors other than 404 (400, 403, 405, 412, 416, 503) are always
//! `no-store` and are not rule-driven: no cache may keep them (H-20).
//!
//! Everything is validated and compiled at load; at request time only glob matching and tag
//! rendering run.

use http::header::{self, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::glob::Glob;

/// Which CDN sits in front; adapts what is emitted (spec http-origin H-13..H-16, F-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cdn {
    Cloudfront,
    Cloudflare,
    Fastly,
    Generic,
}

/// One rule as written in the config (`[[cache.rules]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Glob on the asset path (see `http::glob`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// `"2xx"` (served files: 200, 206, 304, HEAD) and/or `"404"`. Default `["2xx"]`.
    #[serde(default = "default_status")]
    pub status: Vec<String>,
    pub cache_control: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdn_cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudflare_cdn_cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<String>,
    /// Templates: `{path}`, `{dir}`, `{name}`, `{stem}`, `{ext}`, `{seg0}`, `{seg1}`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn default_status() -> Vec<String> {
    vec!["2xx".into()]
}

/// What kind of response the headers are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// 200, 206, 304 and HEAD of a served file.
    Success,
    NotFound,
}

/// A rule that failed validation: its index in `cache.rules`, the field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub index: usize,
    pub field: &'static str,
    pub reason: String,
}

static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
static CLOUDFLARE_CDN_CACHE_CONTROL: HeaderName =
    HeaderName::from_static("cloudflare-cdn-cache-control");
static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// Cloudflare's limit on the total Cache-Tag value (H-16).
const MAX_TAG_HEADER: usize = 16 * 1024;

#[derive(Debug, Clone)]
enum TagPiece {
    Text(String),
    Path,
    Dir,
    Name,
    Stem,
    Ext,
    Seg(usize),
}

#[derive(Debug, Clone)]
struct Rule {
    index: usize,
    name: Option<String>,
    /// What the access log calls this rule: its name, or `rules[i]`.
    log_label: std::sync::Arc<str>,
    glob: Glob,
    success: bool,
    not_found: bool,
    fixed: Vec<(HeaderName, HeaderValue)>,
    tags: Vec<Vec<TagPiece>>,
    cache_tag: bool,
    surrogate_key: bool,
}

/// Paths whose 2xx headers a thread keeps rendered (all of them are dropped when more come:
/// rendering again is cheap, and only paths that exist reach the memo).
const RENDERED_PATHS: usize = 10_000;

/// Policies a thread keeps memos for (a server has one; tests build many).
const RENDERED_POLICIES: usize = 8;

thread_local! {
    /// Per policy (`CachePolicy::memo`), the 2xx headers already worked out for a served path
    /// with the log label of the rule that made them. Per thread, not shared: a lookup is a plain hash-map probe (a
    /// shared cache recorded every read), and the reference counts handed out live in this
    /// thread's own memory instead of a line both workers write.
    static RENDERED: std::cell::RefCell<std::collections::HashMap<u64, Memo, foldhash::fast::RandomState>> =
        Default::default();
}

/// One policy's memo on one thread.
struct Memo {
    /// This thread's copies of the rules' log labels: the access log keeps one per request,
    /// and a shared label's reference count would be a line both workers write.
    labels: Vec<std::sync::Arc<str>>,
    /// Hashed with foldhash (randomly seeded) rather than SipHash: two lookups per request,
    /// and SipHash was most of their cost. The map is bounded and cleared when full, so a
    /// client choosing colliding paths slows only its own thread's memo.
    paths: std::collections::HashMap<Box<str>, Rendered, foldhash::fast::RandomState>,
}

/// Tells policies apart in [`RENDERED`]; clones share one (they have the same rules).
static NEXT_MEMO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct CachePolicy {
    rules: Vec<Rule>,
    cdn: Cdn,
    warnings: Vec<String>,
    /// This policy's key in the per-thread memo of rendered 2xx headers: rule matching and
    /// tag rendering run once per file and thread, not per response.
    memo: u64,
}

/// Rendered headers, shared: a hit hands out a reference count, not a copy of every value.
pub type PolicyList = std::sync::Arc<[(HeaderName, HeaderValue)]>;

/// Headers for a path, and the log label of the rule that made them (None: the fallback).
type Rendered = (PolicyList, Option<std::sync::Arc<str>>);

/// Which rule applied and the headers it produced (for `video-origin explain`).
#[derive(Debug, Clone)]
pub struct Explanation {
    /// (index, name, pattern) of the matching rule, or None when the fallback applied.
    pub rule: Option<(usize, Option<String>, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

static FALLBACK_SUCCESS: HeaderValue = HeaderValue::from_static("no-cache");
static FALLBACK_NOT_FOUND: HeaderValue = HeaderValue::from_static("no-store");

impl CachePolicy {
    /// Validates and compiles the rules for the given CDN preset.
    pub fn compile(rules: &[RuleConfig], cdn: Cdn) -> Result<CachePolicy, RuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut warnings = Vec::new();
        for (index, rc) in rules.iter().enumerate() {
            let err = |field: &'static str, reason: String| RuleError {
                index,
                field,
                reason,
            };
            let glob = Glob::new(&rc.pattern).map_err(|r| err("match", r))?;
            let (mut success, mut not_found) = (false, false);
            if rc.status.is_empty() {
                return Err(err(
                    "status",
                    "must list at least one of \"2xx\", \"404\"".into(),
                ));
            }
            for s in &rc.status {
                match s.as_str() {
                    "2xx" => success = true,
                    "404" | "4xx" => not_found = true,
                    other => {
                        return Err(err(
                            "status",
                            format!(
                                "`{other}`: use \"2xx\" (200, 206, 304 and HEAD alike) or \"404\"; \
                                 other errors are always no-store"
                            ),
                        ))
                    }
                }
            }
            let label = rule_label(index, rc.name.as_deref());
            let mut cache_control = rc.cache_control.clone();
            validate_cache_control(&cache_control).map_err(|r| err("cache_control", r))?;
            for (field, value) in [
                ("cdn_cache_control", &rc.cdn_cache_control),
                (
                    "cloudflare_cdn_cache_control",
                    &rc.cloudflare_cdn_cache_control,
                ),
                ("surrogate_control", &rc.surrogate_control),
            ] {
                if let Some(v) = value {
                    validate_cache_control(v).map_err(|r| err(field, r))?;
                }
            }
            if let Some(v) = &rc.vary {
                validate_vary(v).map_err(|r| err("vary", r))?;
            }
            let tags = rc
                .tags
                .iter()
                .map(|t| parse_tag_template(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|r| err("tags", r))?;

            // What this CDN reads (H-13..H-16), decided once here.
            let (emit_cdn, emit_cf, emit_surrogate, cache_tag, surrogate_key) = match cdn {
                Cdn::Cloudfront => (false, false, false, false, false),
                Cdn::Cloudflare => (true, true, false, true, false),
                Cdn::Fastly => (true, false, true, false, true),
                Cdn::Generic => (true, true, true, true, true),
            };
            if cdn == Cdn::Cloudfront {
                if let Some(cdn_cc) = &rc.cdn_cache_control {
                    warnings.push(format!(
                        "{label}: CloudFront ignores CDN-Cache-Control; not emitted"
                    ));
                    // CloudFront takes its TTL from s-maxage (H-14): carry the CDN TTL there.
                    let has = |d: &str| directive_names(&cache_control).any(|n| n == d);
                    if let Some(secs) = directive_value(cdn_cc, "max-age") {
                        if has("s-maxage") || has("private") || has("no-store") || has("no-cache") {
                        } else if has("stale-while-revalidate") {
                            warnings.push(format!(
                                "{label}: cannot add s-maxage={secs} for CloudFront next to \
                                 stale-while-revalidate (RFC 9111 §4.2.4); set it yourself"
                            ));
                        } else {
                            cache_control = format!("{cache_control}, s-maxage={secs}");
                            warnings.push(format!(
                                "{label}: added s-maxage={secs} to Cache-Control so CloudFront \
                                 caches as long as CDN-Cache-Control asked"
                            ));
                        }
                    }
                }
                if rc.cloudflare_cdn_cache_control.is_some() || rc.surrogate_control.is_some() {
                    warnings.push(format!(
                        "{label}: CloudFront ignores Cloudflare-CDN-Cache-Control and \
                         Surrogate-Control; not emitted"
                    ));
                }
                if !rc.tags.is_empty() {
                    warnings.push(format!(
                        "{label}: CloudFront has no tag purge (path invalidation only); tags not emitted"
                    ));
                }
            }
            if cdn == Cdn::Cloudflare && rc.surrogate_control.is_some() {
                warnings.push(format!(
                    "{label}: Surrogate-Control makes Cloudflare ignore Cache-Control (H-15); not emitted"
                ));
            }
            if cdn == Cdn::Fastly && rc.cloudflare_cdn_cache_control.is_some() {
                warnings.push(format!(
                    "{label}: Fastly ignores Cloudflare-CDN-Cache-Control; not emitted"
                ));
            }
            if cdn == Cdn::Generic && rc.surrogate_control.is_some() {
                warnings.push(format!(
                    "{label}: Surrogate-Control is emitted; behind Cloudflare it would make \
                     Cloudflare ignore Cache-Control (set cdn = \"cloudflare\" there)"
                ));
            }

            let hv = |field: &'static str, v: &str| {
                HeaderValue::from_str(v).map_err(|_| err(field, "not a valid header value".into()))
            };
            let mut fixed = vec![(header::CACHE_CONTROL, hv("cache_control", &cache_control)?)];
            if let (true, Some(v)) = (emit_cdn, &rc.cdn_cache_control) {
                fixed.push((CDN_CACHE_CONTROL.clone(), hv("cdn_cache_control", v)?));
            }
            if let (true, Some(v)) = (emit_cf, &rc.cloudflare_cdn_cache_control) {
                fixed.push((
                    CLOUDFLARE_CDN_CACHE_CONTROL.clone(),
                    hv("cloudflare_cdn_cache_control", v)?,
                ));
            }
            if let (true, Some(v)) = (emit_surrogate, &rc.surrogate_control) {
                fixed.push((SURROGATE_CONTROL.clone(), hv("surrogate_control", v)?));
            }
            if let Some(v) = &rc.vary {
                fixed.push((header::VARY, hv("vary", v)?));
            }
            compiled.push(Rule {
                index,
                log_label: rc
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("rules[{index}]"))
                    .into(),
                name: rc.name.clone(),
                glob,
                success,
                not_found,
                fixed,
                tags,
                cache_tag,
                surrogate_key,
            });
        }
        if !compiled
            .iter()
            .any(|r| r.success && r.glob.as_str() == "**")
        {
            warnings.push(
                "no catch-all rule (match = \"**\") for 2xx: files no rule matches are sent \
                 with Cache-Control: no-cache"
                    .into(),
            );
        }
        Ok(CachePolicy {
            rules: compiled,
            cdn,
            warnings,
            memo: NEXT_MEMO.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    pub fn cdn(&self) -> Cdn {
        self.cdn
    }

    /// Things the operator should know about this policy (logged at startup).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The caching headers for `path` (normalized asset path) and response class.
    pub fn headers(&self, path: &str, class: ResponseClass) -> Vec<(HeaderName, HeaderValue)> {
        self.apply(path, class).0.to_vec()
    }

    /// The headers for `path` and the label of the rule that produced them (None: fallback).
    pub fn apply(&self, path: &str, class: ResponseClass) -> Rendered {
        if class == ResponseClass::Success {
            return RENDERED.with_borrow_mut(|memos| {
                if memos.len() >= RENDERED_POLICIES && !memos.contains_key(&self.memo) {
                    memos.clear();
                }
                let memo = memos.entry(self.memo).or_insert_with(|| Memo {
                    labels: (self.rules.iter())
                        .map(|r| std::sync::Arc::from(&*r.log_label))
                        .collect(),
                    paths: Default::default(),
                });
                if let Some(hit) = memo.paths.get(path) {
                    return hit.clone();
                }
                let made: Rendered = match self.find(path, class) {
                    Some(rule) => (
                        Self::render(rule, path).into(),
                        (self.rules.iter())
                            .position(|r| std::ptr::eq(r, rule))
                            .map(|i| memo.labels[i].clone()),
                    ),
                    None => (Self::fallback(class).into(), None),
                };
                if memo.paths.len() >= RENDERED_PATHS {
                    memo.paths.clear();
                }
                memo.paths.insert(path.into(), made.clone());
                made
            });
        }
        match self.find(path, class) {
            Some(rule) => (
                Self::render(rule, path).into(),
                Some(rule.log_label.clone()),
            ),
            None => (Self::fallback(class).into(), None),
        }
    }

    /// Which rule applies and what it emits.
    pub fn explain(&self, path: &str, class: ResponseClass) -> Explanation {
        match self.find(path, class) {
            Some(rule) => Explanation {
                rule: Some((rule.index, rule.name.clone(), rule.glob.as_str().to_owned())),
                headers: Self::render(rule, path),
            },
            None => Explanation {
                rule: None,
                headers: Self::fallback(class),
            },
        }
    }

    fn find(&self, path: &str, class: ResponseClass) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            (match class {
                ResponseClass::Success => r.success,
                ResponseClass::NotFound => r.not_found,
            }) && r.glob.is_match(path)
        })
    }

    fn fallback(class: ResponseClass) -> Vec<(HeaderName, HeaderValue)> {
        let v = match class {
            ResponseClass::Success => FALLBACK_SUCCESS.clone(),
            ResponseClass::NotFound => FALLBACK_NOT_FOUND.clone(),
        };
        vec![(header::CACHE_CONTROL, v)]
    }

    fn render(rule: &Rule, path: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = rule.fixed.clone();
        if !rule.tags.is_empty() && (rule.cache_tag || rule.surrogate_key) {
            let tags = render_tags(&rule.tags, path);
            if !tags.is_empty() {
                if rule.cache_tag {
                    if let Ok(v) = HeaderValue::from_str(&tags.join(",")) {
                        headers.push((CACHE_TAG.clone(), v));
                    }
                }
                if rule.surrogate_key {
                    if let Ok(v) = HeaderValue::from_str(&tags.join(" ")) {
                        headers.push((SURROGATE_KEY.clone(), v));
                    }
                }
            }
        }
        headers
    }
}

fn rule_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("cache.rules[{index}] ({n})"),
        None => format!("cache.rules[{index}]"),
    }
}

fn directive_names(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|d| d.trim().split('=').next().unwrap_or(""))
}

fn directive_value(value: &str, name: &str) -> Option<u64> {
    value.split(',').find_map(|d| {
        let (n, v) = d.trim().split_once('=')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

fn validate_vary(v: &str) -> Result<(), String> {
    for item in v.split(',') {
        let item = item.trim();
        if item == "*" {
            return Err(
                "`Vary: *` makes every response uncacheable at CDNs; name the headers".into(),
            );
        }
        if item.is_empty()
            || !item
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(format!("`{item}` is not a header name"));
        }
    }
    Ok(())
}

fn parse_tag_template(t: &str) -> Result<Vec<TagPiece>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let close = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` in tag `{t}`"))?;
                let var = &rest[1..close];
                pieces.push(match var {
                    "path" => TagPiece::Path,
                    "dir" => TagPiece::Dir,
                    "name" => TagPiece::Name,
                    "stem" => TagPiece::Stem,
                    "ext" => TagPiece::Ext,
                    v => match v.strip_prefix("seg").and_then(|n| n.parse().ok()) {
                        Some(n) => TagPiece::Seg(n),
                        None => {
                            return Err(format!(
                                "unknown variable `{{{v}}}` in tag `{t}`; use {{path}}, {{dir}}, \
                                 {{name}}, {{stem}}, {{ext}} or {{segN}}"
                            ))
                        }
                    },
                });
                rest = &rest[close + 1..];
            }
            Some(i) => {
                pieces.push(TagPiece::Text(rest[..i].to_owned()));
                rest = &rest[i..];
            }
            None => {
                pieces.push(TagPiece::Text(rest.to_owned()));
                rest = "";
            }
        }
    }
    if pieces.is_empty() {
        return Err("empty tag".into());
    }
    Ok(pieces)
}

/// Renders tag templates for `path`: printable ASCII without spaces or commas (others are
/// percent-encoded), empty tags skipped, duplicates dropped, total ≤ 16 KiB (H-16).
/// The `file:{path}` purge tag of an asset, as the cache rules render it (what a Cloudflare
/// purge by tag names).
pub fn file_tag(path: &str) -> String {
    sanitize_tag(&format!("file:{path}"))
}

fn render_tags(templates: &[Vec<TagPiece>], path: &str) -> Vec<String> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, e),
        _ => (name, ""),
    };
    let segs: Vec<&str> = path.split('/').collect();
    let mut out: Vec<String> = Vec::new();
    let mut total = 0;
    for tpl in templates {
        let mut raw = String::new();
        let mut missing = false;
        for p in tpl {
            let v = match p {
                TagPiece::Text(s) => s.as_str(),
                TagPiece::Path => path,
                TagPiece::Dir => dir,
                TagPiece::Name => name,
                TagPiece::Stem => stem,
                TagPiece::Ext => ext,
                TagPiece::Seg(n) => segs.get(*n).copied().unwrap_or(""),
            };
            if v.is_empty() && !matches!(p, TagPiece::Text(_)) {
                missing = true;
            }
            raw.push_str(v);
        }
        if missing || raw.is_empty() {
            continue; // e.g. {dir} for a file at the root: no tag rather than a bare prefix
        }
        let tag = sanitize_tag(&raw);
        if out.contains(&tag) {
            continue;
        }
        if total + tag.len() + 1 > MAX_TAG_HEADER {
            break;
        }
        total += tag.len() + 1;
        out.push(tag);
    }
    out
}

fn sanitize_tag(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b',' && b != b'%' && b != b'"' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

const KNOWN: &[(&str, bool)] = &[
    // (directive, takes delta-seconds)
    ("public", false),
    ("private", false),
    ("no-store", false),
    ("no-cache", false),
    ("no-transform", false),
    ("must-revalidate", false),
    ("proxy-revalidate", false),
    ("immutable", false),
    ("max-age", true),
    ("s-maxage", true),
    ("stale-while-revalidate", true),
    ("stale-if-error", true),
];

/// Checks a response Cache-Control value we are about to emit (H-1, H-7, H-9): known lowercase
/// directives, each once, integer seconds ≤ 2^31 in token form, and no self-contradiction.
pub fn validate_cache_control(value: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    for raw in value.split(',') {
        let d = raw.trim();
        if d.is_empty() {
            return Err("empty directive".into());
        }
        let (name, arg) = match d.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (d, None),
        };
        let Some(&(_, takes_secs)) = KNOWN.iter().find(|(k, _)| *k == name) else {
            return Err(if KNOWN.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                format!("directive `{name}` must be lowercase")
            } else {
                format!("unknown directive `{name}`")
            });
        };
        match (takes_secs, arg) {
            (true, Some(a)) => {
                let secs: u64 = a.parse().map_err(|_| {
                    format!("`{name}` needs whole seconds as a bare integer, got `{a}`")
                })?;
                if secs > 2_147_483_648 {
                    return Err(format!("`{name}={secs}` exceeds 2^31 seconds"));
                }
            }
            (true, None) => return Err(format!("`{name}` needs a value in seconds")),
            (false, Some(_)) => return Err(format!("`{name}` takes no value")),
            (false, None) => {}
        }
        if seen.contains(&name) {
            return Err(format!("directive `{name}` appears twice"));
        }
        seen.push(name);
    }
    let has = |n: &str| seen.contains(&n);
    // `private, no-store` is the conventional belt-and-braces pair (H-19); anything else next
    // to no-store is dead weight that linters flag (H-7).
    if has("no-store") && seen.iter().any(|d| *d != "no-store" && *d != "private") {
        return Err("`no-store` combined with directives other than `private`".into());
    }
    if has("public") && has("private") {
        return Err("`public` and `private` contradict each other".into());
    }
    if has("immutable") && has("must-revalidate") {
        return Err("`immutable` with `must-revalidate` contradict each other".into());
    }
    if has("s-maxage") && has("stale-while-revalidate") {
        return Err(
            "`s-maxage` forbids shared caches from serving stale, so `stale-while-revalidate` \
             would never apply (RFC 9111 §4.2.4)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, cc: &str) -> RuleConfig {
        RuleConfig {
            name: None,
            pattern: pattern.into(),
            status: default_status(),
            cache_control: cc.into(),
            cdn_cache_control: None,
            cloudflare_cdn_cache_control: None,
            surrogate_control: None,
            vary: None,
            tags: vec![],
        }
    }

    fn get<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    /// The per-thread memo keeps policies apart, and past its bound it still answers what
    /// the rules say.
    #[test]
    fn memoized_headers_are_each_policys_own() {
        let one = CachePolicy::compile(&[rule("**", "public, max-age=1")], Cdn::Generic).unwrap();
        let two = CachePolicy::compile(&[rule("**", "public, max-age=2")], Cdn::Generic).unwrap();
        let cc = |p: &CachePolicy, path: &str| {
            get(&p.apply(path, ResponseClass::Success).0, "cache-control").map(str::to_owned)
        };
        for i in 0..RENDERED_PATHS + 10 {
            let path = format!("v/{i}.mp4");
            assert_eq!(cc(&one, &path).as_deref(), Some("public, max-age=1"));
            assert_eq!(cc(&two, &path).as_deref(), Some("public, max-age=2"));
        }
        // More policies than the memo keeps on one thread: the first still gets its own.
        let others: Vec<CachePolicy> = (0..RENDERED_POLICIES)
            .map(|_| CachePolicy::compile(&[rule("**", "no-store")], Cdn::Generic).unwrap())
            .collect();
        for p in &others {
            assert_eq!(cc(p, "v/0.mp4").as_deref(), Some("no-store"));
        }
        assert_eq!(cc(&one, "v/0.mp4").as_deref(), Some("public, max-age=1"));
        // A clone shares its original's memo and rules.
        assert_eq!(
            cc(&two.clone(), "v/0.mp4").as_deref(),
            Some("public, max-age=2")
        );
        // The rule's log label, on this thread and on another (each has its own copy).
        let two_rules = CachePolicy::compile(
            &[rule("a/**", "no-store"), rule("**", "public, max-age=2")],
            Cdn::Generic,
        )
        .unwrap();
        let label = |p: &CachePolicy, path: &str| p.apply(path, ResponseClass::Success).1;
        for _ in 0..2 {
            assert_eq!(label(&two_rules, "a/x.mp4").as_deref(), Some("rules[0]"));
            assert_eq!(label(&two_rules, "b/x.mp4").as_deref(), Some("rules[1]"));
        }
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(label(&two_rules, "b/x.mp4").as_deref(), Some("rules[1]")));
        });
    }

    #[test]
    fn accepts_recommended_values() {
        // spec: http-origin H-17..H-20
        for ok in [
            "public, max-age=31536000, immutable",
            "public, max-age=60, s-maxage=86400",
            "private, no-store",
            "no-store",
            "public, max-age=10",
            "max-age=600, stale-while-revalidate=30, stale-if-error=86400",
        ] {
            assert_eq!(validate_cache_control(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_values_with_reason() {
        // spec: http-origin H-1, H-7, H-9, H-11
        let cases = [
            ("Max-Age=5", "lowercase"),
            ("max-age=\"5\"", "bare integer"),
            ("max-age=5, max-age=6", "twice"),
            ("max-age", "needs a value"),
            ("public=1", "takes no value"),
            ("no-store, max-age=5", "no-store"),
            ("immutable, must-revalidate", "contradict"),
            ("s-maxage=5, stale-while-revalidate=5", "s-maxage"),
            ("max-age=99999999999", "2^31"),
            ("frobnicate", "unknown"),
            ("max-age=5,,", "empty"),
            ("max-age =100", "unknown"),
            ("max-age= 100", "bare integer"),
        ];
        for (value, reason) in cases {
            let err = validate_cache_control(value).unwrap_err();
            assert!(err.contains(reason), "{value}: {err}");
        }
    }

    #[test]
    fn first_match_wins_and_status_classes() {
        let mut nf = rule("**", "public, max-age=10");
        nf.status = vec!["404".into()];
        let rules = vec![
            rule("private/**", "private, no-store"),
            rule("**/*.m3u8", "public, max-age=2"),
            rule("**", "public, max-age=60"),
            nf,
        ];
        let p = CachePolicy::compile(&rules, Cdn::Generic).unwrap();
        let cc = |path: &str, class| {
            get(&p.headers(path, class), "cache-control")
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            cc("private/x.m3u8", ResponseClass::Success),
            "private, no-store"
        );
        assert_eq!(cc("a/x.m3u8", ResponseClass::Success), "public, max-age=2");
        assert_eq!(cc("a/x.mp4", ResponseClass::Success), "public, max-age=60");
        assert_eq!(cc("a/x.mp4", ResponseClass::NotFound), "public, max-age=10");
        assert_eq!(
            p.explain("a/x.mp4", ResponseClass::NotFound)
                .rule
                .unwrap()
                .0,
            3
        );
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    }

    #[test]
    fn fallback_when_nothing_matches() {
        let p =
            CachePolicy::compile(&[rule("live/**", "public, max-age=2")], Cdn::Generic).unwrap();
        assert_eq!(
            get(
                &p.headers("vod/a.mp4", ResponseClass::Success),
                "cache-control"
            ),
            Some("no-cache")
        );
        assert_eq!(
            get(
                &p.headers("vod/a.mp4", ResponseClass::NotFound),
                "cache-control"
            ),
            Some("no-store")
        );
        assert!(p.warnings()[0].contains("catch-all"));
    }

    fn full_rule() -> RuleConfig {
        let mut r = rule("**", "public, max-age=60");
        r.cdn_cache_control = Some("max-age=86400, stale-if-error=600".into());
        r.cloudflare_cdn_cache_control = Some("max-age=3600".into());
        r.surrogate_control = Some("max-age=7200".into());
        r.vary = Some("Origin".into());
        r.tags = vec!["video".into(), "dir:{dir}".into(), "file:{path}".into()];
        r
    }

    #[test]
    fn presets_adapt_emission() {
        // spec: http-origin H-13..H-16
        let path = "series/s1/e 1.mp4";
        let names = |cdn| {
            let p = CachePolicy::compile(&[full_rule()], cdn).unwrap();
            let h = p.headers(path, ResponseClass::Success);
            (
                h.iter()
                    .map(|(n, _)| n.as_str().to_owned())
                    .collect::<Vec<_>>(),
                h,
                p,
            )
        };
        let (n, h, _) = names(Cdn::Generic);
        assert_eq!(
            n,
            [
                "cache-control",
                "cdn-cache-control",
                "cloudflare-cdn-cache-control",
                "surrogate-control",
                "vary",
                "cache-tag",
                "surrogate-key"
            ]
        );
        assert_eq!(
            get(&h, "cache-tag"),
            Some("video,dir:series/s1,file:series/s1/e%201.mp4")
        );
        assert_eq!(
            get(&h, "surrogate-key"),
            Some("video dir:series/s1 file:series/s1/e%201.mp4")
        );

        let (n, _, p) = names(Cdn::Cloudflare);
        assert!(!n.contains(&"surrogate-control".to_string()), "H-15");
        assert!(!n.contains(&"surrogate-key".to_string()));
        assert!(n.contains(&"cache-tag".to_string()));
        assert!(p.warnings().iter().any(|w| w.contains("Surrogate-Control")));

        let (n, h, p) = names(Cdn::Cloudfront);
        assert_eq!(n, ["cache-control", "vary"]);
        assert_eq!(
            get(&h, "cache-control"),
            Some("public, max-age=60, s-maxage=86400"),
            "H-14"
        );
        assert!(p
            .warnings()
            .iter()
            .any(|w| w.contains("CloudFront ignores CDN-Cache-Control")));

        let (n, _, _) = names(Cdn::Fastly);
        assert!(n.contains(&"surrogate-control".to_string()));
        assert!(n.contains(&"surrogate-key".to_string()));
        assert!(!n.contains(&"cache-tag".to_string()));
        assert!(!n.contains(&"cloudflare-cdn-cache-control".to_string()));
    }

    #[test]
    fn tag_templates() {
        let mut r = rule("**", "public, max-age=60");
        r.tags = vec![
            "{seg0}".into(),
            "d:{dir}".into(),
            "n:{name}".into(),
            "s:{stem}".into(),
            "e:{ext}".into(),
            "dup".into(),
            "dup".into(),
            "x:{seg9}".into(),
        ];
        let p = CachePolicy::compile(&[r], Cdn::Cloudflare).unwrap();
        let h = p.headers("movies/m42/seg,1.m4s", ResponseClass::Success);
        assert_eq!(
            get(&h, "cache-tag"),
            Some("movies,d:movies/m42,n:seg%2C1.m4s,s:seg%2C1,e:m4s,dup")
        );
        // A file at the root has no {dir}: that tag is skipped, not emitted as "d:".
        let h = p.headers("a.mp4", ResponseClass::Success);
        assert_eq!(get(&h, "cache-tag"), Some("a.mp4,n:a.mp4,s:a,e:mp4,dup"));
    }

    #[test]
    fn rule_errors_name_index_field_and_reason() {
        let check = |r: RuleConfig, field: &str, why: &str| {
            let rules = vec![rule("**", "public, max-age=1"), r];
            let e = CachePolicy::compile(&rules, Cdn::Generic).unwrap_err();
            assert_eq!((e.index, e.field), (1, field), "{e:?}");
            assert!(e.reason.contains(why), "{e:?}");
        };
        check(rule("a**", "public"), "match", "whole path segment");
        check(
            rule("**", "no-store, max-age=5"),
            "cache_control",
            "no-store",
        );
        check(
            rule("**", "immutable, must-revalidate"),
            "cache_control",
            "contradict",
        );
        check(
            rule("**", "s-maxage=9, stale-while-revalidate=9"),
            "cache_control",
            "s-maxage",
        );
        check(rule("**", "MAX-AGE=5"), "cache_control", "lowercase");
        let mut r = rule("**", "public");
        r.cdn_cache_control = Some("max-age=\"10000\"".into());
        check(r, "cdn_cache_control", "bare integer");
        let mut r = rule("**", "public");
        r.vary = Some("*".into());
        check(r, "vary", "Vary: *");
        let mut r = rule("**", "public");
        r.tags = vec!["{nope}".into()];
        check(r, "tags", "unknown variable");
        let mut r = rule("**", "public");
        r.status = vec!["5xx".into()];
        check(r, "status", "2xx");
    }
}
