//! Which paths need a signed link, and checking it (step 1 of the pipeline, before the file is
//! even looked up, so a refused request learns nothing about what exists).
//!
//! Rules are globs on the asset path, first match wins. A rule lists the token forms the origin
//! accepts (`native`, `cloudflare`, `akamai`); any one valid token admits the request. With
//! `edge_verified = false` (the default) responses are forced to `Cache-Control: private,
//! no-store` so no shared cache can hand a verified response to an unverified viewer (spec
//! http-origin K-1); `edge_verified = true` says the CDN checks tokens and keys its cache
//! without them, so the cache rules apply unchanged.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::http::glob::Glob;
use crate::signing::akamai;
use crate::signing::cloudflare::{self, CloudflareRule};
use crate::signing::keys::KeyRing;
use crate::signing::{cookie_values, native, single_param, split_query, Clock, Reason, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenForm {
    Native,
    Cloudflare,
    Akamai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRuleConfig {
    #[serde(rename = "match")]
    pub pattern: String,
    /// Token forms the origin verifies; empty = the origin does not check (edge only).
    #[serde(default = "default_tokens")]
    pub tokens: Vec<TokenForm>,
    #[serde(default)]
    pub edge_verified: bool,
}

fn default_tokens() -> Vec<TokenForm> {
    vec![TokenForm::Native]
}

struct AccessRule {
    glob: Glob,
    tokens: Vec<TokenForm>,
    edge_verified: bool,
}

pub struct CloudflareCheck {
    pub secrets: Vec<Vec<u8>>,
    pub rule: CloudflareRule,
}

pub struct AkamaiCheck {
    pub keys: Vec<Vec<u8>>,
    pub algorithm: akamai::Algorithm,
    pub param: String,
}

pub struct AccessPolicy {
    rules: Vec<AccessRule>,
    pub keys: KeyRing,
    pub cloudflare: Option<CloudflareCheck>,
    pub akamai: Option<AkamaiCheck>,
    pub skew: u64,
    pub max_ttl: u64,
    warnings: Vec<String>,
}

/// A request that passed (or needed no check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Admitted by a token; `edge_verified` decides the cache policy.
    Granted {
        edge_verified: bool,
    },
}

/// The request facts a token is checked against.
pub struct TokenRequest<'a> {
    /// URL path exactly as received (still percent-encoded).
    pub raw_path: &'a str,
    pub query: &'a str,
    pub client: Option<IpAddr>,
    pub now: u64,
    /// The request's `Cookie` field values (VO1 tokens may come as a cookie).
    pub cookies: &'a [&'a str],
}

/// Checks what a rule list can be checked for without keys: globs compile, and a rule that
/// makes the origin skip verification says the edge verifies. Errors are (index, reason).
pub fn check_rules(rules: &[AccessRuleConfig]) -> Result<(), (usize, String)> {
    for (i, r) in rules.iter().enumerate() {
        Glob::new(&r.pattern).map_err(|e| (i, format!("match: {e}")))?;
        if r.tokens.is_empty() && !r.edge_verified {
            return Err((i, "tokens = [] means the origin does not check; that is only safe with edge_verified = true".into()));
        }
    }
    Ok(())
}

/// One line saying what needs a token and what is public, in rule order.
pub fn summary(rules: &[AccessRuleConfig]) -> String {
    if rules.is_empty() {
        return "every path is public (no access rules)".into();
    }
    let parts: Vec<String> = rules
        .iter()
        .map(|r| {
            if r.tokens.is_empty() {
                format!("`{}` checked by the CDN only", r.pattern)
            } else {
                let forms: Vec<&str> = r.tokens.iter().map(|t| t.as_str()).collect();
                format!("`{}` needs a {} token", r.pattern, forms.join(" or "))
            }
        })
        .collect();
    format!("{}; every other path is public", parts.join(", "))
}

impl TokenForm {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenForm::Native => "native",
            TokenForm::Cloudflare => "cloudflare",
            TokenForm::Akamai => "akamai",
        }
    }
}

impl AccessPolicy {
    pub fn compile(
        rules: &[AccessRuleConfig],
        keys: KeyRing,
        cloudflare: Option<CloudflareCheck>,
        akamai: Option<AkamaiCheck>,
        skew: u64,
        max_ttl: u64,
    ) -> Result<AccessPolicy, (usize, String)> {
        check_rules(rules)?;
        let mut compiled = Vec::new();
        let mut warnings = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let glob = Glob::new(&r.pattern).map_err(|e| (i, format!("match: {e}")))?;
            for t in &r.tokens {
                let missing = match t {
                    TokenForm::Native => keys.is_empty().then_some("signing.keys"),
                    TokenForm::Cloudflare => {
                        cloudflare.is_none().then_some("signing.cloudflare.secrets")
                    }
                    TokenForm::Akamai => akamai.is_none().then_some("signing.akamai.keys"),
                };
                if let Some(what) = missing {
                    // Not fatal: requests to the path are refused (unknown-key) until keys exist.
                    warnings.push(format!(
                        "access.rules[{i}] (`{}`) accepts {} tokens but {what} is empty: every request to it will be refused",
                        r.pattern,
                        t.as_str()
                    ));
                }
            }
            compiled.push(AccessRule {
                glob,
                tokens: r.tokens.clone(),
                edge_verified: r.edge_verified,
            });
        }
        Ok(AccessPolicy {
            rules: compiled,
            keys,
            cloudflare,
            akamai,
            skew,
            max_ttl,
            warnings,
        })
    }

    /// Problems found at compile time that do not stop the server.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether any rule covers `asset` (signing a path no rule protects is allowed, but odd).
    pub fn protects(&self, asset: &str) -> bool {
        self.rules.iter().any(|r| r.glob.is_match(asset))
    }

    /// The scope of a valid VO1 prefix token in `req` (canonical, ends with `/`), and the
    /// token's own parameters as they came (`exp`, `nbf`, `kid`, `scope`, `ip`, `sig`, in
    /// request order): what a playlist served under that scope passes on to its URIs.
    pub fn native_prefix(&self, req: &TokenRequest<'_>) -> Option<(String, String)> {
        let clock = self.clock(req);
        let claims = native::verify(req.raw_path, req.query, &self.keys, req.client, clock).ok()?;
        let scope = claims.prefix?;
        let token: Vec<&str> = req
            .query
            .split('&')
            .filter(|p| {
                let name = p.split('=').next().unwrap_or("");
                matches!(name, "exp" | "nbf" | "kid" | "scope" | "ip" | "sig")
            })
            .collect();
        Some((scope, token.join("&")))
    }

    /// The covering `*` entry of a valid Akamai ACL token in `req` (its prefix), and the
    /// token parameter as it came: the Akamai form of [`Self::native_prefix`].
    pub fn akamai_prefix(&self, req: &TokenRequest<'_>) -> Option<(String, String)> {
        let ak = self.akamai.as_ref()?;
        let token = self.akamai_token(req, self.clock(req)).ok()?;
        let acl = token
            .split('~')
            .find_map(|field| field.strip_prefix("acl="))?;
        let prefix = acl
            .split('!')
            .filter_map(|entry| entry.strip_suffix('*'))
            .find(|prefix| req.raw_path.starts_with(prefix))?;
        Some((prefix.to_owned(), format!("{}={token}", ak.param)))
    }

    fn clock(&self, req: &TokenRequest<'_>) -> Clock {
        Clock {
            now: req.now,
            skew: self.skew,
            max_ttl: self.max_ttl,
        }
    }

    /// The request's VO1 token, verified. One rule for a request that may carry it twice: a
    /// query with any VO1 parameter is judged alone (as CloudFront lets a signed URL take
    /// precedence over cookies); otherwise each `VO1` cookie is tried and any valid one admits,
    /// else the first one's refusal stands. Both forms sign and check the same string.
    fn native(&self, req: &TokenRequest<'_>, clock: Clock) -> Result<native::Claims, Rejection> {
        let verify = |q: &str| native::verify(req.raw_path, q, &self.keys, req.client, clock);
        if native::present(req.query) {
            return verify(req.query);
        }
        let mut first = None;
        for value in cookie_values(req.cookies, native::COOKIE) {
            match verify(value) {
                Ok(claims) => return Ok(claims),
                Err(r) => {
                    first.get_or_insert(r);
                }
            }
        }
        match first {
            Some(r) => Err(r),
            None => verify(req.query),
        }
    }

    /// The request's Akamai token, verified.
    fn akamai_token<'r>(&self, req: &TokenRequest<'r>, clock: Clock) -> Result<&'r str, Rejection> {
        let Some(ak) = &self.akamai else {
            return Err(Rejection::new(
                Reason::UnknownKey,
                "no akamai key configured",
            ));
        };
        let params = split_query(req.query)?;
        let Some(token) = raw_single(&params, &ak.param)? else {
            return Err(Rejection::new(Reason::Missing, "no akamai token"));
        };
        let client = req.client.map(|c| c.to_string());
        akamai::verify(
            token,
            req.raw_path,
            &ak.keys,
            ak.algorithm,
            client.as_deref(),
            clock,
        )?;
        Ok(token)
    }

    /// Checks the request for `asset` (normalized asset path).
    pub fn check(&self, asset: &str, req: &TokenRequest<'_>) -> Result<Access, Rejection> {
        let Some(rule) = self.rules.iter().find(|r| r.glob.is_match(asset)) else {
            return Ok(Access::Public);
        };
        let granted = Access::Granted {
            edge_verified: rule.edge_verified,
        };
        if rule.tokens.is_empty() {
            return Ok(granted);
        }
        let clock = self.clock(req);
        // Try each accepted form that the request carries; report the most telling refusal.
        let mut best: Option<Rejection> = None;
        for form in &rule.tokens {
            let result = match form {
                TokenForm::Native => self.native(req, clock).map(|_| ()),
                TokenForm::Cloudflare => match &self.cloudflare {
                    Some(cf) => {
                        cloudflare::verify(req.raw_path, req.query, &cf.secrets, &cf.rule, clock)
                    }
                    None => Err(Rejection::new(
                        Reason::UnknownKey,
                        "no cloudflare secret configured",
                    )),
                },
                TokenForm::Akamai => self.akamai_token(req, clock).map(|_| ()),
            };
            match result.map(|_| ()) {
                Ok(()) => return Ok(granted),
                Err(r) => {
                    if best.as_ref().is_none_or(|b| b.reason == Reason::Missing) {
                        best = Some(r);
                    }
                }
            }
        }
        Err(best.unwrap_or_else(|| Rejection::new(Reason::Missing, "no token")))
    }
}

/// The raw (undecoded) single value of `name`: Akamai tokens are carried verbatim.
fn raw_single<'a>(params: &[(&'a str, &'a str)], name: &str) -> Result<Option<&'a str>, Rejection> {
    // Reuse the duplicate/length/encoding checks, then hand back the raw value.
    single_param(params, name)?;
    Ok(params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: Vec<AccessRuleConfig>) -> AccessPolicy {
        let keys = KeyRing::new(vec![("k1".into(), vec![3; 32])], Some("k1".into())).unwrap();
        AccessPolicy::compile(&rules, keys, None, None, 30, 0).unwrap()
    }

    fn rule(p: &str) -> AccessRuleConfig {
        AccessRuleConfig {
            pattern: p.into(),
            tokens: vec![TokenForm::Native],
            edge_verified: false,
        }
    }

    fn req<'a>(path: &'a str, query: &'a str) -> TokenRequest<'a> {
        TokenRequest {
            raw_path: path,
            query,
            client: None,
            now: 1_700_000_000,
            cookies: &[],
        }
    }

    #[test]
    fn public_paths_ignore_tokens() {
        let p = policy(vec![rule("private/**")]);
        assert_eq!(
            p.check("public/a.mp4", &req("/video/public/a.mp4", "sig=garbage")),
            Ok(Access::Public)
        );
        let e = p
            .check("private/a.mp4", &req("/video/private/a.mp4", ""))
            .unwrap_err();
        assert_eq!(e.reason, Reason::Missing);
    }

    #[test]
    fn granted_with_a_valid_token() {
        let p = policy(vec![rule("private/**")]);
        let (_, q) = native::mint(
            "k1",
            &[3; 32],
            &native::MintRequest {
                path: "/video/private/a.mp4".into(),
                exp: 1_700_000_600,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            p.check("private/a.mp4", &req("/video/private/a.mp4", &q)),
            Ok(Access::Granted {
                edge_verified: false
            })
        );
        assert_eq!(
            p.check("private/b.mp4", &req("/video/private/b.mp4", &q))
                .unwrap_err()
                .reason,
            Reason::BadSignature
        );
    }

    fn prefix_token(scope: &str) -> String {
        native::mint(
            "k1",
            &[3; 32],
            &native::MintRequest {
                path: format!("{scope}master.m3u8"),
                exp: 1_700_000_600,
                scope: Some(scope.into()),
                ..Default::default()
            },
        )
        .unwrap()
        .1
    }

    #[test]
    fn a_vo1_cookie_admits_like_the_query_and_the_query_takes_precedence() {
        let p = policy(vec![rule("private/**")]);
        let token = prefix_token("/video/private/m42/");
        let cookie = format!("theme=dark; VO1={token}");
        let cookies = [cookie.as_str()];
        let with = |path: &'static str, query: &'static str| TokenRequest {
            cookies: &cookies,
            ..req(path, query)
        };
        let granted = Ok(Access::Granted {
            edge_verified: false,
        });
        assert_eq!(
            p.check(
                "private/m42/v/seg1.m4s",
                &with("/video/private/m42/v/seg1.m4s", "")
            ),
            granted
        );
        // Same refusal reasons as the query form: outside the scope, the MAC does not match.
        let outside = p
            .check("private/m420/a.m4s", &with("/video/private/m420/a.m4s", ""))
            .unwrap_err();
        assert_ne!(outside.reason, Reason::Missing);
        // A query carrying VO1 parameters is judged alone, even next to a valid cookie.
        let forged = format!("exp=1700000600&kid=k1&sig={}", "A".repeat(43));
        let e = p
            .check(
                "private/m42/a.m4s",
                &TokenRequest {
                    cookies: &cookies,
                    ..req("/video/private/m42/a.m4s", &forged)
                },
            )
            .unwrap_err();
        assert_eq!(e.reason, Reason::BadSignature);
        // Other query parameters leave the cookie in charge.
        assert_eq!(
            p.check(
                "private/m42/a.m4s",
                &with("/video/private/m42/a.m4s", "t=5")
            ),
            granted
        );
        // One valid cookie among several admits; a lone bad one gives its own reason.
        let expired = "VO1=exp=1&kid=k1&sig=AAAA".to_string();
        let two = [expired.as_str(), cookie.as_str()];
        let both = TokenRequest {
            cookies: &two,
            ..req("/video/private/m42/a.m4s", "")
        };
        assert_eq!(p.check("private/m42/a.m4s", &both), granted);
        let one = [expired.as_str()];
        let bad = TokenRequest {
            cookies: &one,
            ..req("/video/private/m42/a.m4s", "")
        };
        assert_ne!(
            p.check("private/m42/a.m4s", &bad).unwrap_err().reason,
            Reason::Missing
        );
    }

    #[test]
    fn origin_must_check_unless_edge_does() {
        let keys = KeyRing::default();
        let r = AccessRuleConfig {
            pattern: "p/**".into(),
            tokens: vec![],
            edge_verified: false,
        };
        assert!(AccessPolicy::compile(&[r], keys, None, None, 30, 0).is_err());
    }
}
