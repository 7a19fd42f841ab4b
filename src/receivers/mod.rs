//! Receivers: where data enters a pipeline.

pub mod prometheus;
