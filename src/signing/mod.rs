//! Signed playback links: token formats, keys, and the shared rules every verifier follows
//! (spec signed-urls §7, S-1..S-7).
//!
//! Pure except for nothing: callers pass `now`, the client address and the raw request target.
//! Verification returns a [`Rejection`] with a short reason class for the client and a detail
//! for the log; neither ever contains a token, a MAC or a key (S-5).
//!
//! - `native`: our VO1 format (HMAC-SHA256, key ids, exact or prefix scope, optional IP).
//! - `cloudflare`: the `is_timed_hmac_valid_v0` form, so Cloudflare's WAF can check links.
//! - `akamai`: EdgeAuth (Auth Token 2.0) tokens.
//! - `cloudfront`: CloudFront signed URLs (minting only; CloudFront verifies at the edge).

pub mod access;
pub mod akamai;
pub mod cloudflare;
pub mod cloudfront;
pub mod keys;
pub mod links;
pub mod native;

use std::net::IpAddr;

/// The reason class sent to a refused client (spec signed-urls §8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    WrongScope,
    /// An IP-bound token presented from another client address.
    WrongIp,
    NotYetValid,
    Expired,
}

impl Reason {
    /// Every refusal reason, for tables that must name them all (metrics).
    pub const ALL: [Reason; 8] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::WrongScope,
        Reason::WrongIp,
        Reason::NotYetValid,
        Reason::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown-key",
            Reason::BadSignature => "bad-signature",
            Reason::WrongScope => "wrong-scope",
            Reason::WrongIp => "wrong-ip",
            Reason::NotYetValid => "not-yet-valid",
            Reason::Expired => "expired",
        }
    }
}

/// A refused token: the class for the client, a detail for the log (never secret material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

pub(crate) fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::Malformed, detail)
}

/// Time facts for a verification.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: u64,
    pub skew: u64,
    /// Tokens may not outlive `now + max_ttl` (+skew); 0 disables the check.
    pub max_ttl: u64,
}

impl Clock {
    /// The one validity rule of every token form the origin verifies: valid from `start`
    /// (inclusive, when the form has one) until `exp` (exclusive), each end widened by `skew`;
    /// and no token may live longer than `max_ttl` (when set): `exp - start` where the form
    /// carries a start time, and always `exp - now` (so a long token minted elsewhere is refused
    /// even without a start time).
    pub fn check_window(&self, start: Option<u64>, exp: u64) -> Result<(), Rejection> {
        if let Some(st) = start {
            if self.now + self.skew < st {
                return Err(Rejection::new(
                    Reason::NotYetValid,
                    format!("starts at {st}, now {}", self.now),
                ));
            }
        }
        if self.now.saturating_sub(self.skew) >= exp {
            return Err(Rejection::new(
                Reason::Expired,
                format!("exp {exp}, now {}", self.now),
            ));
        }
        if self.max_ttl > 0 {
            let too_far = exp > self.now + self.max_ttl + self.skew;
            let too_long = start.is_some_and(|st| exp.saturating_sub(st) > self.max_ttl);
            if too_far || too_long {
                return Err(malformed(
                    "token lives longer than signing.max_ttl_secs allows",
                ));
            }
        }
        Ok(())
    }
}

/// Longest accepted token parameter value and query string (S-2).
pub const MAX_PARAM: usize = 1024;
pub const MAX_QUERY: usize = 8192;

/// Percent-decodes once; `+` stays a literal plus. `None` on a bad escape.
pub fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    crate::http::percent::decode_once(raw)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// Canonical path (spec signed-urls §8.3): decode once, require a leading `/`, refuse control
/// bytes, DEL, `\`, empty, `.` and `..` segments, then re-encode everything outside
/// `A-Za-z0-9-._~/` as uppercase `%XX`. `Err` = malformed.
pub fn canonical_path(raw: &str) -> Result<String, Rejection> {
    let bytes = percent_decode(raw).ok_or_else(|| malformed("bad percent-escape in path"))?;
    if bytes.first() != Some(&b'/') {
        return Err(malformed("path must start with /"));
    }
    if bytes.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(malformed("control byte or backslash in path"));
    }
    for seg in bytes[1..].split(|&b| b == b'/') {
        if matches!(seg, b"." | b"..") {
            return Err(malformed("dot segment in path"));
        }
    }
    // Empty segments: `//` anywhere. A trailing `/` (directory scope) is allowed.
    if bytes.windows(2).any(|w| w == b"//") {
        return Err(malformed("empty segment in path"));
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for &b in &bytes {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// Maps IPv4-mapped IPv6 to IPv4 (spec signed-urls §8.4).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The query's parameters as (name, raw value), split on `&`, not decoded. Refuses an
/// over-long query.
pub fn split_query(query: &str) -> Result<Vec<(&str, &str)>, Rejection> {
    if query.len() > MAX_QUERY {
        return Err(malformed("query string too long"));
    }
    Ok(query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect())
}

/// The single, decoded, UTF-8 value of parameter `name`; `Ok(None)` when absent. Duplicates,
/// oversize values, bad escapes and non-UTF-8 are malformed (S-2).
pub fn single_param(params: &[(&str, &str)], name: &str) -> Result<Option<String>, Rejection> {
    let mut found = None;
    for (k, v) in params {
        if *k == name {
            if found.is_some() {
                return Err(malformed(format!("parameter `{name}` given twice")));
            }
            if v.len() > MAX_PARAM {
                return Err(malformed(format!("parameter `{name}` too long")));
            }
            let bytes =
                percent_decode(v).ok_or_else(|| malformed(format!("bad escape in `{name}`")))?;
            let s = String::from_utf8(bytes)
                .map_err(|_| malformed(format!("`{name}` is not UTF-8")))?;
            found = Some(s);
        }
    }
    Ok(found)
}

/// The values of every cookie called `name` in `headers` (the request's `Cookie` field
/// values: one in HTTP/1.1, possibly several in HTTP/2), in order. Pairs are split on `;`, a
/// value in double quotes is unquoted (RFC 6265 §4.1.1); names match exactly.
pub fn cookie_values<'a>(
    headers: &'a [&'a str],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .flat_map(|h| h.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// Constant-time equality of two byte strings (S-1). Lengths are not secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_by_name() {
        let headers = [
            "a=1; VO1=exp=5&sig=x; VO1x=no",
            "VO1=\"q=1\"",
            "broken; VO1 = y ",
        ];
        let got: Vec<&str> = cookie_values(&headers, "VO1").collect();
        assert_eq!(got, ["exp=5&sig=x", "q=1", "y"]);
        assert_eq!(cookie_values(&[], "VO1").count(), 0);
    }

    #[test]
    fn canonical_paths() {
        // spec: signed-urls §8.3
        for raw in ["/a b/clé.mp4", "/a%20b/cl%C3%A9.mp4", "/a%20b/cl%c3%a9.mp4"] {
            assert_eq!(canonical_path(raw).unwrap(), "/a%20b/cl%C3%A9.mp4", "{raw}");
        }
        assert_eq!(
            canonical_path("/a+b").unwrap(),
            "/a%2Bb",
            "+ is a literal plus"
        );
        assert_eq!(canonical_path("/dir/").unwrap(), "/dir/");
        for bad in [
            "a",
            "/%2e%2e/x",
            "/a/../b",
            "/a/./b",
            "//a",
            "/a//b",
            "/a%5cb",
            "/a%00",
            "/%zz",
            "/%4",
        ] {
            assert_eq!(
                canonical_path(bad).unwrap_err().reason,
                Reason::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn params() {
        let q = split_query("exp=1&kid=k1&sig=x&other&sig2=%41").unwrap();
        assert_eq!(single_param(&q, "kid").unwrap().as_deref(), Some("k1"));
        assert_eq!(single_param(&q, "sig2").unwrap().as_deref(), Some("A"));
        assert_eq!(single_param(&q, "nbf").unwrap(), None);
        let dup = split_query("kid=a&kid=a").unwrap();
        assert_eq!(
            single_param(&dup, "kid").unwrap_err().reason,
            Reason::Malformed
        );
        let bad = split_query("kid=%ff").unwrap();
        assert_eq!(
            single_param(&bad, "kid").unwrap_err().reason,
            Reason::Malformed
        );
        let long = format!("kid={}", "a".repeat(MAX_PARAM + 1));
        assert!(single_param(&split_query(&long).unwrap(), "kid").is_err());
        assert!(split_query(&"a".repeat(MAX_QUERY + 1)).is_err());
    }

    #[test]
    fn every_refusal_reason_has_a_metric_series_from_start() {
        for r in Reason::ALL {
            assert!(
                crate::observe::metrics::TOKEN_RESULTS.contains(&r.as_str()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn mapped_ipv4() {
        let m: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(canonical_ip(m).to_string(), "203.0.113.7");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }
}

/// The property of the cargo-fuzz target (fuzz/fuzz_targets/token_parser.rs), run on every
/// `cargo test`: any request target, random or shaped like a signed link, gets a clean accept
/// or a reason from every token parser, never a panic (spec signed-urls §7 S-2).
#[cfg(test)]
mod parser_properties {
    use super::keys::KeyRing;
    use super::{akamai, canonical_path, cloudflare, native, Clock};
    use proptest::prelude::*;

    fn every_parser(path: &str, query: &str, salt: usize) {
        let keys = KeyRing::new(vec![("k1".into(), vec![1u8; 32])], Some("k1".into())).unwrap();
        let clock = Clock {
            now: 1_700_000_000,
            skew: 30,
            max_ttl: 86_400,
        };
        let _ = native::verify(path, query, &keys, None, clock);
        let rule = cloudflare::CloudflareRule {
            ttl: 60,
            url_safe: salt.is_multiple_of(2),
            prefix_len: Some(salt % 40),
        };
        let _ = cloudflare::verify(path, query, &[vec![2u8; 32]], &rule, clock);
        let _ = akamai::verify(
            query,
            path,
            &[vec![3u8; 16]],
            akamai::Algorithm::Sha256,
            Some("127.0.0.1"),
            clock,
        );
        let _ = canonical_path(path);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_text(text in "\\PC{0,400}", salt in 0usize..100) {
            let (path, query) = text.split_once('?').unwrap_or((&text, ""));
            every_parser(path, query, salt);
        }

        #[test]
        fn link_shaped(
            path in "(/[a-zA-Z0-9%._~-]{0,16}){0,5}",
            params in proptest::collection::vec(
                ("(vo|exp|kid|sig|ip|pfx|verify|hdnts|st|exp|acl|hmac|data|[a-z]{1,6})",
                 "[A-Za-z0-9%~._:=!*/,+-]{0,80}"),
                0..7,
            ),
            salt in 0usize..100,
        ) {
            let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            every_parser(&path, &query.join("&"), salt);
        }
    }
}
