//! Exporters: where data leaves a pipeline.

pub mod debug;
pub mod otlp;
pub mod promql;
pub mod remote_write;
