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
        Ok(())
    }
}
