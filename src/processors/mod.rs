//! Processors: one file each. Synchronous processors implement [`Processor`]; `batch` is a
//! stage of its own because it holds data across time.

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod memory_limiter;

use crate::model::Metrics;

/// A processor that transforms or drops data as it passes.
pub trait Processor: Send {
    /// Returns the data to pass on, or `None` when nothing is left.
    fn process(&mut self, metrics: Metrics) -> Option<Metrics>;
}
