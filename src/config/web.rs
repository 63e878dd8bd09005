//! `[origin_protection]`, `[cors]`, `[player]`: who may call the public listener, and the
//! built-in player.

use serde::{Deserialize, Serialize};

use super::section::{Secret, Section};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginProtectionSettings {
    /// Header the CDN adds (CloudFront origin custom header, Cloudflare Transform Rule).
    pub header: String,
    /// Accepted values (several during rotation); empty = protection off.
    #[serde(default)]
    pub values: Vec<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed to read responses from scripts (`https://player.example.com`), or `*`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Seconds browsers may cache a preflight answer.
    pub max_age_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerSettings {
    /// Serve `GET /player/{path}` and the `/ws` presence socket.
    pub enabled: bool,
    /// A session without a heartbeat for this long is closed.
    pub session_timeout_secs: u64,
    /// Open presence sockets per client address (0 = unlimited).
    pub max_sessions_per_client: usize,
    /// Open presence sockets in all (each also counts against server.max_connections).
    pub max_sessions: usize,
    /// Largest WebSocket frame/message accepted; larger closes the socket.
    pub max_frame_bytes: usize,
    /// hls.js for `.m3u8` in browsers without native HLS: a local file the origin serves, or an
    /// `https://` URL with `hls_js_integrity`. Empty = not offered.
    #[serde(default)]
    pub hls_js: String,
    /// Subresource Integrity of `hls_js` (`sha384-…`); required with a URL, checked with a file.
    #[serde(default)]
    pub hls_js_integrity: String,
    /// dash.js for `.mpd` (its `dash.all.min.js`), as `hls_js`.
    #[serde(default)]
    pub dash_js: String,
    #[serde(default)]
    pub dash_js_integrity: String,
}

/// Whether `s` is a Subresource Integrity value (`sha256-`, `sha384-` or `sha512-` + base64).
pub fn is_integrity(s: &str) -> bool {
    let Some((alg, b64)) = s.split_once('-') else {
        return false;
    };
    matches!(alg, "sha256" | "sha384" | "sha512")
        && !b64.is_empty()
        && b64
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl Section for OriginProtectionSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let op = self;
        if ::http::HeaderName::from_bytes(op.header.as_bytes()).is_err() {
            return Err((
                "origin_protection.header",
                format!("`{}` is not a header name", op.header),
            ));
        }
        for v in &op.values {
            if v.expose().len() < 16 {
                return Err((
                    "origin_protection.values",
                    "each value needs at least 16 characters".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Section for CorsSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        for o in &self.allowed_origins {
            let ok = o == "*"
                || ((o.starts_with("https://") || o.starts_with("http://"))
                    && !o.ends_with('/')
                    && !o.contains(char::is_whitespace));
            if !ok {
                return Err((
                    "cors.allowed_origins",
                    format!("`{o}` must be `*` or scheme://host[:port] without a trailing /"),
                ));
            }
        }
        Ok(())
    }
}

impl Section for PlayerSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(3..=3600).contains(&self.session_timeout_secs) {
            return Err((
                "player.session_timeout_secs",
                "must be between 3 and 3600 (the page sends a heartbeat every 2 s)".into(),
            ));
        }
        if !(256..=1 << 20).contains(&self.max_frame_bytes) {
            return Err((
                "player.max_frame_bytes",
                "must be between 256 and 1048576".into(),
            ));
        }
        for (key, src, key_sri, sri) in [
            (
                "player.hls_js",
                &self.hls_js,
                "player.hls_js_integrity",
                &self.hls_js_integrity,
            ),
            (
                "player.dash_js",
                &self.dash_js,
                "player.dash_js_integrity",
                &self.dash_js_integrity,
            ),
        ] {
            if src.starts_with("http://") {
                return Err((
                    key,
                    "a library URL must be https:// (or give a local file)".into(),
                ));
            }
            if !sri.is_empty() && !is_integrity(sri) {
                return Err((
                    key_sri,
                    "must be a Subresource Integrity value: sha256-, sha384- or sha512- followed by base64".into(),
                ));
            }
            if src.starts_with("https://") {
                if sri.is_empty() {
                    return Err((
                        key_sri,
                        format!("required with a URL in {key}, so the browser refuses a library that changed"),
                    ));
                }
                if src.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                    return Err((key, "not a valid URL".into()));
                }
            }
        }
        Ok(())
    }
}
