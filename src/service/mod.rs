//! The service: starts the component graph a config describes in dependency order
//! (extensions, exporters, pipelines, receivers), reloads it keeping what did not change, and
//! stops it in reverse, flushing batches. What each component is and how it starts belongs to
//! its kind (`components.rs`, the registration list); the document and the checks across
//! components are `config.rs`.

pub mod components;
pub mod config;
mod graph;
pub mod schema;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::AgentState;
use crate::config::{same_port, ComponentId};
use crate::exporters::StartedExporter;
use crate::extensions::health_check::{Health, HealthState};
use crate::http_server::Served;
use crate::model::Metrics;
use crate::pipeline::Fanout;
use crate::processors::memory_limiter::SharedGates;
use crate::store::Store;
use crate::telemetry::{SharedTelemetry, Telemetry};
use components::StartedReceiver;

/// An HTTP server we started, by name (`health_check`, `zpages`, `telemetry`, or a `promql`
/// exporter's id).
struct Server {
    name: String,
    served: Served,
}

impl Server {
    async fn stop(self) {
        self.served.stop(Duration::from_secs(2)).await;
    }
}

/// A started exporter and the one sender of its input the service keeps.
struct ExporterHandle {
    fingerprint: String,
    input: mpsc::Sender<Metrics>,
    started: StartedExporter,
}

/// A started receiver, with the outputs and memory gates a reload can repoint.
struct ReceiverHandle {
    fingerprint: String,
    receiver: StartedReceiver,
    out: Fanout,
    gates: SharedGates,
}

/// An exporter whose settings changed: its input is open already, and it starts once its old
/// instance has drained (same port, same queue directory).
struct Deferred {
    id: ComponentId,
    old: Option<ExporterHandle>,
    fingerprint: String,
    rx: mpsc::Receiver<Metrics>,
    tx: mpsc::Sender<Metrics>,
}

/// A running agent.
pub struct Running {
    cfg: Arc<Config>,
    /// Tasks that run until shutdown or reload (memory limiter checks).
    background: Vec<JoinHandle<()>>,
    receivers: Vec<(ComponentId, ReceiverHandle)>,
    /// Pipeline stages and fan-outs, which end as their inputs close.
    stages: Vec<JoinHandle<()>>,
    exporters: Vec<(ComponentId, ExporterHandle)>,
    /// Extension and self-telemetry servers, each with the config it was started from.
    servers: Vec<(String, Server)>,
    pub health: Arc<HealthState>,
    pub telemetry: SharedTelemetry,
    /// The config, start time, last reload and scrape targets, kept across reloads.
    pub agent: Arc<AgentState>,
}

/// What a new config can reuse from the running one.
#[derive(Default)]
struct Reusable {
    servers: Vec<(String, Server)>,
    exporters: Vec<(ComponentId, ExporterHandle)>,
    receivers: Vec<(ComponentId, ReceiverHandle)>,
}

/// Closes an exporter's input and waits for it to drain, stopping it at `until`.
async fn stop_exporter(name: &str, e: ExporterHandle, until: tokio::time::Instant) {
    let ExporterHandle { input, started, .. } = e;
    let StartedExporter {
        mut task, server, ..
    } = started;
    drop(input);
    if tokio::time::timeout_at(until, &mut task).await.is_err() {
        // Stop it for real: a persistent queue keeps what was not delivered, and a restarted
        // exporter must be the only one using its directory.
        task.abort();
        let _ = task.await;
        tracing::warn!(exporter = %name, "exporter did not drain before the deadline");
    }
    if let Some(s) = server {
        s.stop(Duration::from_secs(2)).await;
    }
}

impl Running {
    /// Starts everything the config describes.
    pub async fn start(cfg: Arc<Config>) -> Result<Running, String> {
        let agent = Arc::new(AgentState::new(Arc::new(cfg.overview())));
        let telemetry = Arc::new(Telemetry::new());
        let health = Arc::new(HealthState::default());
        let (running, _nothing_deferred) =
            Self::assemble(cfg, Reusable::default(), telemetry, health, agent).await?;
        Ok(running)
    }

    /// Applies a new (already validated) config, restarting only what changed: unchanged
    /// receivers and jobs keep their scrape loops, unchanged exporters their queues and the
    /// façade its window; pipelines are rebuilt and receivers repointed at them.
    pub async fn reload(self, cfg: Arc<Config>) -> Result<Running, String> {
        for b in &self.background {
            b.abort();
        }
        let reusable = Reusable {
            servers: self.servers,
            exporters: self.exporters,
            receivers: self.receivers,
        };
        let started = Self::assemble(
            cfg,
            reusable,
            self.telemetry,
            self.health,
            self.agent.clone(),
        )
        .await;
        // The old pipelines end as their inputs close (receivers now feed the new ones).
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        for s in self.stages {
            let _ = tokio::time::timeout_at(until, s).await;
        }
        let (mut running, deferred) = started?;
        for d in deferred {
            let mut window = None;
            if let Some(old) = d.old {
                window = old.started.store.clone();
                stop_exporter(&d.id.to_string(), old, until).await;
            }
            let started = running.start_exporter(&d.id, d.rx, window).await?;
            running.exporters.push((
                d.id,
                ExporterHandle {
                    fingerprint: d.fingerprint,
                    input: d.tx,
                    started,
                },
            ));
        }
        let now = SystemTime::now();
        running.agent.reload.store(Arc::new(Some(format!(
            "applied at {}",
            httpdate::fmt_http_date(now)
        ))));
        running.agent.config.store(Arc::new(running.cfg.overview()));
        running.agent.applied.store(Arc::new((now, true)));
        Ok(running)
    }

    /// Records a refused reload (shown on zpages); the running config stays.
    pub fn reload_refused(&self, error: &str) {
        let applied = self.agent.applied.load().0;
        self.agent.applied.store(Arc::new((applied, false)));
        self.agent.reload.store(Arc::new(Some(format!(
            "refused at {}; still running the previous config: {error}",
            httpdate::fmt_http_date(SystemTime::now())
        ))));
    }

    async fn assemble(
        cfg: Arc<Config>,
        mut old: Reusable,
        telemetry: SharedTelemetry,
        health: Arc<HealthState>,
        agent: Arc<AgentState>,
    ) -> Result<(Running, Vec<Deferred>), String> {
        // Scraped samples older than every window kept here are dropped at the scrape.
        crate::receivers::prometheus::scrape::set_past_sample_limit(
            cfg.longest_window().unwrap_or(Duration::from_secs(3600)),
        );
        let mut running = Running {
            cfg,
            background: Vec::new(),
            receivers: Vec::new(),
            stages: Vec::new(),
            exporters: Vec::new(),
            servers: Vec::new(),
            health,
            telemetry,
            agent,
        };
        running
            .start_servers(std::mem::take(&mut old.servers))
            .await?;
        let (inputs, deferred) = running.start_exporters(&mut old.exporters).await?;
        // Exporters no pipeline uses any more drain and stop, once the receivers are done.
        let unused = std::mem::take(&mut old.exporters);
        let (outputs, gates) = running.build_pipelines(inputs)?;
        running
            .start_receivers(std::mem::take(&mut old.receivers), outputs, gates)
            .await?;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        for (id, e) in unused {
            stop_exporter(&id.to_string(), e, until).await;
        }
        running.health.set(Health::Ready);
        Ok((running, deferred))
    }

    /// The query façade stores, by exporter id.
    pub fn stores(&self) -> Vec<(String, Arc<Store>)> {
        self.exporters
            .iter()
            .filter_map(|(id, e)| Some((id.to_string(), e.started.store.clone()?)))
            .collect()
    }

    /// The config this agent runs.
    pub fn config(&self) -> Arc<Config> {
        self.cfg.clone()
    }

    /// Every server this agent runs, by name.
    fn served(&self) -> impl Iterator<Item = (String, &Served)> {
        let servers = self
            .servers
            .iter()
            .map(|(_, s)| (s.name.clone(), &s.served));
        let exporters = (self.exporters.iter())
            .filter_map(|(id, e)| Some((id.to_string(), e.started.server.as_ref()?)));
        servers.chain(exporters)
    }

    /// Whether `cfg` can start here, checked before the running graph is taken apart: every
    /// address it listens on that this agent does not already hold must be free. A reload
    /// that fails this is refused whole, and the running config stays.
    pub fn preflight(&self, cfg: &Config) -> Result<(), String> {
        let mut held: Vec<SocketAddr> = self.served().map(|(_, s)| s.addr).collect();
        for (_, r) in &self.receivers {
            held.extend(r.receiver.addresses());
        }
        for (name, addr) in cfg.listeners() {
            if addr.port() == 0 || held.iter().any(|h| same_port(*h, addr)) {
                continue;
            }
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))?;
        }
        Ok(())
    }

    /// Address a started server listens on, by name (`health_check`, `zpages`, `telemetry`,
    /// or a `promql` exporter's id).
    pub fn server_address(&self, name: &str) -> Option<SocketAddr> {
        self.served().find(|(n, _)| *n == name).map(|(_, s)| s.addr)
    }

    /// Stops scraping, flushes batches to the exporters and lets them drain until `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        self.health.set(Health::ShuttingDown);
        for b in &self.background {
            b.abort();
        }
        let until = tokio::time::Instant::now() + deadline;
        for (_, r) in self.receivers {
            r.receiver.shutdown().await;
            // Closes the pipeline inputs, so the stages flush and end.
            r.out.replace(Vec::new());
        }
        for s in self.stages {
            let _ = tokio::time::timeout_at(until, s).await;
        }
        for (id, e) in self.exporters {
            stop_exporter(&id.to_string(), e, until).await;
        }
        for (_, s) in self.servers {
            s.stop().await;
        }
    }
}
