//! Live viewer sessions reported by the player page over WebSocket.
//!
//! A session is live while its WebSocket is open and heartbeats keep arriving; the socket task
//! closes it after a missed-heartbeat timeout, which removes it here. Range requests carrying
//! `?session=<id>` add their bytes and ranges to it, so `/admin/sessions` and the page's
//! overlay show what the origin really served to that viewer.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Ranges kept per session for the overlay and `/admin/sessions`.
const RECENT_RANGES: usize = 16;

/// A session id as the page makes it: 8–64 of `[A-Za-z0-9-]` (a UUID, or hex).
pub fn valid_session_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The `session` query parameter, if present and well formed.
pub fn session_from_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("session="))
        .filter(|id| valid_session_id(id))
}

/// One heartbeat from the page (unknown fields are a bad frame).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Playback position, seconds.
    pub position: f64,
    /// Seconds buffered ahead of the position.
    pub buffered: f64,
    pub paused: bool,
    /// Stalls (`waiting` events) since the page loaded.
    pub stalls: u64,
}

impl Heartbeat {
    /// Parses a text frame; None for anything malformed or out of range.
    pub fn parse(text: &str) -> Option<Heartbeat> {
        let hb: Heartbeat = serde_json::from_str(text).ok()?;
        let sane = |x: f64| x.is_finite() && (0.0..=1e7).contains(&x);
        (sane(hb.position) && sane(hb.buffered) && hb.stalls < 1_000_000).then_some(hb)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: String,
    pub client: String,
    pub video: String,
    pub position: f64,
    pub buffered: f64,
    pub paused: bool,
    pub stalls: u64,
    pub bytes_served: u64,
    pub requests: u64,
    pub recent_ranges: Vec<String>,
    pub connected_secs: u64,
    pub last_heartbeat_secs: u64,
}

struct Session {
    client: IpAddr,
    video: String,
    last: Option<Heartbeat>,
    bytes: u64,
    requests: u64,
    ranges: VecDeque<String>,
    connected: Instant,
    last_seen: Instant,
}

/// What the server tells the page after each heartbeat.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerStats {
    pub bytes_served: u64,
    pub requests: u64,
    pub recent_ranges: Vec<String>,
}

/// Why a presence socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The id already has a live socket (409).
    Duplicate,
    /// The client address holds `max_sessions_per_client` sockets (429).
    PerClient,
    /// `max_sessions` sockets are open (503).
    Full,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Duplicate => "session already connected",
            Refusal::PerClient => "too many sessions from this address",
            Refusal::Full => "too many sessions on this server",
        }
    }
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    stalls: AtomicU64,
    bad_frames: AtomicU64,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session when its socket opens. Refused when the id is already connected,
    /// `client` already has `max_per_client` sockets, or `max_total` are open (0 = no cap).
    pub fn open(
        &self,
        id: &str,
        client: IpAddr,
        video: &str,
        max_per_client: usize,
        max_total: usize,
    ) -> Result<(), Refusal> {
        let mut m = self.map();
        if m.contains_key(id) {
            return Err(Refusal::Duplicate);
        }
        if max_total > 0 && m.len() >= max_total {
            return Err(Refusal::Full);
        }
        if max_per_client > 0 && m.values().filter(|s| s.client == client).count() >= max_per_client
        {
            return Err(Refusal::PerClient);
        }
        let now = Instant::now();
        m.insert(
            id.to_owned(),
            Session {
                client,
                video: video.chars().take(512).collect(),
                last: None,
                bytes: 0,
                requests: 0,
                ranges: VecDeque::new(),
                connected: now,
                last_seen: now,
            },
        );
        Ok(())
    }

    pub fn close(&self, id: &str) {
        self.map().remove(id);
    }

    /// Records a heartbeat; returns the server-side stats to send back.
    pub fn heartbeat(&self, id: &str, hb: Heartbeat) -> Option<ServerStats> {
        let mut m = self.map();
        let s = m.get_mut(id)?;
        let before = s.last.as_ref().map_or(0, |h| h.stalls);
        if hb.stalls > before {
            self.stalls.fetch_add(hb.stalls - before, Ordering::Relaxed);
        }
        s.last = Some(hb);
        s.last_seen = Instant::now();
        Some(ServerStats {
            bytes_served: s.bytes,
            requests: s.requests,
            recent_ranges: s.ranges.iter().cloned().collect(),
        })
    }

    /// A response for `id` is starting: note its status and range. Only requests from the
    /// address that holds the session's socket count (ids are visible in `/admin/sessions`;
    /// anyone else naming one changes nothing).
    pub fn response_started(&self, id: &str, client: IpAddr, status: u16, range: Option<&str>) {
        let mut m = self.map();
        if let Some(s) = m.get_mut(id).filter(|s| s.client == client) {
            s.requests += 1;
            if s.ranges.len() == RECENT_RANGES {
                s.ranges.pop_front();
            }
            s.ranges
                .push_back(format!("{status} {}", range.unwrap_or("full")));
        }
    }

    /// Body bytes just sent for `id` (counted as they go, so long responses show progress).
    pub fn add_bytes(&self, id: &str, client: IpAddr, n: u64) {
        if let Some(s) = self.map().get_mut(id).filter(|s| s.client == client) {
            s.bytes += n;
        }
    }

    pub fn bad_frame(&self) {
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
    }

    pub fn live(&self) -> usize {
        self.map().len()
    }

    pub fn stalls_total(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    pub fn bad_frames_total(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }

    pub fn list(&self) -> Vec<SessionView> {
        let now = Instant::now();
        let mut v: Vec<SessionView> = self
            .map()
            .iter()
            .map(|(id, s)| {
                let hb = s.last.clone();
                SessionView {
                    id: id.clone(),
                    client: s.client.to_string(),
                    video: s.video.clone(),
                    position: hb.as_ref().map_or(0.0, |h| h.position),
                    buffered: hb.as_ref().map_or(0.0, |h| h.buffered),
                    paused: hb.as_ref().is_none_or(|h| h.paused),
                    stalls: hb.as_ref().map_or(0, |h| h.stalls),
                    bytes_served: s.bytes,
                    requests: s.requests,
                    recent_ranges: s.ranges.iter().cloned().collect(),
                    connected_secs: now.duration_since(s.connected).as_secs(),
                    last_heartbeat_secs: now.duration_since(s.last_seen).as_secs(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_query() {
        assert!(valid_session_id("3f2b8c1e-7a9d-4c2e-9b1f-0a1b2c3d4e5f"));
        assert!(!valid_session_id("short"));
        assert!(!valid_session_id("has space in it"));
        assert!(!valid_session_id(&"a".repeat(65)));
        assert_eq!(
            session_from_query("exp=1&session=abcdef012345&sig=x"),
            Some("abcdef012345")
        );
        assert_eq!(session_from_query("session=<script>"), None);
        assert_eq!(session_from_query("sessions=abcdef012345"), None);
    }

    #[test]
    fn heartbeats_parse_strictly() {
        let hb = Heartbeat::parse(r#"{"position":12.5,"buffered":3,"paused":false,"stalls":1}"#)
            .unwrap();
        assert_eq!(hb.position, 12.5);
        for bad in [
            "not json",
            r#"{"position":1}"#,
            r#"{"position":-1,"buffered":0,"paused":false,"stalls":0}"#,
            r#"{"position":1,"buffered":0,"paused":false,"stalls":0,"extra":1}"#,
            r#"{"position":"1","buffered":0,"paused":false,"stalls":0}"#,
        ] {
            assert_eq!(Heartbeat::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn lifecycle_stats_and_caps() {
        let s = Sessions::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        s.open("session-aaaa", ip, "a.mp4", 2, 3).unwrap();
        assert_eq!(
            s.open("session-aaaa", ip, "a.mp4", 2, 3),
            Err(Refusal::Duplicate),
            "one socket per id"
        );
        s.open("session-bbbb", ip, "b.mp4", 2, 3).unwrap();
        assert_eq!(
            s.open("session-cccc", ip, "c.mp4", 2, 3),
            Err(Refusal::PerClient),
            "per-address cap"
        );
        s.open("session-dddd", other, "d.mp4", 2, 3).unwrap();
        assert_eq!(
            s.open("session-eeee", "10.0.0.3".parse().unwrap(), "e.mp4", 2, 3),
            Err(Refusal::Full),
            "global cap"
        );
        s.close("session-dddd");
        s.response_started("session-aaaa", ip, 206, Some("bytes=0-999"));
        s.add_bytes("session-aaaa", ip, 600);
        s.add_bytes("session-aaaa", ip, 400);
        // Someone else naming the session id changes nothing.
        s.response_started("session-aaaa", other, 206, Some("bytes=5-6"));
        s.add_bytes("session-aaaa", other, 1_000_000);
        s.response_started("nobody-here", ip, 206, None);
        s.add_bytes("nobody-here", ip, 5);
        let hb = Heartbeat {
            position: 1.0,
            buffered: 2.0,
            paused: false,
            stalls: 2,
        };
        let stats = s.heartbeat("session-aaaa", hb.clone()).unwrap();
        assert_eq!(stats.bytes_served, 1000);
        assert_eq!(stats.recent_ranges, vec!["206 bytes=0-999".to_string()]);
        assert_eq!(stats.requests, 1);
        s.heartbeat("session-aaaa", Heartbeat { stalls: 3, ..hb })
            .unwrap();
        assert_eq!(s.stalls_total(), 3, "stall deltas, not totals, are summed");
        assert_eq!(s.live(), 2);
        let list = s.list();
        assert_eq!(list[0].video, "a.mp4");
        assert_eq!(list[0].position, 1.0);
        s.close("session-aaaa");
        assert_eq!(s.live(), 1);
        assert!(s
            .heartbeat(
                "session-aaaa",
                Heartbeat {
                    position: 0.0,
                    buffered: 0.0,
                    paused: true,
                    stalls: 0
                }
            )
            .is_none());
    }
}
