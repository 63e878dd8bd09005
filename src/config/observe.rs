//! `[log]` and `[metrics]`.

use serde::{Deserialize, Serialize};

use super::section::Section;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// A log event like any other: JSON with `log.format = "json"`, key=value text otherwise.
    Structured,
    /// The Apache/nginx combined line followed by key=value extras.
    Combined,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
    pub access_format: AccessFormat,
    pub buffer_bytes: usize,
    pub flush_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `GET /metrics` on the admin listener (which then starts even without tokens).
    pub admin: bool,
    /// Also serve it on the public listener (subject to origin protection).
    pub public: bool,
}

impl Section for LogSettings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.buffer_bytes > 16 << 20 {
            return Err(("log.buffer_bytes", "must be at most 16 MiB".into()));
        }
        if !(1..=60_000).contains(&self.flush_ms) {
            return Err(("log.flush_ms", "must be between 1 and 60000".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| ("log.level", e.to_string()))?;
        Ok(())
    }
}

impl Section for MetricsSettings {}
