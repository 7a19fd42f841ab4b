//! Receivers: where data enters a pipeline. Each one starts itself from its config and a
//! [`ReceiverContext`]; `service::components` lists them.

pub mod otlp;
pub mod prometheus;

use crate::agent::TargetRegistry;
use crate::extensions::bearer_token_auth::BearerTokenAuth;
use crate::pipeline::Fanout;
use crate::processors::memory_limiter::SharedGates;
use crate::telemetry::SharedTelemetry;

/// What a receiver starts with: where its data goes and what it may consult.
pub struct ReceiverContext<'a> {
    /// Its component id, for logs and self metrics.
    pub name: String,
    /// The inputs of its pipelines; a reload repoints it.
    pub out: Fanout,
    pub telemetry: SharedTelemetry,
    /// The memory limiters of its pipelines: while one is closed, data is refused.
    pub gates: SharedGates,
    /// Where scrape targets report their state (zpages, `/api/v1/targets`).
    pub targets: TargetRegistry,
    /// The `bearertokenauth` extension of an id, for receivers that authenticate callers.
    pub authenticator: &'a dyn Fn(&str) -> Option<BearerTokenAuth>,
}
