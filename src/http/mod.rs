//! Pure HTTP decisions: no IO, no clock reads (callers pass `now`), nothing from the rest of
//! the crate. Everything here is table-tested against `shared/specs/http-origin.md`.

pub mod cache_policy;
pub mod conditional;
pub mod content_type;
pub mod etag;
pub mod glob;
pub mod manifest;
pub mod multipart;
pub mod percent;
pub mod range;
pub mod response;
