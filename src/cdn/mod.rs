//! The CDN in front: invalidating what was replaced. `paths` is pure; `cloudfront` does the IO.

pub mod cloudfront;
pub mod paths;
