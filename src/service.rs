//! The service: builds the component graph from a config, starts it in dependency order
//! (extensions, exporters, processors, receivers) and stops it in reverse, flushing batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::AgentState;
use crate::config::{
    parse_listen_address, ComponentId, Config, ExporterConfig, ExtensionConfig, ProcessorConfig,
    ReceiverConfig,
};
use crate::exporters;
use crate::extensions::bearer_token_auth::BearerTokenAuth;
use crate::extensions::health_check::{self, Health, HealthState};
use crate::extensions::zpages::{self, ZpagesState};
use crate::model::Metrics;
use crate::pipeline::{run_fanout, run_stage, Fanout, CHANNEL_CAPACITY};
use crate::processors::attributes::{AttributesProcessor, ResourceProcessor};
use crate::processors::filter::FilterProcessor;
use crate::processors::memory_limiter::{self, MemoryGate, SharedGates};
use crate::processors::{batch, Processor};
use crate::receivers::otlp::OtlpReceiver;
use crate::receivers::prometheus::PrometheusReceiver;
use crate::store::Store;
use crate::telemetry::{SharedTelemetry, Telemetry};

/// An HTTP server we started, with its stop switch.
struct Server {
    name: String,
    addr: SocketAddr,
    served: crate::http_server::Served,
}

/// A started exporter: its input (the one sender the service keeps), its task, and for the
/// query façade its server and store.
struct ExporterHandle {
    fingerprint: String,
    input: mpsc::Sender<Metrics>,
    task: JoinHandle<()>,
    server: Option<Server>,
    store: Option<Arc<Store>>,
}

/// A started receiver, with the outputs and memory gates a reload can repoint.
struct ReceiverHandle {
    fingerprint: String,
    receiver: StartedReceiver,
    out: Fanout,
    gates: SharedGates,
}

enum StartedReceiver {
    Prometheus(PrometheusReceiver),
    Otlp(OtlpReceiver),
}

impl StartedReceiver {
    async fn shutdown(self) {
        match self {
            StartedReceiver::Prometheus(r) => r.shutdown().await,
            StartedReceiver::Otlp(r) => r.shutdown().await,
        }
    }
}

/// What decides whether a receiver restarts on reload: its config, and for OTLP the
/// authenticators it names.
fn receiver_fingerprint(cfg: &Config, rc: &ReceiverConfig) -> String {
    let mut fp = format!("{rc:#?}");
    if let ReceiverConfig::Otlp(o) = rc {
        let p = &o.protocols;
        let names = [
            p.grpc.as_ref().and_then(|g| g.auth.as_ref()),
            p.http.as_ref().and_then(|h| h.auth.as_ref()),
        ];
        for a in names.into_iter().flatten() {
            if let Ok(id) = ComponentId::parse(&a.authenticator) {
                fp.push_str(&format!("{:#?}", cfg.raw.extensions.get(&id)));
            }
        }
    }
    fp
}

/// The bearer-token authenticator an OTLP receiver names, by extension id.
fn authenticator(cfg: &Config, name: &str) -> Option<BearerTokenAuth> {
    let id = ComponentId::parse(name).ok()?;
    match cfg.raw.extensions.get(&id) {
        Some(ExtensionConfig::BearerTokenAuth(b)) => Some(BearerTokenAuth::new(b.clone())),
        _ => None,
    }
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
    zpages: Vec<(String, Arc<ZpagesState>)>,
    pub health: Arc<HealthState>,
    pub telemetry: SharedTelemetry,
    /// The config, start time, last reload and scrape targets, kept across reloads.
    pub agent: Arc<AgentState>,
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))
}

fn serve(
    name: &str,
    listener: TcpListener,
    router: axum::Router,
    telemetry: &SharedTelemetry,
) -> Server {
    let served = crate::http_server::serve(
        name,
        listener,
        router,
        crate::http_server::Limits::default(),
        Some(telemetry.clone()),
    );
    tracing::info!(server = %name, address = %served.addr, "listening");
    Server {
        name: name.to_string(),
        addr: served.addr,
        served,
    }
}

fn build_processor(
    id: &ComponentId,
    cfg: &ProcessorConfig,
) -> Result<Option<Box<dyn Processor>>, String> {
    let p: Box<dyn Processor> = match cfg {
        // A stage of its own (batch), or a gate at the receivers (memory_limiter).
        ProcessorConfig::Batch(_) | ProcessorConfig::MemoryLimiter(_) => return Ok(None),
        ProcessorConfig::Filter(f) => {
            Box::new(FilterProcessor::new(f).map_err(|e| format!("{id}: {e}"))?)
        }
        ProcessorConfig::Attributes(a) => {
            Box::new(AttributesProcessor::new(a).map_err(|e| format!("{id}: {e}"))?)
        }
        ProcessorConfig::Resource(a) => {
            Box::new(ResourceProcessor::new(a).map_err(|e| format!("{id}: {e}"))?)
        }
    };
    Ok(Some(p))
}

/// The on-disk queue location of an exporter whose `sending_queue.storage` names a
/// `file_storage` extension (checked when the config was loaded).
fn storage_for(
    cfg: &Config,
    exporter: &str,
    queue: &exporters::otlp::QueueConfig,
) -> Option<exporters::otlp::Storage> {
    let id = ComponentId::parse(queue.storage.as_deref()?).ok()?;
    match cfg.raw.extensions.get(&id)? {
        ExtensionConfig::FileStorage(f) => Some(exporters::otlp::Storage {
            dir: f.queue_dir(exporter),
            fsync: f.fsync,
            max_bytes: f.max_size_mib.saturating_mul(1 << 20),
        }),
        _ => None,
    }
}

/// What a new config can reuse from the running one.
#[derive(Default)]
struct Reusable {
    servers: Vec<(String, Server)>,
    zpages: Vec<(String, Arc<ZpagesState>)>,
    exporters: Vec<(ComponentId, ExporterHandle)>,
    receivers: Vec<(ComponentId, ReceiverHandle)>,
}

fn exporter_fingerprint(cfg: &Config, id: &ComponentId) -> String {
    // The storage directory belongs to the exporter's identity too.
    let storage = match cfg.raw.exporters.get(id).and_then(ExporterConfig::queue) {
        Some(q) => format!("{:#?}", storage_for(cfg, &id.to_string(), q)),
        None => String::new(),
    };
    format!("{:#?}{storage}", cfg.raw.exporters.get(id))
}

/// Starts an exporter. A `promql` exporter restarted for a change of its query settings
/// takes over `window`, the store of the instance it replaces, when the store's own bound is
/// unchanged: Flagger's next check sees the same window, not an empty one.
async fn start_exporter(
    cfg: &Config,
    id: &ComponentId,
    rx: mpsc::Receiver<Metrics>,
    telemetry: &SharedTelemetry,
    agent: &Arc<AgentState>,
    window: Option<Arc<Store>>,
) -> Result<(JoinHandle<()>, Option<Server>, Option<Arc<Store>>), String> {
    let ec = cfg
        .raw
        .exporters
        .get(id)
        .ok_or_else(|| format!("exporter {id} is not configured"))?;
    let name = id.to_string();
    let t = telemetry.clone();
    Ok(match ec {
        ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => {
            let tr: Arc<dyn exporters::otlp::Transport> = match ec {
                ExporterConfig::Otlp(_) => Arc::new(
                    exporters::otlp::grpc::GrpcTransport::new(c)
                        .map_err(|e| format!("exporter {id}: {e}"))?,
                ),
                _ => Arc::new(
                    exporters::otlp::http::HttpTransport::new(c)
                        .map_err(|e| format!("exporter {id}: {e}"))?,
                ),
            };
            let storage = storage_for(cfg, &name, &c.sending_queue);
            let task = tokio::spawn(exporters::otlp::run(
                name,
                exporters::otlp::Delivery::otlp(c),
                tr,
                rx,
                t,
                storage,
            ));
            (task, None, None)
        }
        ExporterConfig::PrometheusRemoteWrite(c) => {
            let tr: Arc<dyn exporters::otlp::Transport> = Arc::new(
                exporters::remote_write::RemoteWriteTransport::new(c)
                    .map_err(|e| format!("exporter {id}: {e}"))?,
            );
            let storage = storage_for(cfg, &name, &c.remote_write_queue);
            let encoder = c.encoder();
            let delivery = exporters::otlp::Delivery {
                queue: c.remote_write_queue.clone(),
                retry: c.retry_on_failure.clone(),
                encode: Arc::new(move |m| encoder.batch(m)),
            };
            let task = tokio::spawn(exporters::otlp::run(name, delivery, tr, rx, t, storage));
            (task, None, None)
        }
        ExporterConfig::Debug(c) => (
            tokio::spawn(exporters::debug::run(name, c.clone(), rx, t)),
            None,
            None,
        ),
        ExporterConfig::Promql(c) => {
            let addr = parse_listen_address(&c.endpoint)?;
            let l = bind(&name, addr).await?;
            // The query memory budget is sized from the agent's memory limit, if it has one.
            let memory_limit = cfg.raw.processors.0.iter().find_map(|(_, p)| match p {
                ProcessorConfig::MemoryLimiter(m) => Some(m.limits().0),
                _ => None,
            });
            let (router, store) = c
                .facade(
                    &name,
                    telemetry.clone(),
                    memory_limit,
                    agent.clone(),
                    window,
                )
                .map_err(|e| format!("exporter {id}: {e}"))?;
            let server = serve(&name, l, router, telemetry);
            let task = tokio::spawn(exporters::promql::run_ingest(
                name,
                (**c).clone(),
                store.clone(),
                rx,
                t,
            ));
            (task, Some(server), Some(store))
        }
    })
}

async fn stop_server(s: Server) {
    s.served.stop(Duration::from_secs(2)).await;
}

/// Closes an exporter's input and waits for it to drain, stopping it at `until`.
async fn stop_exporter(name: &str, e: ExporterHandle, until: tokio::time::Instant) {
    let ExporterHandle {
        input,
        mut task,
        server,
        ..
    } = e;
    drop(input);
    if tokio::time::timeout_at(until, &mut task).await.is_err() {
        // Stop it for real: a persistent queue keeps what was not delivered, and a restarted
        // exporter must be the only one using its directory.
        task.abort();
        let _ = task.await;
        tracing::warn!(exporter = %name, "exporter did not drain before the deadline");
    }
    if let Some(s) = server {
        stop_server(s).await;
    }
}

impl Running {
    /// Starts everything the config describes.
    pub async fn start(cfg: Arc<Config>) -> Result<Running, String> {
        let agent = Arc::new(AgentState::new(cfg.clone()));
        Self::assemble(
            cfg,
            Reusable::default(),
            Arc::new(Telemetry::new()),
            Arc::new(HealthState::default()),
            agent,
        )
        .await
        .map(|(running, _nothing_deferred)| running)
    }

    /// Applies a new (already validated) config, restarting only what changed: unchanged
    /// receivers and jobs keep their scrape loops, unchanged exporters their queues and the
    /// façade its window; pipelines are rebuilt and receivers repointed at them.
    pub async fn reload(self, cfg: Arc<Config>) -> Result<Running, String> {
        let Running {
            cfg: _,
            background,
            receivers,
            stages,
            exporters,
            servers,
            zpages,
            health,
            telemetry,
            agent,
        } = self;
        for b in background {
            b.abort();
        }
        let reusable = Reusable {
            servers,
            zpages,
            exporters,
            receivers,
        };
        let started = Self::assemble(cfg, reusable, telemetry, health, agent.clone()).await;
        // The old pipelines end as their inputs close (receivers now feed the new ones).
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        for s in stages {
            let _ = tokio::time::timeout_at(until, s).await;
        }
        let (running, deferred) = started?;
        let mut running = running;
        for (id, old, rx) in deferred {
            // A changed exporter restarts once its old instance has drained (same port, same
            // queue directory).
            let name = id.to_string();
            let mut window = None;
            if let Some(old) = old {
                window = old.store.clone();
                stop_exporter(&name, old, until).await;
            }
            let (task, server, store) = start_exporter(
                &running.cfg,
                &id,
                rx.0,
                &running.telemetry,
                &running.agent,
                window,
            )
            .await?;
            running.exporters.push((
                id,
                ExporterHandle {
                    fingerprint: rx.1,
                    input: rx.2,
                    task,
                    server,
                    store,
                },
            ));
        }
        running.agent.reload.store(Arc::new(Some(format!(
            "applied at {}",
            httpdate::fmt_http_date(SystemTime::now())
        ))));
        running.agent.config.store(running.cfg.clone());
        running
            .agent
            .applied
            .store(Arc::new((SystemTime::now(), true)));
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

    #[allow(clippy::type_complexity)]
    async fn assemble(
        cfg: Arc<Config>,
        mut old: Reusable,
        telemetry: SharedTelemetry,
        health: Arc<HealthState>,
        agent: Arc<AgentState>,
    ) -> Result<
        (
            Running,
            Vec<(
                ComponentId,
                Option<ExporterHandle>,
                (mpsc::Receiver<Metrics>, String, mpsc::Sender<Metrics>),
            )>,
        ),
        String,
    > {
        // Scraped samples older than every window kept here are dropped at the scrape.
        let longest_window = cfg
            .raw
            .exporters
            .0
            .iter()
            .filter_map(|(_, e)| match e {
                ExporterConfig::Promql(p) => Some(p.retention),
                _ => None,
            })
            .max();
        crate::receivers::prometheus::scrape::set_past_sample_limit(
            longest_window.unwrap_or(Duration::from_secs(3600)),
        );
        // Extensions and self-telemetry: kept when their config is unchanged.
        let extension_fp = |id: &ComponentId, ext: &ExtensionConfig| format!("{id} {ext:#?}");
        let telemetry_fp = format!("telemetry {:#?}", cfg.raw.service.telemetry.metrics);
        let telemetry_addr = cfg.raw.service.telemetry.metrics.listen_address()?;
        let mut wanted_servers: Vec<String> = cfg
            .extensions
            .iter()
            .filter_map(|id| Some(extension_fp(id, cfg.raw.extensions.get(id)?)))
            .collect();
        if telemetry_addr.is_some() {
            wanted_servers.push(telemetry_fp.clone());
        }
        let mut servers: Vec<(String, Server)> = Vec::new();
        let mut zpages: Vec<(String, Arc<ZpagesState>)> = Vec::new();
        for (fp, server) in std::mem::take(&mut old.servers) {
            if wanted_servers.contains(&fp) {
                servers.push((fp, server));
            } else {
                stop_server(server).await;
            }
        }
        for (fp, z) in std::mem::take(&mut old.zpages) {
            if servers.iter().any(|(f, _)| *f == fp) {
                z.config.store(cfg.clone());
                zpages.push((fp, z));
            }
        }
        for id in &cfg.extensions {
            let Some(ext) = cfg.raw.extensions.get(id) else {
                continue;
            };
            let fp = extension_fp(id, ext);
            match ext {
                ExtensionConfig::FileStorage(f) => {
                    if f.create_directory {
                        std::fs::create_dir_all(&f.directory)
                            .map_err(|e| format!("extension {id}: {}: {e}", f.directory))?;
                    }
                    continue;
                }
                // Used by the receivers that name it.
                ExtensionConfig::BearerTokenAuth(_) => continue,
                _ if servers.iter().any(|(f, _)| *f == fp) => continue,
                ExtensionConfig::HealthCheck(h) => {
                    let addr = parse_listen_address(&h.endpoint)?;
                    let l = bind(&id.to_string(), addr).await?;
                    let router = health_check::router(h, health.clone(), telemetry.clone());
                    servers.push((fp, serve(&id.to_string(), l, router, &telemetry)));
                }
                ExtensionConfig::Zpages(z) => {
                    let addr = parse_listen_address(&z.endpoint)?;
                    let l = bind(&id.to_string(), addr).await?;
                    let state = Arc::new(ZpagesState {
                        config: arc_swap::ArcSwap::new(cfg.clone()),
                        started: SystemTime::now(),
                        targets: agent.targets.clone(),
                        reload: agent.reload.clone(),
                        telemetry: telemetry.clone(),
                    });
                    zpages.push((fp.clone(), state.clone()));
                    servers.push((
                        fp,
                        serve(&id.to_string(), l, zpages::router(state), &telemetry),
                    ));
                }
            }
        }
        if let Some(addr) = telemetry_addr {
            let fp = telemetry_fp;
            if !servers.iter().any(|(f, _)| *f == fp) {
                let l = bind("service.telemetry.metrics", addr).await?;
                let t = telemetry.clone();
                let router = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let t = t.clone();
                        async move {
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                t.render(),
                            )
                        }
                    }),
                );
                servers.push((fp, serve("telemetry", l, router, &telemetry)));
            }
        }

        // Exporters used by any pipeline: reused when unchanged, started when new, and for
        // changed ones a fresh input now and a restart once the old instance has drained.
        let mut exporter_inputs: HashMap<ComponentId, mpsc::Sender<Metrics>> = HashMap::new();
        let mut exporters_running: Vec<(ComponentId, ExporterHandle)> = Vec::new();
        let mut deferred = Vec::new();
        for p in &cfg.pipelines {
            for id in &p.exporters {
                if exporter_inputs.contains_key(id) {
                    continue;
                }
                let fp = exporter_fingerprint(&cfg, id);
                let previous = old
                    .exporters
                    .iter()
                    .position(|(i, _)| i == id)
                    .map(|i| old.exporters.remove(i).1);
                match previous {
                    Some(h) if h.fingerprint == fp => {
                        exporter_inputs.insert(id.clone(), h.input.clone());
                        exporters_running.push((id.clone(), h));
                    }
                    Some(h) => {
                        let (tx, rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                        exporter_inputs.insert(id.clone(), tx.clone());
                        deferred.push((id.clone(), Some(h), (rx, fp, tx)));
                    }
                    None => {
                        let (tx, rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                        let (task, server, store) =
                            start_exporter(&cfg, id, rx, &telemetry, &agent, None).await?;
                        exporter_inputs.insert(id.clone(), tx.clone());
                        exporters_running.push((
                            id.clone(),
                            ExporterHandle {
                                fingerprint: fp,
                                input: tx,
                                task,
                                server,
                                store,
                            },
                        ));
                    }
                }
            }
        }
        // Exporters no pipeline uses any more drain and stop.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let unused = std::mem::take(&mut old.exporters);

        // Memory limiters: one gate per processor id, closed at the receivers of its pipelines.
        let mut background = Vec::new();
        let mut gates: HashMap<ComponentId, Arc<MemoryGate>> = HashMap::new();
        let mut receiver_gates: HashMap<ComponentId, Vec<Arc<MemoryGate>>> = HashMap::new();
        for p in &cfg.pipelines {
            for pid in &p.processors {
                let Some(ProcessorConfig::MemoryLimiter(m)) = cfg.raw.processors.get(pid) else {
                    continue;
                };
                let gate = gates
                    .entry(pid.clone())
                    .or_insert_with(|| {
                        let gate = Arc::new(MemoryGate::default());
                        background.push(tokio::spawn(memory_limiter::run(
                            pid.to_string(),
                            m.clone(),
                            gate.clone(),
                        )));
                        gate
                    })
                    .clone();
                for r in &p.receivers {
                    receiver_gates
                        .entry(r.clone())
                        .or_default()
                        .push(gate.clone());
                }
            }
        }

        // Pipelines: input → processors → fan-out to exporters.
        let mut stages = Vec::new();
        let mut receiver_outputs: HashMap<ComponentId, Vec<mpsc::Sender<Metrics>>> = HashMap::new();
        for p in &cfg.pipelines {
            let (input_tx, mut rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
            for pid in &p.processors {
                let Some(pc) = cfg.raw.processors.get(pid) else {
                    continue;
                };
                if let ProcessorConfig::MemoryLimiter(_) = pc {
                    continue; // acts at the receivers, not on the data
                }
                let (tx, next_rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                match pc {
                    ProcessorConfig::Batch(b) => {
                        stages.push(tokio::spawn(batch::run(b.clone(), rx, tx)))
                    }
                    other => {
                        let proc_ = build_processor(pid, other)?
                            .ok_or_else(|| format!("processor {pid} is not a pipeline stage"))?;
                        stages.push(tokio::spawn(run_stage(proc_, rx, tx)));
                    }
                }
                rx = next_rx;
            }
            let outs: Vec<mpsc::Sender<Metrics>> = p
                .exporters
                .iter()
                .filter_map(|e| exporter_inputs.get(e).cloned())
                .collect();
            stages.push(tokio::spawn(run_fanout(rx, Fanout::new(outs))));
            for r in &p.receivers {
                receiver_outputs
                    .entry(r.clone())
                    .or_default()
                    .push(input_tx.clone());
            }
        }
        drop(exporter_inputs);

        // Receivers last: kept ones are repointed at the new pipelines (and reconfigured job
        // by job when their config changed); new ones start; removed ones stop.
        let mut receivers = Vec::new();
        for (id, rc) in &cfg.raw.receivers.0 {
            let Some(outs) = receiver_outputs.remove(id) else {
                continue;
            };
            let gate_list = receiver_gates.remove(id).unwrap_or_default();
            let fp = receiver_fingerprint(&cfg, rc);
            let previous = old
                .receivers
                .iter()
                .position(|(i, _)| i == id)
                .map(|i| old.receivers.remove(i).1);
            match (rc, previous) {
                (ReceiverConfig::Prometheus(pc), Some(mut h)) => {
                    h.out.replace(outs);
                    h.gates.store(Arc::new(gate_list));
                    if h.fingerprint != fp {
                        if let StartedReceiver::Prometheus(r) = &mut h.receiver {
                            r.reconfigure(pc)
                                .await
                                .map_err(|e| format!("receiver {id}: {e}"))?;
                        }
                        h.fingerprint = fp;
                    }
                    receivers.push((id.clone(), h));
                }
                (ReceiverConfig::Otlp(oc), Some(mut h)) => {
                    h.out.replace(outs);
                    h.gates.store(Arc::new(gate_list));
                    if h.fingerprint != fp {
                        // Its ports may stay the same: the old servers stop first.
                        h.receiver.shutdown().await;
                        h.receiver = StartedReceiver::Otlp(
                            OtlpReceiver::start(
                                id.to_string(),
                                oc,
                                h.out.clone(),
                                telemetry.clone(),
                                h.gates.clone(),
                                &|name| authenticator(&cfg, name),
                            )
                            .await
                            .map_err(|e| format!("receiver {id}: {e}"))?,
                        );
                        h.fingerprint = fp;
                    }
                    receivers.push((id.clone(), h));
                }
                (ReceiverConfig::Otlp(oc), None) => {
                    let out = Fanout::new(outs);
                    let gates: SharedGates = Arc::new(arc_swap::ArcSwap::from_pointee(gate_list));
                    let receiver = OtlpReceiver::start(
                        id.to_string(),
                        oc,
                        out.clone(),
                        telemetry.clone(),
                        gates.clone(),
                        &|name| authenticator(&cfg, name),
                    )
                    .await
                    .map_err(|e| format!("receiver {id}: {e}"))?;
                    receivers.push((
                        id.clone(),
                        ReceiverHandle {
                            fingerprint: fp,
                            receiver: StartedReceiver::Otlp(receiver),
                            out,
                            gates,
                        },
                    ));
                }
                (ReceiverConfig::Prometheus(pc), None) => {
                    let out = Fanout::new(outs);
                    let gates: SharedGates = Arc::new(arc_swap::ArcSwap::from_pointee(gate_list));
                    let receiver = PrometheusReceiver::start(
                        id.to_string(),
                        pc,
                        out.clone(),
                        telemetry.clone(),
                        agent.targets.clone(),
                        gates.clone(),
                    )
                    .map_err(|e| format!("receiver {id}: {e}"))?;
                    receivers.push((
                        id.clone(),
                        ReceiverHandle {
                            fingerprint: fp,
                            receiver: StartedReceiver::Prometheus(receiver),
                            out,
                            gates,
                        },
                    ));
                }
            }
        }
        for (id, h) in std::mem::take(&mut old.receivers) {
            tracing::info!(receiver = %id, "receiver removed by reload");
            h.receiver.shutdown().await;
            h.out.replace(Vec::new());
        }
        for (id, e) in unused {
            stop_exporter(&id.to_string(), e, until).await;
        }
        health.set(Health::Ready);
        Ok((
            Running {
                cfg,
                background,
                receivers,
                stages,
                exporters: exporters_running,
                servers,
                zpages,
                health,
                telemetry,
                agent,
            },
            deferred,
        ))
    }

    /// The query façade stores, by exporter id.
    pub fn stores(&self) -> Vec<(String, Arc<Store>)> {
        self.exporters
            .iter()
            .filter_map(|(id, e)| Some((id.to_string(), e.store.clone()?)))
            .collect()
    }

    /// The config this agent runs.
    pub fn config(&self) -> Arc<Config> {
        self.cfg.clone()
    }

    /// Every address this agent listens on now.
    fn held_addresses(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .servers
            .iter()
            .map(|(_, s)| s.addr)
            .chain(
                self.exporters
                    .iter()
                    .filter_map(|(_, e)| e.server.as_ref().map(|s| s.addr)),
            )
            .collect();
        for (_, r) in &self.receivers {
            if let StartedReceiver::Otlp(o) = &r.receiver {
                out.extend(o.grpc_addr);
                out.extend(o.http_addr);
            }
        }
        out
    }

    /// Whether `cfg` can start here, checked before the running graph is taken apart: every
    /// address it listens on that this agent does not already hold must be free. A reload
    /// that fails this is refused whole, and the running config stays.
    pub fn preflight(&self, cfg: &Config) -> Result<(), String> {
        let held = self.held_addresses();
        for (name, addr) in cfg.listeners() {
            if addr.port() == 0 || held.iter().any(|h| crate::config::same_port(*h, addr)) {
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
        self.servers
            .iter()
            .map(|(_, s)| s)
            .chain(self.exporters.iter().filter_map(|(_, e)| e.server.as_ref()))
            .find(|s| s.name == name)
            .map(|s| s.addr)
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
            stop_server(s).await;
        }
    }
}
