//! The `prometheus` receiver: discovery, target relabeling, one scrape loop per target.

pub mod config;
mod connection;
pub mod discovery;
mod families;
pub mod http_client;
pub mod scrape;
mod series;
pub mod target;

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use self::config::{PrometheusReceiverConfig, ResolvedScrapeConfig, ScrapeConfig};
use self::discovery::TargetGroup;
use self::discovery::Update;
use self::scrape::{LoopShared, ScrapeLoop, StopReason};
use self::target::{populate, Dropped, Target};
use super::ReceiverContext;
use crate::agent::{DroppedTargets, TargetRegistry};
use crate::pipeline::Fanout;
use crate::processors::memory_limiter::SharedGates;
use crate::telemetry::SharedTelemetry;

/// A running receiver: one manager per job. [`PrometheusReceiver::reconfigure`] applies a new
/// config job by job, so unchanged jobs (and their scrape loops, caches and staleness state)
/// keep running; stop it with [`PrometheusReceiver::shutdown`].
pub struct PrometheusReceiver {
    name: String,
    out: Fanout,
    telemetry: SharedTelemetry,
    registry: TargetRegistry,
    interner: Arc<crate::model::Interner>,
    gates: SharedGates,
    jobs: HashMap<String, Job>,
}

/// One job's manager and discovery tasks.
struct Job {
    /// The job's config as written (`{:#?}`, secrets included as salted hashes).
    raw: String,
    /// The job's scrape settings, discovery left out.
    settings: String,
    control: mpsc::Sender<JobControl>,
    manager: tokio::task::JoinHandle<()>,
    /// Stops the discovery tasks (not the scrape loops).
    discovery_stop: watch::Sender<bool>,
    discovery: JoinSet<()>,
}

enum JobControl {
    /// New discovery providers: keep the current targets until all of them reported once.
    Discovery {
        updates: mpsc::Receiver<Update>,
        providers: usize,
    },
    Stop(StopReason),
}

/// Starts a job's discovery providers; returns their update channel and count.
fn start_discovery(
    raw: &ScrapeConfig,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> (mpsc::Receiver<Update>, usize) {
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
        let (tx, f, p, mut stop) = (tx.clone(), f.clone(), providers, stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = discovery::run_file_sd(f, p, tx) => {}
                _ = stop.changed() => {}
            }
        });
        providers += 1;
    }
    for k in &raw.kubernetes_sd_configs {
        let (tx, k, p, mut stop) = (tx.clone(), k.clone(), providers, stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = discovery::kubernetes::run(k, p, tx) => {}
                _ = stop.changed() => {}
            }
        });
        providers += 1;
    }
    (rx, providers)
}

/// What decides whether a job must restart: everything but its discovery.
fn settings_key(sc: &ResolvedScrapeConfig) -> String {
    format!("{sc:#?}")
}

impl PrometheusReceiver {
    /// Starts discovery and scraping for every job.
    pub fn start(cfg: &PrometheusReceiverConfig, ctx: ReceiverContext) -> Result<Self, String> {
        let resolved = cfg.config.resolve().map_err(|e| e.join("; "))?;
        let mut r = PrometheusReceiver {
            name: ctx.name,
            out: ctx.out,
            telemetry: ctx.telemetry,
            registry: ctx.targets,
            interner: Arc::new(crate::model::Interner::default()),
            gates: ctx.gates,
            jobs: HashMap::new(),
        };
        for (sc, raw) in resolved.into_iter().zip(cfg.config.scrape_configs.iter()) {
            r.start_job(sc, raw)?;
        }
        Ok(r)
    }

    fn start_job(&mut self, sc: ResolvedScrapeConfig, raw: &ScrapeConfig) -> Result<(), String> {
        let connector = connection::connector(&sc)?;
        let (discovery_stop, stop_rx) = watch::channel(false);
        let mut discovery = JoinSet::new();
        let (updates, _) = start_discovery(raw, &stop_rx, &mut discovery);
        let (control, control_rx) = mpsc::channel(4);
        let settings = settings_key(&sc);
        let manager = JobManager {
            cfg: Arc::new(sc),
            shared: LoopShared {
                connector,
                out: self.out.clone(),
                telemetry: self.telemetry.clone(),
                registry: self.registry.clone(),
                receiver: self.name.clone(),
                interner: self.interner.clone(),
                gates: self.gates.clone(),
            },
            groups: HashMap::new(),
            loops: HashMap::new(),
        };
        let job = raw.job_name.clone();
        self.jobs.insert(
            job,
            Job {
                raw: format!("{raw:#?}"),
                settings,
                control,
                manager: tokio::spawn(manager.run(updates, control_rx)),
                discovery_stop,
                discovery,
            },
        );
        Ok(())
    }

    async fn stop_job(mut job: Job, reason: StopReason) {
        let _ = job.discovery_stop.send(true);
        while job.discovery.join_next().await.is_some() {}
        let _ = job.control.send(JobControl::Stop(reason)).await;
        let _ = job.manager.await;
    }

    /// Applies a new config: unchanged jobs are left alone; a job whose only change is its
    /// discovery keeps its scrape loops (targets still discovered keep scraping without a
    /// gap); a job whose scrape settings changed restarts; removed jobs stop and mark their
    /// series stale.
    pub async fn reconfigure(&mut self, cfg: &PrometheusReceiverConfig) -> Result<(), String> {
        let resolved = cfg.config.resolve().map_err(|e| e.join("; "))?;
        let mut wanted: HashMap<String, (ResolvedScrapeConfig, &ScrapeConfig)> = resolved
            .into_iter()
            .zip(cfg.config.scrape_configs.iter())
            .map(|(sc, raw)| (raw.job_name.clone(), (sc, raw)))
            .collect();
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            let Some((sc, raw)) = wanted.remove(&name) else {
                if let Some(job) = self.jobs.remove(&name) {
                    tracing::info!(job = %name, "job removed by reload");
                    Self::stop_job(job, StopReason::Removed).await;
                }
                continue;
            };
            let Some(job) = self.jobs.get_mut(&name) else {
                continue;
            };
            let raw_fp = format!("{raw:#?}");
            if job.raw == raw_fp {
                continue;
            }
            if job.settings == settings_key(&sc) {
                tracing::info!(job = %name, "reload: new discovery for an unchanged job");
                let _ = job.discovery_stop.send(true);
                while job.discovery.join_next().await.is_some() {}
                let (stop, stop_rx) = watch::channel(false);
                let (updates, providers) = start_discovery(raw, &stop_rx, &mut job.discovery);
                job.discovery_stop = stop;
                job.raw = raw_fp;
                let _ = job
                    .control
                    .send(JobControl::Discovery { updates, providers })
                    .await;
                continue;
            }
            tracing::info!(job = %name, "reload: scrape settings changed; restarting the job");
            if let Some(job) = self.jobs.remove(&name) {
                Self::stop_job(job, StopReason::Shutdown).await;
            }
            self.start_job(sc, raw)?;
        }
        for (_, (sc, raw)) in wanted {
            tracing::info!(job = %raw.job_name, "job added by reload");
            self.start_job(sc, raw)?;
        }
        Ok(())
    }

    /// Stops every scrape loop and waits for them to finish their current scrape.
    pub async fn shutdown(mut self) {
        for (_, job) in self.jobs.drain() {
            Self::stop_job(job, StopReason::Shutdown).await;
        }
    }
}

/// How long a job with new discovery providers waits for all of them before applying what
/// it has.
const DISCOVERY_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps one job's scrape loops in line with what discovery reports.
struct JobManager {
    cfg: Arc<ResolvedScrapeConfig>,
    shared: LoopShared,
    groups: HashMap<usize, Vec<TargetGroup>>,
    loops: HashMap<u64, (watch::Sender<StopReason>, tokio::task::JoinHandle<()>)>,
}

impl JobManager {
    async fn run(
        mut self,
        mut updates: mpsc::Receiver<Update>,
        mut control: mpsc::Receiver<JobControl>,
    ) {
        // After new discovery providers start: their first reports, until all have come in
        // (or a deadline passes), so targets found by both old and new keep their loops.
        let mut fresh: Option<(HashMap<usize, Vec<TargetGroup>>, usize)> = None;
        let mut fresh_deadline = tokio::time::Instant::now();
        let mut updates_open = true;
        let reason = loop {
            tokio::select! {
                u = updates.recv(), if updates_open => match u {
                    Some(u) => match fresh.as_mut() {
                        Some((groups, providers)) => {
                            groups.insert(u.provider, u.groups);
                            if groups.len() >= *providers {
                                if let Some((groups, _)) = fresh.take() {
                                    self.groups = groups;
                                }
                                self.sync();
                            }
                        }
                        None => {
                            self.groups.insert(u.provider, u.groups);
                            self.sync();
                        }
                    },
                    // Static-only jobs close their channel at once.
                    None => updates_open = false,
                },
                _ = tokio::time::sleep_until(fresh_deadline), if fresh.is_some() => {
                    if let Some((groups, _)) = fresh.take() {
                        self.groups = groups;
                    }
                    self.sync();
                }
                c = control.recv() => match c {
                    Some(JobControl::Discovery { updates: rx, providers }) => {
                        updates = rx;
                        updates_open = true;
                        fresh = Some((HashMap::new(), providers));
                        fresh_deadline = tokio::time::Instant::now() + DISCOVERY_SETTLE;
                        if providers == 0 {
                            self.groups.clear();
                            fresh = None;
                            self.sync();
                        }
                    }
                    Some(JobControl::Stop(reason)) => break reason,
                    None => break StopReason::Shutdown,
                },
            }
        };
        for (_, (tx, handle)) in self.loops.drain() {
            let _ = tx.send(reason);
            let _ = handle.await;
        }
        if let Ok(mut d) = self.shared.registry.dropped.lock() {
            d.remove(&self.cfg.job_name);
        }
    }

    /// The job's targets, and those relabeling dropped.
    fn targets(&self) -> (Vec<Target>, DroppedTargets) {
        let mut out = Vec::new();
        let mut dropped = DroppedTargets::default();
        let mut providers: Vec<&usize> = self.groups.keys().collect();
        providers.sort();
        for p in providers {
            for g in &self.groups[p] {
                for t in &g.targets {
                    match populate(&self.cfg, &g.labels, t) {
                        Ok(t) => out.push(t),
                        Err(Dropped::Relabeled(discovered)) => {
                            dropped.count += 1;
                            if dropped.shown.len() < DroppedTargets::SHOWN {
                                dropped.shown.push(discovered);
                            }
                        }
                        Err(Dropped::Invalid(why)) => {
                            tracing::warn!(job = %self.cfg.job_name, source = %g.source, reason = %why, "dropping invalid target")
                        }
                    }
                }
            }
        }
        (out, dropped)
    }

    fn sync(&mut self) {
        let (targets, dropped) = self.targets();
        if let Ok(mut d) = self.shared.registry.dropped.lock() {
            d.insert(self.cfg.job_name.clone(), dropped);
        }
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
