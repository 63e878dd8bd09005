//! video-origin: a CDN origin server for video.
//!
//! One way down, as the folders read: `server` (listeners, connections, timeouts, TLS, client
//! address) → `routes` (one tower `Service` per listener: which handler answers) → `pipeline`
//! (the public video pipeline) | `admin` | `player` → `app` (the shared state) → `signing`
//! (access rules, tokens, links) → `storage` (the seam; `local` is the file-system backend) →
//! `http` (pure decisions, imports nothing else of the crate). Beside them: `config` (settings,
//! read by all), `observe` (metrics and the access log, written by all), `reply` (the shared
//! short replies), `cdn` (invalidations).

pub mod admin;
pub mod app;
pub mod cdn;
pub mod clock;
pub mod config;
pub mod http;
pub mod limits;
pub mod observe;
pub mod pipeline;
pub mod player;
pub mod reply;
pub mod routes;
pub mod server;
pub mod signing;
pub mod storage;

pub use app::App;
pub use routes::{admin::AdminService, public::PublicService, ClientAddr};
