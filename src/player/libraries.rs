//! The player libraries the page may load for HLS and DASH (`player.hls_js`, `player.dash_js`):
//! a local file read once at startup and served by the origin, or an `https://` URL pinned by
//! its Subresource Integrity value. Nothing is loaded from another host unless configured.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha384};

use crate::config::PlayerSettings;

/// Where the page finds a library, and what the origin serves for a local one.
#[derive(Debug, Clone)]
pub struct Library {
    /// What the page's `<script src>` gets: `/player/.lib/hls.js?v=…` or the configured URL.
    pub src: String,
    /// The `integrity` attribute (`sha384-…`).
    pub integrity: String,
    /// The file's bytes, for a local library (served at [`Library::path`]).
    pub body: Option<bytes::Bytes>,
    /// `/player/.lib/<name>`: dotfiles are never assets, so this cannot shadow a video.
    pub path: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct Libraries {
    pub hls: Option<Library>,
    pub dash: Option<Library>,
}

/// `sha384-<base64>` of `bytes`, as browsers check `integrity`.
pub fn integrity_of(bytes: &[u8]) -> String {
    format!("sha384-{}", STANDARD.encode(Sha384::digest(bytes)))
}

impl Libraries {
    /// Reads the configured libraries. Errors are (key, reason).
    pub fn load(p: &PlayerSettings) -> Result<Libraries, (&'static str, String)> {
        Ok(Libraries {
            hls: load_one(
                "player.hls_js",
                &p.hls_js,
                &p.hls_js_integrity,
                "/player/.lib/hls.js",
            )?,
            dash: load_one(
                "player.dash_js",
                &p.dash_js,
                &p.dash_js_integrity,
                "/player/.lib/dash.js",
            )?,
        })
    }

    /// The local library served at `path`, if any.
    pub fn served(&self, path: &str) -> Option<&Library> {
        [&self.hls, &self.dash]
            .into_iter()
            .flatten()
            .find(|l| l.body.is_some() && l.path == path)
    }

    /// Script sources for the page's Content-Security-Policy (`'self'` covers local files).
    pub fn script_sources(&self) -> String {
        let mut out = String::new();
        for lib in [&self.hls, &self.dash].into_iter().flatten() {
            let source = if lib.body.is_some() {
                "'self'".to_string()
            } else {
                origin_of(&lib.src)
            };
            if !out.split(' ').any(|s| s == source) {
                out.push(' ');
                out.push_str(&source);
            }
        }
        out
    }
}

/// `https://host[:port]` of a URL (for CSP).
fn origin_of(url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("https://{host}")
}

fn load_one(
    key: &'static str,
    src: &str,
    integrity: &str,
    path: &'static str,
) -> Result<Option<Library>, (&'static str, String)> {
    if src.is_empty() {
        return Ok(None);
    }
    if src.starts_with("https://") {
        // Config validation made the integrity value required and well-formed.
        return Ok(Some(Library {
            src: src.to_owned(),
            integrity: integrity.to_owned(),
            body: None,
            path,
        }));
    }
    let bytes = std::fs::read(src).map_err(|e| (key, format!("cannot read `{src}`: {e}")))?;
    let computed = integrity_of(&bytes);
    if let Some((alg, _)) = integrity.split_once('-') {
        let actual = match alg {
            "sha256" => format!("sha256-{}", STANDARD.encode(sha2::Sha256::digest(&bytes))),
            "sha512" => format!("sha512-{}", STANDARD.encode(sha2::Sha512::digest(&bytes))),
            _ => computed.clone(),
        };
        if integrity != actual {
            return Err((
                key,
                format!("`{src}` does not match its integrity value (the file is {actual})"),
            ));
        }
    }
    // The digest in the URL changes with the file, so browsers and CDNs may keep it forever.
    let version: String = computed
        .trim_start_matches("sha384-")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    Ok(Some(Library {
        src: format!("{path}?v={version}"),
        integrity: computed,
        body: Some(bytes.into()),
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PlayerSettings {
        PlayerSettings {
            enabled: true,
            session_timeout_secs: 15,
            max_sessions_per_client: 20,
            max_sessions: 100,
            max_frame_bytes: 4096,
            hls_js: String::new(),
            hls_js_integrity: String::new(),
            dash_js: String::new(),
            dash_js_integrity: String::new(),
        }
    }

    #[test]
    fn local_files_are_pinned_and_served_urls_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hls.min.js");
        std::fs::write(&file, b"var Hls = {};").unwrap();
        let mut p = settings();
        p.hls_js = file.to_str().unwrap().into();
        p.dash_js = "https://cdn.example/dash.all.min.js".into();
        p.dash_js_integrity = "sha384-AAAA".into();
        let libs = Libraries::load(&p).unwrap();
        let hls = libs.hls.as_ref().unwrap();
        assert_eq!(hls.integrity, integrity_of(b"var Hls = {};"));
        assert!(hls.src.starts_with("/player/.lib/hls.js?v="), "{}", hls.src);
        assert!(libs.served("/player/.lib/hls.js").is_some());
        assert!(
            libs.served("/player/.lib/dash.js").is_none(),
            "a URL is not ours to serve"
        );
        assert_eq!(libs.script_sources(), " 'self' https://cdn.example");
        // A file that does not match the given integrity is refused, naming the key.
        p.hls_js_integrity = integrity_of(b"other");
        let (key, why) = Libraries::load(&p).unwrap_err();
        assert_eq!(key, "player.hls_js");
        assert!(why.contains("does not match"), "{why}");
        p.hls_js = dir.path().join("missing.js").to_str().unwrap().into();
        assert_eq!(Libraries::load(&p).unwrap_err().0, "player.hls_js");
    }

    #[test]
    fn nothing_configured_loads_nothing() {
        let libs = Libraries::load(&settings()).unwrap();
        assert!(libs.hls.is_none() && libs.dash.is_none());
        assert_eq!(libs.script_sources(), "");
    }
}
