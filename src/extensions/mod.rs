//! Extensions: `health_check`, `zpages`, `file_storage` and `bearertokenauth`. Each one starts
//! itself from its config and an [`ExtensionContext`]; `service::components` lists them.

pub mod bearer_token_auth;
pub mod file_storage;
pub mod health_check;
pub mod zpages;

pub use health_check::HealthCheckConfig;
pub use zpages::ZpagesConfig;

use std::sync::Arc;

use crate::agent::AgentState;
use crate::telemetry::SharedTelemetry;

/// What an extension starts with besides its own settings.
pub struct ExtensionContext {
    /// Its component id, for logs and its server's name.
    pub name: String,
    /// The agent's health, which `health_check` reports.
    pub health: Arc<health_check::HealthState>,
    pub telemetry: SharedTelemetry,
    /// The agent's account of itself, which `zpages` shows.
    pub agent: Arc<AgentState>,
}
