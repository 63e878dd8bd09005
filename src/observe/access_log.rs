//! The access log: one line per request, written when its body finishes or the client goes
//! away. `structured` is a tracing event (text or JSON like every other line: request-derived
//! values are recorded as strings, so the text format quotes and escapes them); `combined` is
//! the nginx/Apache combined line with our extras, escaped byte by byte.
//!
//! When the binary set up logging itself ([`write_directly`]), the structured line is written
//! straight to the log writer, byte for byte what tracing-subscriber's formatter writes for the
//! event (text: `ts  INFO access: k=v …`, strings quoted and escaped as `Debug` does; JSON: one
//! object, strings JSON-escaped), but without its per-field dynamic dispatch and formatting
//! machinery: that was the largest user-space cost of a small request. `RUST_LOG`/`log.level`
//! still decide whether the line is written. An application embedding the library keeps the
//! tracing event, for its own subscriber.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{AccessFormat, LogFormat};
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

/// How the binary's subscriber writes access lines: its format, and whether its filter lets
/// them through (decided once: the filter is fixed when the subscriber is installed).
struct Direct {
    json: bool,
    enabled: bool,
}

static DIRECT: std::sync::OnceLock<Direct> = std::sync::OnceLock::new();

thread_local! {
    /// The line being written, reused: no allocation per request.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Writes structured access lines straight to the log writer, in `format` (set once by the
/// binary, right after it installed the subscriber whose output it matches).
pub fn write_directly(format: LogFormat) {
    let _ = DIRECT.set(Direct {
        json: format == LogFormat::Json,
        enabled: tracing::enabled!(target: "access", tracing::Level::INFO),
    });
}

/// Writes the line for `r` in `format`: `sent` body bytes, `complete` when the body ended.
pub fn write(format: AccessFormat, r: &AccessRecord, sent: u64, complete: bool) {
    match format {
        AccessFormat::Off => {}
        AccessFormat::Structured if DIRECT.get().is_some() => {
            let Some(direct) = DIRECT.get().filter(|d| d.enabled) else {
                return;
            };
            LINE.with_borrow_mut(|line| {
                use std::io::Write;
                line.clear();
                structured_line_into(
                    line,
                    r,
                    sent,
                    complete,
                    direct.json,
                    std::time::SystemTime::now(),
                );
                let _ = crate::observe::logbuf::LineWriter.write_all(line.as_bytes());
            });
        }
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

/// The structured line as tracing-subscriber's text or JSON formatter writes the event,
/// built with plain pushes (the `fmt` machinery was a few per cent of a 304's CPU).
#[cfg(test)]
fn structured_line(
    r: &AccessRecord,
    sent: u64,
    complete: bool,
    json: bool,
    now: std::time::SystemTime,
) -> String {
    let mut out = String::with_capacity(320);
    structured_line_into(&mut out, r, sent, complete, json, now);
    out
}

/// [`structured_line`], appended to `out`.
fn structured_line_into(
    out: &mut String,
    r: &AccessRecord,
    sent: u64,
    complete: bool,
    json: bool,
    now: std::time::SystemTime,
) {
    // Whole microseconds, rounded, in integers (as the tracing event's `round()` does).
    let micros = ((r.started.elapsed().as_nanos() + 500) / 1000) as u64;
    let strings: [(Key, &str); 7] = [
        (key!("path"), r.path.as_str()),
        (key!("range"), r.range.as_deref().unwrap_or("-")),
        (
            key!("cache_rule"),
            r.note.cache_rule.as_deref().unwrap_or("-"),
        ),
        (key!("token"), r.note.token.unwrap_or("-")),
        (key!("cdn"), r.cdn.as_ref().map_or("-", |c| c.0)),
        (
            key!("cdn_pop"),
            r.cdn.as_ref().and_then(|c| c.1.as_deref()).unwrap_or("-"),
        ),
        (key!("session"), r.session.as_deref().unwrap_or("-")),
    ];
    let proto = match r.version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    };
    let mut line = Fields { out, json };
    if json {
        line.out.push_str("{\"timestamp\":\"");
        rfc3339_micros(line.out, now);
        line.out.push_str("\",\"level\":\"INFO\"");
    } else {
        rfc3339_micros(line.out, now);
        line.out.push_str("  INFO access:");
    }
    line.plain(key!("client"), |o| push_ip(o, r.client));
    line.plain(key!("peer"), |o| push_socket(o, r.peer));
    line.plain(key!("method"), |o| o.push_str(r.method.as_str()));
    line.string(strings[0].0, strings[0].1);
    line.plain(key!("proto"), |o| o.push_str(proto));
    line.number(key!("status"), |o| push_int(o, u64::from(r.status)));
    line.number(key!("bytes"), |o| push_int(o, sent));
    line.string(strings[1].0, strings[1].1);
    line.number(key!("complete"), |o| {
        o.push_str(if complete { "true" } else { "false" })
    });
    line.number(key!("duration_ms"), |o| push_millis(o, micros));
    line.string(strings[2].0, strings[2].1);
    // Without a token, a CDN or a session (most lines of a public library), the rest of the
    // line is the same every time: one copy instead of eight.
    if strings[3..].iter().all(|(_, v)| *v == "-") {
        line.out.push_str(if json {
            concat!(
                r#","token":"-","cdn":"-","cdn_pop":"-","session":"-""#,
                ",\"target\":\"access\"}\n"
            )
        } else {
            " token=\"-\" cdn=\"-\" cdn_pop=\"-\" session=\"-\"\n"
        });
        return;
    }
    for (k, v) in &strings[3..] {
        line.string(*k, v);
    }
    line.out.push_str(if json {
        ",\"target\":\"access\"}\n"
    } else {
        "\n"
    });
}

/// A field's name as each format writes it before the value (` key=`, `,"key":`), made at
/// compile time: one copy per field instead of three.
#[derive(Clone, Copy)]
struct Key {
    text: &'static str,
    json: &'static str,
}

macro_rules! key {
    ($name:literal) => {
        Key {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}
use key;

/// Fields of the structured line, written as tracing-subscriber's text (` key=value`) or JSON
/// (`,"key":value`) formatter writes them.
struct Fields<'a> {
    out: &'a mut String,
    json: bool,
}

impl Fields<'_> {
    fn key(&mut self, key: Key) {
        self.out
            .push_str(if self.json { key.json } else { key.text });
    }

    /// A value recorded with `%` (Display): bare in text, a JSON string (these never need
    /// escaping: addresses, methods, protocol names).
    fn plain(&mut self, key: Key, value: impl FnOnce(&mut String)) {
        self.key(key);
        if self.json {
            self.out.push('"');
            value(self.out);
            self.out.push('"');
        } else {
            value(self.out);
        }
    }

    /// A number or boolean: bare in both.
    fn number(&mut self, key: Key, value: impl FnOnce(&mut String)) {
        self.key(key);
        value(self.out);
    }

    /// A string from the request: quoted and escaped as `Debug` (text) or JSON does.
    fn string(&mut self, key: Key, value: &str) {
        self.key(key);
        if value == "-" {
            // The placeholder most fields of most lines carry: the same quoted in both formats.
            self.out.push_str("\"-\"");
        } else if self.json {
            json_string(self.out, value);
        } else {
            debug_string(self.out, value);
        }
    }
}

/// A string as `{:?}` writes it: quoted, with Rust's escapes. Plain printable ASCII (nearly
/// every path) is copied as it is; anything else goes through `Debug`.
fn debug_string(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

/// An address as `Display` writes it; IPv4 without the formatting machinery.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Digit by digit into reserved room: a copy per octet cost more than the digits.
            out.reserve(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A socket address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
fn push_socket(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(':');
            push_int(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A number's digits: itoa formats them on the stack and hands back a `&str`, so they are
/// appended in one copy with no UTF-8 check.
fn push_int(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Whole microseconds as milliseconds, as `{:?}` writes the `f64` `micros / 1000`: `0.022`,
/// `1.5`, `2.0`.
fn push_millis(out: &mut String, micros: u64) {
    push_int(out, micros / 1000);
    out.push('.');
    let frac = micros % 1000;
    if frac == 0 {
        out.push('0');
        return;
    }
    // 1000 + frac prints as "1" and the three digits, leading zeros kept.
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(1000 + frac)[1..].trim_end_matches('0'));
}

/// `2026-11-30T10:48:18.840958Z`, as tracing-subscriber's default timer writes it. The part
/// up to the seconds is worked out once per second and thread.
fn rfc3339_micros(out: &mut String, t: std::time::SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            *prefix = civil_second(secs);
            *cached = secs;
        }
        out.push_str(prefix);
    });
    out.push('.');
    // 1_000_000 + micros prints as "1" and six digits, leading zeros kept.
    let mut digits = itoa::Buffer::new();
    out.push_str(&digits.format(1_000_000 + u64::from(d.subsec_micros()))[1..]);
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the epoch.
fn civil_second(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

/// A JSON string literal, escaped as serde_json does.
fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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

#[cfg(test)]
mod fast_format_tests {
    use super::*;

    #[test]
    fn addresses_match_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.12.3",
            "::1",
            "2001:db8::7",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
        for sock in [
            "127.0.0.1:4000",
            "0.0.0.0:0",
            "9.8.7.6:65535",
            "[::1]:443",
            "[fe80::1%2]:80",
        ] {
            let sock: SocketAddr = sock.parse().unwrap();
            let mut out = String::new();
            push_socket(&mut out, sock);
            assert_eq!(out, sock.to_string());
        }
    }

    #[test]
    fn millis_and_strings_match_what_debug_writes() {
        for micros in [
            0u64,
            1,
            10,
            22,
            100,
            999,
            1000,
            1500,
            2000,
            123_456,
            7_000_001,
            86_400_000_000,
        ] {
            let mut out = String::new();
            push_millis(&mut out, micros);
            assert_eq!(out, format!("{:?}", micros as f64 / 1e3), "{micros}");
        }
        for s in [
            "/video/a.mp4",
            "-",
            "a\"b",
            "tab\there",
            "é",
            "\u{7f}",
            "back\\slash",
            "",
        ] {
            let mut out = String::new();
            debug_string(&mut out, s);
            assert_eq!(out, format!("{s:?}"));
        }
        let mut out = String::new();
        push_int(&mut out, 0);
        push_int(&mut out, u64::MAX);
        assert_eq!(out, format!("0{}", u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            method: http::Method::GET,
            version: http::Version::HTTP_11,
            path: "/video/a \"b\"\\c\u{1}\n.mp4".into(),
            status: 206,
            peer: "127.0.0.1:4000".parse().unwrap(),
            client: "203.0.113.9".parse().unwrap(),
            range: Some("bytes=0-9".into()),
            started: Instant::now(),
            route: Route::Asset,
            note: AccessNote {
                cache_rule: Some("media".into()),
                token: Some("ok"),
            },
            cdn: Some(("cloudfront", Some("FRA56-P1".into()))),
            session: None,
            user_agent: None,
            referer: None,
        }
    }

    /// A record with no token, CDN or session: the fields whose tail is written in one copy.
    fn bare_record() -> AccessRecord {
        AccessRecord {
            note: AccessNote {
                cache_rule: Some("media".into()),
                token: None,
            },
            cdn: None,
            session: None,
            ..record()
        }
    }

    /// What tracing-subscriber's formatter writes for the event, from the fallback path.
    fn through_tracing(json: bool, r: &AccessRecord) -> String {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone());
        if json {
            let sub = builder.json().flatten_event(true).finish();
            tracing::subscriber::with_default(sub, || write(AccessFormat::Structured, r, 10, true));
        } else {
            let sub = builder.finish();
            tracing::subscriber::with_default(sub, || write(AccessFormat::Structured, r, 10, true));
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    /// The line without its timestamp and duration (which differ between two calls).
    fn masked(line: &str) -> String {
        let re = regex::Regex::new(r#"^\S+|duration_ms["=:]+[0-9.e-]+"#).unwrap();
        re.replace_all(line, "_").into_owned()
    }

    #[test]
    fn the_direct_text_line_is_what_tracing_writes() {
        for r in [record(), bare_record()] {
            let expected = through_tracing(false, &r);
            let ours = structured_line(&r, 10, true, false, std::time::SystemTime::now());
            assert_eq!(
                masked(&ours),
                masked(&expected),
                "\nours:   {ours}tracing: {expected}"
            );
        }
    }

    #[test]
    fn the_direct_json_line_is_what_tracing_writes() {
        for r in [record(), bare_record()] {
            direct_json_line_matches(&r);
        }
    }

    fn direct_json_line_matches(r: &AccessRecord) {
        let expected = through_tracing(true, r);
        let ours = structured_line(r, 10, true, true, std::time::SystemTime::now());
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&ours).unwrap(),
            serde_json::from_str(&expected).unwrap(),
        );
        // Same keys in the same order.
        let keys = |line: &str| -> Vec<String> {
            regex::Regex::new(r#"[{,]"(\w+)":"#)
                .unwrap()
                .captures_iter(line)
                .map(|c| c[1].to_owned())
                .collect()
        };
        assert_eq!(keys(&ours), keys(&expected));
        for (k, v) in a.as_object().unwrap() {
            if k != "timestamp" && k != "duration_ms" {
                assert_eq!(Some(v), b.get(k), "{k}");
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let mut s = String::new();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_796_034_498_840_958);
        rfc3339_micros(&mut s, t);
        assert_eq!(s, "2026-11-30T10:28:18.840958Z");
        s.clear();
        rfc3339_micros(
            &mut s,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400),
        );
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
        // The date part is kept per second: within it, across it, and back.
        let base = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_083_199);
        for (micros, want) in [
            (5, "2026-11-30T23:59:59.000005Z"),
            (999_999, "2026-11-30T23:59:59.999999Z"),
            (1_000_000, "2026-12-01T00:00:00.000000Z"),
            (7, "2026-11-30T23:59:59.000007Z"),
        ] {
            s.clear();
            rfc3339_micros(&mut s, base + std::time::Duration::from_micros(micros));
            assert_eq!(s, want);
        }
    }
}
