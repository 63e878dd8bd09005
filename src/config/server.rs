//! `[server]`, `[tls]`, `[limits]`, `[proxy]`: the connection layer's settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::section::Section;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Start even when another process already listens on `listen` (the kernel then spreads
    /// connections over both, through SO_REUSEPORT).
    pub share_port: bool,
    pub workers: usize,
    /// A client must send a complete request header within this time of its first byte
    /// (slowloris).
    pub header_read_timeout_secs: u64,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout_secs: u64,
    /// A response whose client has stopped reading for this long is dropped (its file closed).
    pub write_stall_timeout_secs: u64,
    /// Open connections on the public listener; beyond it new ones get a 503 and are closed
    /// (0 = unlimited).
    pub max_connections: usize,
    /// Accept HTTP/2 with prior knowledge on plain TCP (h2c).
    pub h2c: bool,
    /// More request header fields than this: 431.
    pub max_headers: usize,
    /// Larger request heads (request line + header fields): 431.
    pub max_header_bytes: usize,
    /// On SIGTERM, answer /readyz with 503 for this long before closing the listener, so load
    /// balancers stop sending new requests first.
    pub drain_secs: u64,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub enabled: bool,
    /// PEM certificate chain and private key; re-read on SIGHUP and when they change.
    #[serde(default)]
    pub cert_file: PathBuf,
    #[serde(default)]
    pub key_file: PathBuf,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 is always offered).
    pub http2: bool,
    /// How often the files are checked for changes (0 = only on SIGHUP).
    pub reload_check_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Concurrent streaming responses in the whole process (0 = unlimited).
    pub max_streams: usize,
    /// Concurrent streaming responses per client address (0 = unlimited).
    pub max_streams_per_client: usize,
    /// Seconds suggested to shed clients in `Retry-After`.
    pub retry_after_secs: u64,
    /// Requests over the cap may wait this long for a slot (0 = no queue: shed at once).
    pub queue_wait_ms: u64,
    /// At most this many requests wait at a time; beyond it they are shed at once.
    pub queue_max: usize,
    /// Warn (at most once a minute) when open descriptors pass this share of the limit, in
    /// percent (0 = never).
    pub fd_warn_percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Peers (CIDR ranges) whose client-address headers are believed; empty = none.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// The CDN directly in front, whose edge header (`CloudFront-Viewer-Address`,
    /// `CF-Connecting-IP`, …) may then be listed in `client_headers`.
    pub cdn: crate::server::client::EdgeCdn,
    /// Headers naming the client, in order of preference.
    pub client_headers: Vec<String>,
}

/// A listen address as `IP:PORT`; the error names the value and the expected form (host names
/// are not resolved: a listener binds an address).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not IP:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080; host names are not resolved)")
    })
}

/// serde's side of [`parse_listen`].
pub fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

impl ServerSettings {
    /// How much of a connection's input may be buffered (hyper's `max_buf_size`), which also
    /// bounds an incomplete head: it must hold the largest head allowed.
    pub fn read_buffer_limit(&self) -> usize {
        (64 * 1024).max(self.max_header_bytes + 8192)
    }
}

impl Section for ServerSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=300).contains(&self.header_read_timeout_secs) {
            return Err((
                "server.header_read_timeout_secs",
                "must be between 1 and 300".into(),
            ));
        }
        if !(8..=1000).contains(&self.max_headers) {
            return Err(("server.max_headers", "must be between 8 and 1000".into()));
        }
        if !(4096..=1 << 20).contains(&self.max_header_bytes) {
            return Err((
                "server.max_header_bytes",
                "must be between 4096 and 1048576".into(),
            ));
        }
        if self.drain_secs > 600 {
            return Err(("server.drain_secs", "must be at most 600".into()));
        }
        if self.workers > 1024 {
            return Err((
                "server.workers",
                "must be at most 1024 (0 = one per CPU)".into(),
            ));
        }
        if self.shutdown_grace_secs > 3600 {
            return Err(("server.shutdown_grace_secs", "must be at most 3600".into()));
        }
        for (key, secs) in [
            ("server.idle_timeout_secs", self.idle_timeout_secs),
            (
                "server.write_stall_timeout_secs",
                self.write_stall_timeout_secs,
            ),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err((key, "must be between 1 and 3600".into()));
            }
        }
        Ok(())
    }
}

impl Section for TlsSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let tls = self;
        if tls.enabled {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(("tls.cert_file", "required when tls.enabled = true".into()));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(("tls.key_file", "required when tls.enabled = true".into()));
            }
        }
        Ok(())
    }
}

impl Section for LimitSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.fd_warn_percent > 100 {
            return Err((
                "limits.fd_warn_percent",
                format!("must be between 0 and 100 (got {})", self.fd_warn_percent),
            ));
        }
        if self.queue_wait_ms > 60_000 {
            return Err(("limits.queue_wait_ms", "must be at most 60000".into()));
        }
        if self.queue_wait_ms > 0 && self.queue_max == 0 {
            return Err((
                "limits.queue_max",
                "must be at least 1 when queue_wait_ms > 0".into(),
            ));
        }
        Ok(())
    }
}

impl Section for ProxySettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        crate::server::client::parse_ranges(&self.trusted).map_err(|r| ("proxy.trusted", r))?;
        for h in &self.client_headers {
            crate::server::client::ClientHeader::parse(h)
                .and_then(|parsed| parsed.check(self.cdn))
                .map_err(|r| ("proxy.client_headers", r))?;
        }
        Ok(())
    }
}
