//! Observability, written to by every layer and importing none of them: Prometheus metrics,
//! the access log, and the buffered log writer.

pub mod access_log;
pub mod logbuf;
pub mod metrics;
pub mod sharded;
