//! `LinkMinter`: the one place that turns "let this viewer play that path for an hour" into a
//! signed URL, in any supported format. Used by the library API, `video-origin sign` and
//! `POST /admin/sign`, so all three mint identical links.

use std::net::IpAddr;

use serde::Serialize;

use crate::signing::akamai;
use crate::signing::cloudflare::{self, CloudflareRule};
use crate::signing::cloudfront::{CloudFrontSigner, Custom};
use crate::signing::keys::KeyRing;
use crate::signing::{canonical_path, native};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkFormat {
    #[default]
    Native,
    Cloudflare,
    Akamai,
    Cloudfront,
}

/// What to sign.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    /// Asset path (`private/movie42/master.m3u8`) or URL path (`/video/private/...`).
    pub path: String,
    pub ttl_secs: u64,
    /// Grant the whole directory of `path` (or `path` itself when it ends in `/`).
    pub prefix: bool,
    pub ip: Option<IpAddr>,
    pub format: LinkFormat,
    /// Mint cookies for the directory of `path` instead of a token in the URL.
    pub cookie: Option<CookieOptions>,
}

/// The `SameSite` attribute of minted cookies: `Lax` suits a player on the same site as the
/// media; a player on another site fetching with credentials needs `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, Default)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

/// How minted cookies are scoped beyond their `Path` (the ladder's directory).
#[derive(Debug, Clone, Default)]
pub struct CookieOptions {
    /// `Domain` attribute; none = a host-only cookie for the host that sets it.
    pub domain: Option<String>,
    pub same_site: SameSite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedLink {
    /// With cookies, the plain URL (no token): the cookies carry the grant.
    pub url: String,
    pub expires_at: u64,
    /// Ready `Set-Cookie` header values, when cookies were asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_cookie: Vec<String>,
}

/// One `Set-Cookie` value: `Path` = the granted directory, `Max-Age` = the token's remaining
/// lifetime, always `Secure` and `HttpOnly` (scripts never need the token).
fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, o: &CookieOptions) -> String {
    let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age}");
    if let Some(d) = &o.domain {
        c.push_str(&format!("; Domain={d}"));
    }
    let same_site = match o.same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
        SameSite::None => "None",
    };
    c.push_str(&format!("; Secure; HttpOnly; SameSite={same_site}"));
    c
}

/// A cookie `Domain` must be a host name (letters, digits, `-`, `.`): anything else would let a
/// caller inject attributes.
fn check_domain(d: &str) -> Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err("cookie_domain: must be a host name (letters, digits, `-`, `.`)".into())
    }
}

pub struct CloudflareMint {
    pub secret: Vec<u8>,
    pub rule: CloudflareRule,
}

pub struct AkamaiMint {
    pub key: Vec<u8>,
    pub algorithm: akamai::Algorithm,
    pub param: String,
}

pub struct CloudfrontMint {
    pub signer: CloudFrontSigner,
    /// e.g. `https://d111111abcdef8.cloudfront.net`
    pub base_url: String,
}

pub struct LinkMinter {
    pub keys: KeyRing,
    /// Scheme and host of minted URLs, or why there is none (see `Settings::public_base_url`).
    pub base_url: Result<String, String>,
    pub mount: String,
    pub max_ttl: u64,
    pub cloudflare: Option<CloudflareMint>,
    pub akamai: Option<AkamaiMint>,
    pub cloudfront: Option<CloudfrontMint>,
}

impl LinkMinter {
    /// The URL path (with mount) for an asset or URL path.
    fn url_path(&self, path: &str) -> String {
        let mount_slash = format!("{}/", self.mount);
        if path.starts_with(&mount_slash) {
            path.to_owned()
        } else {
            format!("{}/{}", self.mount, path.trim_start_matches('/'))
        }
    }

    /// The asset path (mount stripped, normalized) a request names, for "is it protected?".
    pub fn asset_path(&self, path: &str) -> Option<String> {
        let mount_slash = format!("{}/", self.mount);
        let raw = path.strip_prefix(&mount_slash).unwrap_or(path);
        crate::storage::path::normalize(raw)
            .ok()
            .map(|a| a.as_str().to_owned())
    }

    pub fn mint(&self, req: &LinkRequest, now: u64) -> Result<SignedLink, String> {
        if req.ttl_secs == 0 {
            return Err("ttl must be at least 1 second".into());
        }
        if self.max_ttl > 0 && req.ttl_secs > self.max_ttl {
            return Err(format!(
                "ttl {}s exceeds signing.max_ttl_secs ({}s)",
                req.ttl_secs, self.max_ttl
            ));
        }
        let exp = now + req.ttl_secs;
        // CloudFront links carry the distribution's own URL.
        let base_url = match (req.format, &self.base_url) {
            (LinkFormat::Cloudfront, _) => "",
            (_, Ok(b)) => b.as_str(),
            (_, Err(why)) => return Err(why.clone()),
        };
        let path =
            canonical_path(&self.url_path(&req.path)).map_err(|r| format!("path: {}", r.detail))?;
        if let Some(c) = &req.cookie {
            if let Some(d) = &c.domain {
                check_domain(d)?;
            }
            if !matches!(req.format, LinkFormat::Native | LinkFormat::Cloudfront) {
                return Err(
                    "cookie: cookies are minted for the native and cloudfront formats".into(),
                );
            }
        }
        // A cookie always grants the directory: it is sent with every request under its Path.
        let scope = (req.prefix || req.cookie.is_some())
            .then(|| crate::http::manifest::directory_of(&path).to_owned());
        let url = match req.format {
            LinkFormat::Native => {
                let (kid, key) = self
                    .keys
                    .signing()
                    .ok_or(
                        "signing.keys is empty: add a key, e.g. VIDEO_ORIGIN_SIGNING__KEYS__<ID>=hex:<64 hex digits> (ids from the environment are lower-cased) or a [signing.keys] table in the config",
                    )?;
                let (p, q) = native::mint(
                    kid,
                    key,
                    &native::MintRequest {
                        path: path.clone(),
                        exp,
                        nbf: None,
                        scope: scope.clone(),
                        ip: req.ip,
                    },
                )?;
                if let (Some(c), Some(dir)) = (&req.cookie, &scope) {
                    return Ok(SignedLink {
                        url: format!("{base_url}{p}"),
                        expires_at: exp,
                        set_cookie: vec![set_cookie(native::COOKIE, &q, dir, req.ttl_secs, c)],
                    });
                }
                format!("{base_url}{p}?{q}")
            }
            LinkFormat::Cloudflare => {
                let cf = self
                    .cloudflare
                    .as_ref()
                    .ok_or("signing.cloudflare is not configured")?;
                if req.ip.is_some() {
                    return Err("Cloudflare tokens cannot bind an IP".into());
                }
                let message = match (req.prefix, cf.rule.prefix_len) {
                    (true, Some(n)) => {
                        let s = scope.clone().unwrap_or_default();
                        if s.len() != n {
                            return Err(format!("the Cloudflare rule scopes {n}-byte prefixes; this directory is {} bytes", s.len()));
                        }
                        s
                    }
                    (true, None) => return Err("signing.cloudflare.prefix_len is not set".into()),
                    (false, _) => path.clone(),
                };
                // The rule's TTL counts from the issue time, so a shorter link issues in the past.
                let issued = exp.saturating_sub(cf.rule.ttl).min(now);
                let exp = issued + cf.rule.ttl;
                let q = cloudflare::mint(&cf.secret, &message, issued, cf.rule.url_safe);
                return Ok(SignedLink {
                    url: format!("{base_url}{path}?{q}"),
                    expires_at: exp,
                    set_cookie: Vec::new(),
                });
            }
            LinkFormat::Akamai => {
                let ak = self
                    .akamai
                    .as_ref()
                    .ok_or("signing.akamai is not configured")?;
                let fields = akamai::Fields {
                    ip: req.ip.map(|ip| ip.to_string()),
                    start: Some(now),
                    exp,
                    acl: scope.iter().map(|s| format!("{s}*")).collect(),
                    url: scope.is_none().then(|| path.clone()),
                    ..Default::default()
                };
                let token = akamai::mint(&ak.key, ak.algorithm, &fields)?;
                format!("{base_url}{path}?{}={token}", ak.param)
            }
            LinkFormat::Cloudfront => {
                let cf = self
                    .cloudfront
                    .as_ref()
                    .ok_or("signing.cloudfront is not configured")?;
                let url = format!("{}{path}", cf.base_url);
                let source_ip = match req.ip {
                    Some(IpAddr::V4(v4)) => Some(format!("{v4}/32")),
                    Some(IpAddr::V6(_)) => return Err("CloudFront policies take IPv4 only".into()),
                    None => None,
                };
                if let (Some(c), Some(dir)) = (&req.cookie, &scope) {
                    let custom = Custom {
                        resource: None,
                        start: None,
                        source_ip,
                    };
                    let resource = format!("{}{dir}*", cf.base_url);
                    let set_cookie = cf
                        .signer
                        .signed_cookies(&resource, exp, &custom)
                        .iter()
                        .map(|(name, value)| set_cookie(name, value, dir, req.ttl_secs, c))
                        .collect();
                    return Ok(SignedLink {
                        url,
                        expires_at: exp,
                        set_cookie,
                    });
                }
                match (&scope, req.ip) {
                    (None, None) => cf.signer.sign_canned(&url, exp),
                    _ => {
                        let custom = Custom {
                            resource: scope.as_ref().map(|s| format!("{}{s}*", cf.base_url)),
                            start: None,
                            source_ip,
                        };
                        cf.signer.sign_custom(&url, exp, &custom)
                    }
                }
            }
        };
        Ok(SignedLink {
            url,
            expires_at: exp,
            set_cookie: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{native, Clock};

    fn minter() -> LinkMinter {
        LinkMinter {
            keys: KeyRing::new(vec![("k1".into(), vec![5; 32])], Some("k1".into())).unwrap(),
            base_url: Ok("https://cdn.example".into()),
            mount: "/video".into(),
            max_ttl: 86400,
            cloudflare: None,
            akamai: None,
            cloudfront: None,
        }
    }

    fn req(path: &str, prefix: bool) -> LinkRequest {
        LinkRequest {
            path: path.into(),
            ttl_secs: 3600,
            prefix,
            ip: None,
            format: LinkFormat::Native,
            cookie: None,
        }
    }

    #[test]
    fn native_links_verify_and_scope() {
        let m = minter();
        let link = m
            .mint(&req("private/movie42/master.m3u8", true), 1_700_000_000)
            .unwrap();
        assert_eq!(link.expires_at, 1_700_003_600);
        assert!(link.url.starts_with("https://cdn.example/video/private/movie42/master.m3u8?exp=1700003600&kid=k1&scope=/video/private/movie42/&sig="), "{}", link.url);
        let query = link.url.split_once('?').unwrap().1;
        let clock = Clock {
            now: 1_700_000_010,
            skew: 30,
            max_ttl: 86400,
        };
        for seg in [
            "/video/private/movie42/1080p/seg_1.m4s",
            "/video/private/movie42/master.m3u8",
        ] {
            assert!(
                native::verify(seg, query, &m.keys, None, clock).is_ok(),
                "{seg}"
            );
        }
        assert!(
            native::verify("/video/private/movie43/a.m4s", query, &m.keys, None, clock).is_err()
        );
        // URL paths and asset paths mint the same link.
        assert_eq!(
            m.mint(&req("/video/private/a.mp4", false), 1).unwrap(),
            m.mint(&req("private/a.mp4", false), 1).unwrap()
        );
    }

    #[test]
    fn native_cookies_grant_the_directory() {
        let m = minter();
        let mut r = req("private/movie42/master.m3u8", false);
        r.cookie = Some(CookieOptions {
            domain: Some("media.example".into()),
            same_site: SameSite::None,
        });
        let link = m.mint(&r, 1_700_000_000).unwrap();
        assert_eq!(
            link.url,
            "https://cdn.example/video/private/movie42/master.m3u8"
        );
        let [cookie] = link.set_cookie.as_slice() else {
            panic!("{:?}", link.set_cookie)
        };
        let (value, attrs) = cookie
            .strip_prefix("VO1=")
            .unwrap()
            .split_once("; ")
            .unwrap();
        assert_eq!(
            attrs,
            "Path=/video/private/movie42/; Max-Age=3600; Domain=media.example; Secure; HttpOnly; SameSite=None"
        );
        let clock = Clock {
            now: 1_700_000_010,
            skew: 30,
            max_ttl: 86400,
        };
        let seg = "/video/private/movie42/720p/seg_3.m4s";
        assert!(native::verify(seg, value, &m.keys, None, clock).is_ok());
        // Attribute injection through the domain is refused.
        r.cookie = Some(CookieOptions {
            domain: Some("x; Path=/".into()),
            same_site: SameSite::Lax,
        });
        assert!(m.mint(&r, 1).unwrap_err().starts_with("cookie_domain"));
        r.cookie = Some(CookieOptions::default());
        r.format = LinkFormat::Akamai;
        assert!(m.mint(&r, 1).unwrap_err().contains("native and cloudfront"));
    }

    #[test]
    fn limits() {
        let m = minter();
        let mut r = req("private/a.mp4", false);
        r.ttl_secs = 86401;
        assert!(m.mint(&r, 1).unwrap_err().contains("max_ttl"));
        r.ttl_secs = 0;
        assert!(m.mint(&r, 1).is_err());
        assert!(m.mint(&req("private/../x", false), 1).is_err());
        let mut r = req("a.mp4", false);
        r.format = LinkFormat::Cloudfront;
        assert!(m.mint(&r, 1).unwrap_err().contains("not configured"));
    }
}
