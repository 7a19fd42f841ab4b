//! Plumbing between components: bounded channels (backpressure, never unbounded memory) and
//! fan-out to several consumers.

use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::model::Metrics;

/// Capacity of every inter-component channel, in batches.
pub const CHANNEL_CAPACITY: usize = 64;

/// Sends each batch to every output (pipelines of a receiver, exporters of a pipeline).
/// Clones share the outputs, which a config reload can replace while senders keep running.
#[derive(Clone)]
pub struct Fanout {
    outputs: Arc<ArcSwap<Vec<mpsc::Sender<Metrics>>>>,
}

impl Fanout {
    pub fn new(outputs: Vec<mpsc::Sender<Metrics>>) -> Self {
        Fanout {
            outputs: Arc::new(ArcSwap::from_pointee(outputs)),
        }
    }

    /// Points every clone at new outputs; the old ones close once no send holds them.
    pub fn replace(&self, outputs: Vec<mpsc::Sender<Metrics>>) {
        self.outputs.store(Arc::new(outputs));
    }

    /// Delivers to every output still open; clones only for all but the last.
    pub async fn send(&self, m: Metrics) {
        let outputs = self.outputs.load_full();
        let Some((last, rest)) = outputs.split_last() else {
            return;
        };
        if m.resources.is_empty() {
            return;
        }
        for o in rest {
            let _ = o.send(m.clone()).await;
        }
        let _ = last.send(m).await;
    }
}

/// Forwards everything from `rx` to a fan-out until `rx` closes.
pub async fn run_fanout(mut rx: mpsc::Receiver<Metrics>, out: Fanout) {
    while let Some(m) = rx.recv().await {
        out.send(m).await;
    }
}
