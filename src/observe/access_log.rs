//! The access log: one line per request, written when its body finishes or the client goes
//! away. `structured` is a tracing event (text or JSON like every other line: request-derived
//! values are recorded as strings, so the text format quotes and escapes them); `combined` is
//! the nginx/Apache combined line with our extras, escaped byte by byte.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::AccessFormat;
use crate::observe::metrics::Route;

/// What a handler tells the access log beyond status and bytes (a response extension).
#[derive(Debug, Clone, Default)]
pub struct AccessNote {
    /// The cache rule that set the caching headers.
    pub cache_rule: Option<Arc<str>>,
    /// Signed-link outcome on protected paths: `ok` or the refusal reason.
    pub token: Option<&'static str>,
}

/// Everything the line says about one request, gathered as it is handled.
pub struct AccessRecord {
    pub method: http::Method,
    pub version: http::Version,
    pub path: String,
    pub status: u16,
    pub peer: SocketAddr,
    pub client: IpAddr,
    pub range: Option<String>,
    pub started: Instant,
    pub route: Route,
    pub note: AccessNote,
    pub cdn: Option<(&'static str, Option<String>)>,
    /// The player's session id (`?session=`), grouping a viewer's requests.
    pub session: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
}

/// Writes the line for `r` in `format`: `sent` body bytes, `complete` when the body ended.
pub fn write(format: AccessFormat, r: &AccessRecord, sent: u64, complete: bool) {
    match format {
        AccessFormat::Off => {}
        AccessFormat::Structured => tracing::info!(
            target: "access",
            client = %r.client,
            peer = %r.peer,
            method = %r.method,
            path = r.path.as_str(),
            proto = ?r.version,
            status = r.status,
            bytes = sent,
            range = r.range.as_deref().unwrap_or("-"),
            complete,
            // Whole microseconds: 0.022, not 0.021849999999999998.
            duration_ms = (r.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            cache_rule = r.note.cache_rule.as_deref().unwrap_or("-"),
            token = r.note.token.unwrap_or("-"),
            cdn = r.cdn.as_ref().map_or("-", |c| c.0),
            cdn_pop = r.cdn.as_ref().and_then(|c| c.1.as_deref()).unwrap_or("-"),
            session = r.session.as_deref().unwrap_or("-"),
        ),
        AccessFormat::Combined => {
            use std::io::Write;
            let line = combined_line(r, sent, complete, std::time::SystemTime::now());
            let _ = crate::observe::logbuf::LineWriter.write_all(line.as_bytes());
        }
    }
}

/// `client - - [day/Mon/year:HH:MM:SS +0000] "METHOD path PROTO" status bytes "referer" "ua"`
/// (nginx/Apache combined), then our extras as key=value.
fn combined_line(
    r: &AccessRecord,
    sent: u64,
    complete: bool,
    now: std::time::SystemTime,
) -> String {
    // "Tue, 24 Nov 2026 11:00:00 GMT" -> "24/Nov/2026:11:00:00 +0000"
    let date = httpdate::fmt_http_date(now);
    let f: Vec<&str> = date.split(' ').collect();
    let stamp = match f.as_slice() {
        [_, d, m, y, t, _] => format!("{d}/{m}/{y}:{t} +0000"),
        _ => date.clone(),
    };
    format!(
        "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" rt={:.3} range=\"{}\" rule={} token={} cdn={} pop={} session={} peer={} complete={}\n",
        r.client,
        stamp,
        r.method,
        escape(&r.path),
        r.version,
        r.status,
        sent,
        escape(r.referer.as_deref().unwrap_or("-")),
        escape(r.user_agent.as_deref().unwrap_or("-")),
        r.started.elapsed().as_secs_f64(),
        escape(r.range.as_deref().unwrap_or("-")),
        r.note.cache_rule.as_deref().unwrap_or("-"),
        r.note.token.unwrap_or("-"),
        r.cdn.as_ref().map_or("-", |c| c.0),
        escape(r.cdn.as_ref().and_then(|c| c.1.as_deref()).unwrap_or("-")),
        r.session.as_deref().unwrap_or("-"),
        r.peer,
        complete,
    )
}

/// Quotes, backslashes and non-printable bytes as `\xHH` (as nginx does), so a crafted header
/// cannot forge log fields or lines.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}
