//! Invalidation paths: validated against CloudFront's rules and mapped from asset paths to the
//! public URL paths the CDN caches (pure).
//!
//! Rules: at least one path, at most `max` per request; each starts with `/` (an asset path such
//! as `/a.mp4` or `series/*` is mapped under the mount, e.g. `/video/a.mp4`); `*` only as the
//! last character (CloudFront's wildcard rule); no whitespace or control characters; at most
//! 4,000 characters. Duplicates are dropped (CloudFront bills per path).

pub const MAX_PATH_LEN: usize = 4000;

/// Maps and validates; the error names the offending path and the rule.
pub fn to_cdn_paths(input: &[String], mount: &str, max: usize) -> Result<Vec<String>, String> {
    if input.is_empty() {
        return Err("paths: give at least one path".into());
    }
    if input.len() > max {
        return Err(format!(
            "paths: {} given, at most {max} per request",
            input.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(input.len());
    for p in input {
        let p = p.as_str();
        if p.is_empty() {
            return Err("paths: empty path".into());
        }
        if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "paths: `{p}` contains whitespace or control characters (URL-encode them)"
            ));
        }
        if let Some(i) = p.find('*') {
            if i != p.len() - 1 {
                return Err(format!(
                    "paths: `{p}`: `*` is only allowed as the last character"
                ));
            }
        }
        let mount_slash = format!("{mount}/");
        let mapped = if p.starts_with(&mount_slash) || p == "/*" && mount.is_empty() {
            p.to_owned()
        } else {
            format!("{mount}/{}", p.trim_start_matches('/'))
        };
        if mapped.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!("paths: `{p}` has a dot segment"));
        }
        if mapped.len() > MAX_PATH_LEN {
            return Err(format!(
                "paths: `{}…` is longer than {MAX_PATH_LEN} characters",
                &p[..40.min(p.len())]
            ));
        }
        if !out.contains(&mapped) {
            out.push(mapped);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(paths: &[&str]) -> Result<Vec<String>, String> {
        to_cdn_paths(
            &paths.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "/video",
            5,
        )
    }

    #[test]
    fn maps_asset_paths_under_the_mount() {
        assert_eq!(
            v(&["/video/a.mp4", "/video/series/*"]).unwrap(),
            ["/video/a.mp4", "/video/series/*"]
        );
        assert_eq!(
            v(&["a.mp4", "/series/*", "/a.mp4"]).unwrap(),
            ["/video/a.mp4", "/video/series/*"]
        );
        assert_eq!(v(&["*"]).unwrap(), ["/video/*"]);
    }

    #[test]
    fn rejects_with_reasons() {
        for (paths, why) in [
            (vec![], "at least one"),
            (vec!["/a*b"], "last character"),
            (vec!["/a b.mp4"], "whitespace"),
            (vec!["/a/../b"], "dot segment"),
            (vec!["a", "b", "c", "d", "e", "f"], "at most 5"),
            (vec![""], "empty"),
        ] {
            let e = v(&paths).unwrap_err();
            assert!(e.contains(why), "{paths:?}: {e}");
        }
        let long = "/".to_string() + &"a".repeat(MAX_PATH_LEN);
        assert!(to_cdn_paths(&[long], "/video", 5)
            .unwrap_err()
            .contains("longer"));
    }
}
