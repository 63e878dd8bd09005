//! The range and conditional suites again, with every server serving from an S3 bucket (moto
//! on loopback, through the real aws-sdk-s3 client) instead of a folder, so the two backends
//! cannot drift apart. `common::s3::s3_mode` switches on this file's binary name. Each suite
//! brings its own `mod common;` (the files are used as they are), hence the allow.
#![allow(clippy::duplicate_mod)]

#[path = "conditionals.rs"]
mod conditionals;
#[path = "ranges.rs"]
mod ranges;
