//! video-origin: a CDN origin server for video.
//!
//! Flow of a request, one way only: `routes` → `serve` (pipeline) → `storage::path` (safe
//! path) → `storage::metadata` (moka cache, content-hash ETag) → `http` (pure decision and
//! headers) → `storage::body` (bounded stream).

pub mod http;
