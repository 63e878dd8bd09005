//! `[signing]` (and its edge formats) and `[access]`: signed links and which paths need one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::section::{Secret, Section};

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
    pub rules: Vec<crate::signing::access::AccessRuleConfig>,
}

/// Decoded signing material, built once at startup.
pub struct SigningParts {
    pub keys: crate::signing::keys::KeyRing,
    pub cloudflare: Option<(Vec<Vec<u8>>, crate::signing::cloudflare::CloudflareRule)>,
    pub akamai: Option<(Vec<Vec<u8>>, crate::signing::akamai::Algorithm, String)>,
    pub cloudfront: Option<(crate::signing::cloudfront::CloudFrontSigner, String)>,
}

impl Section for SigningSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.skew_secs > 3600 {
            return Err(("signing.skew_secs", "must be at most 3600".into()));
        }
        if self.default_ttl_secs == 0 {
            return Err(("signing.default_ttl_secs", "must be at least 1".into()));
        }
        if self.max_ttl_secs > 0 && self.default_ttl_secs > self.max_ttl_secs {
            return Err((
                "signing.default_ttl_secs",
                "must not exceed signing.max_ttl_secs".into(),
            ));
        }
        Ok(())
    }
}

impl Section for AccessSettings {}

impl SigningSettings {
    /// Decodes and checks every signing secret. Errors are (key, reason) and never contain
    /// secret material.
    pub fn parts(&self) -> Result<SigningParts, (String, String)> {
        use crate::signing::{akamai, cloudflare::CloudflareRule, cloudfront, keys};
        let sg = self;
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
        let ids = || {
            let ids: Vec<&str> = ring.iter().map(|(k, _)| k.as_str()).collect();
            ids.join(", ")
        };
        if signing.is_none() && ring.len() > 1 {
            // Blamed on the keys (where they came from), not on the default empty signing_key.
            return Err((
                "signing.keys".into(),
                format!(
                    "several keys are configured ({}): name the one that signs in signing.signing_key (VIDEO_ORIGIN_SIGNING__SIGNING_KEY)",
                    ids()
                ),
            ));
        }
        if let Some(id) = signing
            .as_deref()
            .filter(|id| !ring.iter().any(|(k, _)| k == id))
        {
            let configured = if ring.is_empty() {
                "none".to_owned()
            } else {
                ids()
            };
            return Err((
                "signing.signing_key".into(),
                format!(
                    "`{id}` is not among the configured keys ({configured}); ids set through environment variables are lower-cased"
                ),
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
}
