//! Receivers: where data enters a pipeline.

pub mod otlp;
pub mod prometheus;
