//! The `prometheus` receiver: discovery, target relabeling, one scrape loop per target.

pub mod config;
pub mod discovery;
pub mod exposition;
pub mod kubernetes;
pub mod relabel;
pub mod scrape;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use self::config::{PrometheusReceiverConfig, ResolvedScrapeConfig};
use self::discovery::Update;
use self::scrape::{LoopShared, ScrapeLoop, StopReason, TargetRegistry};
use self::target::{populate, Dropped, Target, TargetGroup};
use crate::pipeline::Fanout;
use crate::telemetry::SharedTelemetry;

/// A running receiver: stop it with [`PrometheusReceiver::shutdown`].
pub struct PrometheusReceiver {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl PrometheusReceiver {
    /// Starts discovery and scraping for every job.
    pub fn start(
        name: String,
        cfg: &PrometheusReceiverConfig,
        out: Fanout,
        telemetry: SharedTelemetry,
        registry: TargetRegistry,
    ) -> Result<Self, String> {
        let resolved = cfg.config.resolve().map_err(|e| e.join("; "))?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let interner = Arc::new(crate::model::Interner::default());
        for (sc, raw) in resolved.into_iter().zip(cfg.config.scrape_configs.iter()) {
            let client = scrape::http_client(&sc)?;
            let (tx, rx) = mpsc::channel::<Update>(16);
            let mut providers = 0;
            if !raw.static_configs.is_empty() {
                let groups = discovery::static_groups(&raw.static_configs);
                let _ = tx.try_send(Update {
                    provider: providers,
                    groups,
                });
                providers += 1;
            }
            for f in &raw.file_sd_configs {
                let tx = tx.clone();
                let f = f.clone();
                let p = providers;
                let mut stop_rx = stop_rx.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = discovery::run_file_sd(f, p, tx) => {}
                        _ = stop_rx.changed() => {}
                    }
                });
                providers += 1;
            }
            for k in &raw.kubernetes_sd_configs {
                let tx = tx.clone();
                let k = k.clone();
                let p = providers;
                let mut stop_rx = stop_rx.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = kubernetes::run(k, p, tx) => {}
                        _ = stop_rx.changed() => {}
                    }
                });
                providers += 1;
            }
            drop(tx);
            let manager = JobManager {
                cfg: Arc::new(sc),
                shared: LoopShared {
                    client,
                    out: out.clone(),
                    telemetry: telemetry.clone(),
                    registry: registry.clone(),
                    receiver: name.clone(),
                    interner: interner.clone(),
                },
                groups: HashMap::new(),
                loops: HashMap::new(),
            };
            tasks.spawn(manager.run(rx, stop_rx.clone()));
        }
        Ok(PrometheusReceiver { stop, tasks })
    }

    /// Stops every scrape loop and waits for them to finish their current scrape.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Keeps one job's scrape loops in line with what discovery reports.
struct JobManager {
    cfg: Arc<ResolvedScrapeConfig>,
    shared: LoopShared,
    groups: HashMap<usize, Vec<TargetGroup>>,
    loops: HashMap<u64, (watch::Sender<StopReason>, tokio::task::JoinHandle<()>)>,
}

impl JobManager {
    async fn run(mut self, mut updates: mpsc::Receiver<Update>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                u = updates.recv() => match u {
                    Some(u) => {
                        self.groups.insert(u.provider, u.groups);
                        self.sync();
                    }
                    // Static-only jobs close their channel at once; keep running until stop.
                    None => { let _ = stop.changed().await; break; }
                },
                _ = stop.changed() => break,
            }
        }
        for (_, (tx, handle)) in self.loops.drain() {
            let _ = tx.send(StopReason::Shutdown);
            let _ = handle.await;
        }
    }

    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let mut providers: Vec<&usize> = self.groups.keys().collect();
        providers.sort();
        for p in providers {
            for g in &self.groups[p] {
                for t in &g.targets {
                    match populate(&self.cfg, &g.labels, t) {
                        Ok(t) => out.push(t),
                        Err(Dropped::Relabeled) => {}
                        Err(Dropped::Invalid(why)) => {
                            tracing::warn!(job = %self.cfg.job_name, source = %g.source, reason = %why, "dropping invalid target")
                        }
                    }
                }
            }
        }
        out
    }

    fn sync(&mut self) {
        let targets = self.targets();
        let mut wanted: HashMap<u64, Target> = HashMap::new();
        for t in targets {
            wanted.entry(t.key()).or_insert(t);
        }
        let gone: Vec<u64> = self
            .loops
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if let Some((tx, _handle)) = self.loops.remove(&k) {
                let _ = tx.send(StopReason::Removed);
            }
        }
        for (k, t) in wanted {
            if self.loops.contains_key(&k) {
                continue;
            }
            tracing::info!(job = %self.cfg.job_name, url = %t.url, "starting scrape loop");
            let (tx, rx) = watch::channel(StopReason::Running);
            let sl = ScrapeLoop::new(t, self.cfg.clone(), self.shared.clone());
            let handle = tokio::spawn(sl.run(rx));
            self.loops.insert(k, (tx, handle));
        }
    }
}
