//! The CDN in front: invalidating what was replaced. `paths` and the journal's record format
//! are pure; `outbox` queues and retries durably; `cloudfront` and `cloudflare` do the IO.

pub mod cloudflare;
pub mod cloudfront;
pub mod journal;
pub mod outbox;
pub mod paths;
