//! Exporters: where data leaves a pipeline. Each one starts itself from its config, an
//! [`ExporterContext`] and its input channel; `service::components` lists them.

pub mod debug;
pub mod otlp;
pub mod promql;
pub mod remote_write;

use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::AgentState;
use crate::http_server::Served;
use crate::model::Metrics;
use crate::store::Store;
use crate::telemetry::SharedTelemetry;

/// What an exporter starts with besides its own settings.
pub struct ExporterContext {
    /// Its component id, for logs, self metrics and its queue directory.
    pub name: String,
    pub telemetry: SharedTelemetry,
    pub agent: Arc<AgentState>,
    /// Where its sending queue lives, when `sending_queue.storage` names a `file_storage`
    /// extension.
    pub storage: Option<otlp::Storage>,
    /// The agent's memory limit, when a `memory_limiter` sets one (sizes the façade's query
    /// budget).
    pub memory_limit: Option<u64>,
    /// The window of the `promql` instance this one replaces, kept across a restart.
    pub window: Option<Arc<Store>>,
}

/// A started exporter: the task draining its input, and for the query façade its server and
/// store.
pub struct StartedExporter {
    pub task: JoinHandle<()>,
    pub server: Option<Served>,
    pub store: Option<Arc<Store>>,
}

impl StartedExporter {
    /// An exporter that is only a task.
    pub fn task(task: JoinHandle<()>) -> Self {
        StartedExporter {
            task,
            server: None,
            store: None,
        }
    }
}

/// The input an exporter drains.
pub type Input = mpsc::Receiver<Metrics>;
