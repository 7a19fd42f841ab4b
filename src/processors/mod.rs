//! Processors: one file each. Each one says what it becomes in a pipeline ([`Stage`]) from its
//! config; `service::components` lists them. Synchronous processors implement [`Processor`];
//! `batch` is a task of its own because it holds data across time; `memory_limiter` is no
//! stage at all but a gate its pipelines' receivers check.

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod memory_limiter;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::Metrics;

/// A processor that transforms or drops data as it passes.
pub trait Processor: Send {
    /// Returns the data to pass on, or `None` when nothing is left.
    fn process(&mut self, metrics: Metrics) -> Option<Metrics>;
}

/// Starts a stage's task between its input and its output.
pub type StartStage =
    Box<dyn FnOnce(mpsc::Receiver<Metrics>, mpsc::Sender<Metrics>) -> JoinHandle<()> + Send>;

/// What a processor is in a pipeline.
pub enum Stage {
    /// A stage between two channels: a task started on them.
    Task(StartStage),
    /// No stage: a memory limiter, acting at the receivers of its pipelines.
    Gate(memory_limiter::MemoryLimiterConfig),
}

impl Stage {
    /// A synchronous processor run as a stage of its own.
    pub fn sync(p: Box<dyn Processor>) -> Stage {
        Stage::Task(Box::new(move |rx, tx| tokio::spawn(run_stage(p, rx, tx))))
    }
}

/// Runs a synchronous processor between two channels until the input closes.
pub async fn run_stage(
    mut p: Box<dyn Processor>,
    mut rx: mpsc::Receiver<Metrics>,
    tx: mpsc::Sender<Metrics>,
) {
    while let Some(m) = rx.recv().await {
        if let Some(out) = p.process(m) {
            if tx.send(out).await.is_err() {
                return;
            }
        }
    }
}
