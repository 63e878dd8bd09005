//! The `Settings` tree: one field per `[section]`, each a type of its own file here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::provenance::{rule_source, Provenance};
use super::section::Section;
use super::signing::SigningParts;
use crate::http::cache_policy::CachePolicy;

/// Each `[section]` is a type in a file of this folder that implements [`Section`]; adding a
/// section is that file, its `mod` line in `config/mod.rs`, and one line here.
macro_rules! settings {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// The whole configuration, validated.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $($(#[$doc])* pub $field: $ty,)*
            /// Where the values came from (filled by `config::load`; not a config key).
            #[serde(skip)]
            pub provenance: Provenance,
        }

        impl Settings {
            fn validate_sections(&self) -> Result<(), (&'static str, String)> {
                $(Section::validate(&self.$field)?;)*
                Ok(())
            }
        }
    };
}

settings! {
    server: super::server::ServerSettings,
    assets: super::serving::AssetSettings,
    storage: super::storage::StorageSettings,
    ranges: super::serving::RangeSettings,
    metadata: super::serving::MetadataSettings,
    streaming: super::serving::StreamingSettings,
    cache: super::serving::CacheSettings,
    log: super::observe::LogSettings,
    signing: super::signing::SigningSettings,
    access: super::signing::AccessSettings,
    admin: super::admin::AdminSettings,
    invalidation: super::admin::InvalidationSettings,
    limits: super::server::LimitSettings,
    origin_protection: super::web::OriginProtectionSettings,
    cors: super::web::CorsSettings,
    proxy: super::server::ProxySettings,
    metrics: super::observe::MetricsSettings,
    tls: super::server::TlsSettings,
    player: super::web::PlayerSettings,
}

impl Settings {
    /// Semantic checks that types alone cannot express, section by section. (key, reason).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_sections()
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
            crate::signing::access::summary(&self.access.rules)
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

    /// Decodes and checks every signing secret (see [`SigningSettings::parts`]).
    pub fn signing_parts(&self) -> Result<SigningParts, (String, String)> {
        self.signing.parts()
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

    /// The asset root as a canonical directory path. The error is the whole message: where the
    /// value came from, what is wrong with it and, for a relative path, what it was taken
    /// relative to (the same words from `serve`, `check-config` and `index`).
    pub fn canonical_root(&self) -> Result<PathBuf, String> {
        self.open_root().map_err(|reason| {
            let source = match self.provenance.assets_root.as_str() {
                "" => "configuration",
                s => s,
            };
            format!("invalid configuration: {source}: key `assets.root`: {reason}")
        })
    }

    fn open_root(&self) -> Result<PathBuf, String> {
        let given = &self.assets.root;
        let relative = || {
            if given.is_relative() {
                let cwd = std::env::current_dir()
                    .map_or_else(|_| "unknown".into(), |d| d.display().to_string());
                format!(" (a relative path, taken from the working directory {cwd})")
            } else {
                String::new()
            }
        };
        let root = std::fs::canonicalize(given)
            .map_err(|e| format!("cannot use {}: {e}{}", given.display(), relative()))?;
        if !root.is_dir() {
            return Err(format!(
                "{} is not a directory{}",
                given.display(),
                relative()
            ));
        }
        Ok(root)
    }

    /// The index file path, resolved against the asset root when relative.
    pub fn index_path(&self, root: &Path) -> PathBuf {
        root.join(&self.metadata.index_file)
    }
}
