//! The `batch` processor: groups data into batches by size or time, as the collector does.

use serde::Deserialize;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::config::units::de_duration;
use crate::model::{Metrics, ResourceMetrics};

/// `processors: batch:`. Defaults are the collector's.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Points that trigger a send regardless of the timeout.
    #[serde(default = "default_batch_size")]
    pub send_batch_size: usize,
    /// Upper bound on points in one batch; 0 means no bound.
    #[serde(default)]
    pub send_batch_max_size: usize,
    /// Time after which a batch is sent regardless of size; 0 sends immediately.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub timeout: Duration,
}

fn default_batch_size() -> usize {
    8192
}

fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: default_batch_size(),
            send_batch_max_size: 0,
            timeout: default_timeout(),
        }
    }
}

impl BatchConfig {
    /// The `batch` processor of these settings: a task holding data across time.
    pub fn stage(&self) -> super::Stage {
        let cfg = self.clone();
        super::Stage::Task(Box::new(move |rx, tx| tokio::spawn(run(cfg, rx, tx))))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(format!(
                "send_batch_max_size ({}) must be 0 or at least send_batch_size ({})",
                self.send_batch_max_size, self.send_batch_size
            ));
        }
        Ok(())
    }
}

/// Accumulates metrics and cuts batches.
pub struct Batcher {
    cfg: BatchConfig,
    pending: Vec<ResourceMetrics>,
    points: usize,
}

impl Batcher {
    pub fn new(cfg: BatchConfig) -> Self {
        Batcher {
            cfg,
            pending: Vec::new(),
            points: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds data; returns the batches that are now full.
    pub fn add(&mut self, m: Metrics) -> Vec<Metrics> {
        for r in m.resources {
            self.points += r.point_count();
            self.pending.push(r);
        }
        let mut out = Vec::new();
        while self.points >= self.cfg.send_batch_size && !self.pending.is_empty() {
            out.push(self.cut());
        }
        out
    }

    /// Takes one batch of at most `send_batch_max_size` points (whole families are never
    /// split, so a single family larger than the bound travels alone).
    pub fn cut(&mut self) -> Metrics {
        let max = self.cfg.send_batch_max_size;
        if max == 0 || self.points <= max {
            self.points = 0;
            return Metrics {
                resources: std::mem::take(&mut self.pending),
            };
        }
        let mut out: Vec<ResourceMetrics> = Vec::new();
        let mut taken = 0;
        while !self.pending.is_empty() && taken < max {
            let r = &mut self.pending[0];
            let mut head = ResourceMetrics {
                resource: r.resource.clone(),
                scope_name: r.scope_name.clone(),
                scope_version: r.scope_version.clone(),
                families: Vec::new(),
            };
            let mut n_take = 0;
            for f in &r.families {
                let n = f.samples.len();
                if taken > 0 && taken + n > max {
                    break;
                }
                taken += n;
                n_take += 1;
            }
            head.families = r.families.drain(..n_take).collect();
            let done = r.families.is_empty();
            if done {
                self.pending.remove(0);
            }
            if !head.families.is_empty() {
                out.push(head);
            }
            if !done {
                break;
            }
        }
        self.points -= taken;
        Metrics { resources: out }
    }

    /// Everything pending, in batches no larger than the bound.
    pub fn flush(&mut self) -> Vec<Metrics> {
        let mut out = Vec::new();
        while !self.pending.is_empty() {
            out.push(self.cut());
        }
        self.points = 0;
        out
    }
}

/// Runs the batch stage until its input closes, then flushes what is left.
pub async fn run(cfg: BatchConfig, mut rx: mpsc::Receiver<Metrics>, tx: mpsc::Sender<Metrics>) {
    let timeout = cfg.timeout;
    let mut b = Batcher::new(cfg);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => futures_util::future::pending::<()>().await,
            }
        };
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    for full in b.add(m) {
                        if tx.send(full).await.is_err() { return; }
                    }
                    if timeout.is_zero() {
                        for part in b.flush() {
                            if tx.send(part).await.is_err() { return; }
                        }
                    } else if b.is_empty() {
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + timeout);
                    }
                }
                None => {
                    for part in b.flush() {
                        let _ = tx.send(part).await;
                    }
                    return;
                }
            },
            _ = sleep => {
                deadline = None;
                for part in b.flush() {
                    if tx.send(part).await.is_err() { return; }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, MetricFamily, MetricKind, Sample};
    use std::sync::Arc;

    fn family(name: &str, n: usize) -> MetricFamily {
        MetricFamily {
            name: Arc::from(name),
            kind: MetricKind::Gauge,
            help: Arc::from(""),
            unit: Arc::from(""),
            samples: (0..n)
                .map(|i| Sample {
                    name: Arc::from(name),
                    labels: Labels::from_pairs([("i", i.to_string())]),
                    value: i as f64,
                    timestamp_ms: 0,
                })
                .collect(),
        }
    }

    fn metrics(fams: Vec<MetricFamily>) -> Metrics {
        Metrics {
            resources: vec![ResourceMetrics {
                resource: vec![("service.name".into(), "j".into())],
                scope_name: String::new(),
                scope_version: String::new(),
                families: fams,
            }],
        }
    }

    #[test]
    fn cuts_by_size_and_bounds_by_max() {
        let mut b = Batcher::new(BatchConfig {
            send_batch_size: 10,
            send_batch_max_size: 12,
            timeout: Duration::from_millis(200),
        });
        assert!(b.add(metrics(vec![family("a", 4)])).is_empty());
        let out = b.add(metrics(vec![
            family("b", 5),
            family("c", 5),
            family("d", 5),
        ]));
        let sizes: Vec<usize> = out.iter().map(Metrics::point_count).collect();
        // 19 points pending, bound 12, whole families only: 4+5, then 5+5.
        assert_eq!(sizes, vec![9, 10]);
        assert!(b.flush().is_empty());
        assert!(b.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_flushes() {
        let (tx_in, rx_in) = mpsc::channel(4);
        let (tx_out, mut rx_out) = mpsc::channel(4);
        let task = tokio::spawn(run(BatchConfig::default(), rx_in, tx_out));
        tx_in
            .send(metrics(vec![family("a", 3)]))
            .await
            .expect("send");
        let got = rx_out.recv().await.expect("a batch after the timeout");
        assert_eq!(got.point_count(), 3);
        drop(tx_in);
        task.await.expect("stage ends");
    }
}
