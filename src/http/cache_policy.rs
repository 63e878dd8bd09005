//! Cache policy: which caching headers a response carries.
//!
//! For now one policy for every served file plus one for 404s; errors that must never be
//! stored (403, 412, 416, 503) are `no-store` regardless (spec http-origin H-20). Values are
//! checked at load (H-1) so a typo fails at startup, not silently at the CDN.

use http::header::{self, HeaderName, HeaderValue};

#[derive(Debug, Clone)]
pub struct CachePolicy {
    success: Vec<(HeaderName, HeaderValue)>,
    not_found: HeaderValue,
}

impl CachePolicy {
    /// `file_cache_control` goes on 200/206/304 of every file; `not_found_cache_control` on 404.
    pub fn new(file_cache_control: &str, not_found_cache_control: &str) -> Result<Self, String> {
        validate_cache_control(file_cache_control)?;
        validate_cache_control(not_found_cache_control)?;
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
        Ok(CachePolicy {
            success: vec![(header::CACHE_CONTROL, value(file_cache_control)?)],
            not_found: value(not_found_cache_control)?,
        })
    }

    /// Headers for a file that is served (200, 206, 304, HEAD alike: H-21).
    pub fn for_file(&self, _asset_path: &str) -> &[(HeaderName, HeaderValue)] {
        &self.success
    }

    pub fn not_found(&self) -> &HeaderValue {
        &self.not_found
    }
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
        // spec: http-origin H-1, H-7, H-9
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
        ];
        for (value, reason) in cases {
            let err = validate_cache_control(value).unwrap_err();
            assert!(err.contains(reason), "{value}: {err}");
        }
    }
}
