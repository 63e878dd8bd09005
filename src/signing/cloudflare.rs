//! Cloudflare WAF `is_timed_hmac_valid_v0` tokens (spec signed-urls §1), so a Cloudflare rule
//! can refuse bad links before they reach the cache or the origin, and the origin agrees.
//!
//! URL shape: `<path>?verify=<issue time, 10 digits>-<mac>`, `verify` the last parameter.
//! mac = HMAC-SHA256(secret, message ‖ timestamp); message = the raw path (with any parameters
//! before `verify`), or, for directory scope, the first `prefix_len` bytes of the path.
//! The MAC is base64 with padding, percent-encoded; or with flag `s`, base64url without padding.
//! Valid while `now < timestamp + ttl` (Cloudflare's formula); a timestamp from the future
//! beyond the skew is refused.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::{ct_eq, hmac_sha256, malformed, percent_decode, Reason, Rejection, MAX_QUERY};

/// How the rule on the Cloudflare side is written.
#[derive(Debug, Clone)]
pub struct CloudflareRule {
    pub ttl: u64,
    /// Flag `s`: MAC in base64url without padding.
    pub url_safe: bool,
    /// Directory scope: `substring(http.request.uri.path, 0, N)` with separator length 8.
    pub prefix_len: Option<usize>,
}

fn encode_mac(mac: &[u8; 32], url_safe: bool) -> String {
    if url_safe {
        URL_SAFE_NO_PAD.encode(mac)
    } else {
        // b64 then form-encoding of `+`, `/`, `=` (quote_plus), as Cloudflare's samples do.
        STANDARD
            .encode(mac)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    }
}

/// Mints `verify=<ts>-<mac>` for `message` (the raw path, or its scope prefix).
pub fn mint(secret: &[u8], message: &str, issued: u64, url_safe: bool) -> String {
    let mac = hmac_sha256(secret, format!("{message}{issued:010}").as_bytes());
    format!("verify={issued:010}-{}", encode_mac(&mac, url_safe))
}

/// Verifies the raw request target (`path` and `query` as received) against any of `secrets`.
pub fn verify(
    path: &str,
    query: &str,
    secrets: &[Vec<u8>],
    rule: &CloudflareRule,
    clock: super::Clock,
) -> Result<(), Rejection> {
    if query.len() > MAX_QUERY {
        return Err(malformed("query string too long"));
    }
    let Some(idx) = query.rfind("verify=") else {
        return Err(Rejection::new(Reason::Missing, "no verify parameter"));
    };
    if idx > 0 && query.as_bytes()[idx - 1] != b'&' {
        return Err(Rejection::new(Reason::Missing, "no verify parameter"));
    }
    if query.matches("verify=").count() > 1 {
        return Err(malformed("verify given twice"));
    }
    let token = &query[idx + "verify=".len()..];
    if token.contains('&') {
        return Err(malformed("verify must be the last parameter"));
    }
    let (ts, mac_text) = token
        .split_once('-')
        .ok_or_else(|| malformed("verify needs <ts>-<mac>"))?;
    if ts.len() != 10 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("verify timestamp must be 10 digits"));
    }
    let issued: u64 = ts.parse().map_err(|_| malformed("bad timestamp"))?;
    let mac = if rule.url_safe {
        URL_SAFE_NO_PAD.decode(mac_text)
    } else {
        let decoded = percent_decode(mac_text).ok_or_else(|| malformed("bad escape in mac"))?;
        STANDARD.decode(decoded)
    }
    .map_err(|_| malformed("mac is not base64"))?;
    if mac.len() != 32 {
        return Err(malformed("mac must be 32 bytes"));
    }
    // message = everything before the 8-byte separator (`?verify=` or `&verify=`).
    let message = match rule.prefix_len {
        Some(n) => {
            let prefix = path
                .get(..n)
                .ok_or_else(|| Rejection::new(Reason::WrongScope, "path shorter than scope"))?;
            // Parameters before `verify` are part of MessageMAC after the "?".
            let before = &query[..idx];
            format!(
                "{prefix}{}",
                if before.is_empty() {
                    String::new()
                } else {
                    format!("?{}", &before[..before.len() - 1])
                }
            )
        }
        None if idx == 0 => path.to_owned(),
        None => format!("{path}?{}", &query[..idx - 1]),
    };
    let signed = format!("{message}{ts}");
    if !secrets
        .iter()
        .any(|s| ct_eq(&hmac_sha256(s, signed.as_bytes()), &mac))
    {
        return Err(Rejection::new(Reason::BadSignature, "cloudflare token"));
    }
    // The token's window is its issue time plus the rule's TTL (spec signed-urls §1.3).
    clock.check_window(Some(issued), issued + rule.ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"mysecretmysecretmysecretmysecret";

    #[test]
    fn vectors_mint() {
        // spec: signed-urls §1.5 CF-1..CF-5
        assert_eq!(
            mint(b"mysecrettoken", "/images/cat.jpg", 1484063787, false),
            "verify=1484063787-XsZ5NmtNBxOd4f4fBOtqVmpWRnDRNkHKVZieqDPKu3U%3D"
        );
        assert_eq!(
            mint(S, "/video/private/cat.mp4", 1484063787, false),
            "verify=1484063787-Z77xXCZoGJSBZlsbBhkPPziflaCPsQGz6JjtW16nF%2Fc%3D"
        );
        assert_eq!(
            mint(
                S,
                "/video/private/series/ep1/seg_001.m4s",
                1700000000,
                false
            ),
            "verify=1700000000-CUAFkcwjpo6K%2F7Khb8SYk3mKdlq2vWmSP3LlIlkI0Qc%3D"
        );
        assert_eq!(
            mint(S, "/video/private/movie42/", 1700000000, false),
            "verify=1700000000-ns4A7cmq8lv4KtLgJruCo9mnKXdBD%2B%2Beui6T5AmoTgs%3D"
        );
        assert_eq!(
            mint(S, "/video/private/cat.mp4", 1484063787, true),
            "verify=1484063787-Z77xXCZoGJSBZlsbBhkPPziflaCPsQGz6JjtW16nF_c"
        );
    }

    fn rule(ttl: u64) -> CloudflareRule {
        CloudflareRule {
            ttl,
            url_safe: false,
            prefix_len: None,
        }
    }

    #[test]
    fn vectors_verify() {
        let secrets = vec![b"other-secret-other-secret-other!!".to_vec(), S.to_vec()];
        let ok = |path: &str, q: &str, r: &CloudflareRule, now| {
            let clock = crate::signing::Clock {
                now,
                skew: 30,
                max_ttl: 0,
            };
            verify(path, q, &secrets, r, clock).map_err(|e| e.reason)
        };
        let q2 = "verify=1484063787-Z77xXCZoGJSBZlsbBhkPPziflaCPsQGz6JjtW16nF%2Fc%3D";
        assert_eq!(
            ok("/video/private/cat.mp4", q2, &rule(3600), 1484063787 + 10),
            Ok(())
        );
        // The one window rule of every form: exclusive at ts + ttl, widened by the skew.
        assert_eq!(
            ok(
                "/video/private/cat.mp4",
                q2,
                &rule(3600),
                1484063787 + 3600 + 29
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                "/video/private/cat.mp4",
                q2,
                &rule(3600),
                1484063787 + 3600 + 30
            ),
            Err(Reason::Expired)
        );
        assert_eq!(
            ok("/video/private/cat.mp4", q2, &rule(3600), 1484063787 - 100),
            Err(Reason::NotYetValid)
        );
        assert_eq!(
            ok("/video/private/dog.mp4", q2, &rule(3600), 1484063787),
            Err(Reason::BadSignature)
        );
        assert_eq!(
            ok("/video/private/cat.mp4", "", &rule(3600), 1),
            Err(Reason::Missing)
        );
        assert_eq!(
            ok("/video/private/cat.mp4", "verify=123-abc", &rule(3600), 1),
            Err(Reason::Malformed)
        );
        assert_eq!(
            ok(
                "/video/private/cat.mp4",
                &format!("{q2}&{q2}"),
                &rule(3600),
                1
            ),
            Err(Reason::Malformed)
        );
        // CF-4: directory scope with a 23-byte prefix.
        let dir = CloudflareRule {
            ttl: 3600,
            url_safe: false,
            prefix_len: Some(23),
        };
        let q4 = "verify=1700000000-ns4A7cmq8lv4KtLgJruCo9mnKXdBD%2B%2Beui6T5AmoTgs%3D";
        assert_eq!(
            ok("/video/private/movie42/seg_7.m4s", q4, &dir, 1700000001),
            Ok(())
        );
        assert_eq!(
            ok("/video/private/movie43/seg_7.m4s", q4, &dir, 1700000001),
            Err(Reason::BadSignature)
        );
        // CF-5: flag s.
        let s = CloudflareRule {
            ttl: 3600,
            url_safe: true,
            prefix_len: None,
        };
        assert_eq!(
            ok(
                "/video/private/cat.mp4",
                "verify=1484063787-Z77xXCZoGJSBZlsbBhkPPziflaCPsQGz6JjtW16nF_c",
                &s,
                1484063787
            ),
            Ok(())
        );
        // Parameters before verify are signed too.
        let q = format!("x=1&{}", mint(S, "/a.mp4?x=1", 1700000000, false));
        assert_eq!(ok("/a.mp4", &q, &rule(60), 1700000000), Ok(()));
        assert_eq!(
            ok("/a.mp4", &q.replace("x=1", "x=2"), &rule(60), 1700000000),
            Err(Reason::BadSignature)
        );
    }
}
