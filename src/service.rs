//! The service: builds the component graph from a config, starts it in dependency order
//! (extensions, exporters, processors, receivers) and stops it in reverse, flushing batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{
    parse_listen_address, ComponentId, Config, ExporterConfig, ExtensionConfig, ProcessorConfig,
    ReceiverConfig,
};
use crate::exporters;
use crate::exporters::promql::api::{self, ApiState};
use crate::exporters::promql::queryz::QueryLog;
use crate::extensions::health_check::{self, Health, HealthState};
use crate::extensions::zpages::{self, ZpagesState};
use crate::model::Metrics;
use crate::pipeline::{run_fanout, run_stage, Fanout, CHANNEL_CAPACITY};
use crate::processors::attributes::{AttributesProcessor, ResourceProcessor};
use crate::processors::filter::FilterProcessor;
use crate::processors::{batch, Processor};
use crate::receivers::prometheus::scrape::TargetRegistry;
use crate::receivers::prometheus::PrometheusReceiver;
use crate::store::Store;
use crate::telemetry::{SharedTelemetry, Telemetry};

/// An HTTP server we started, with its stop switch.
struct Server {
    name: String,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running agent.
pub struct Running {
    receivers: Vec<PrometheusReceiver>,
    /// Pipeline stages and fan-outs, which end as their inputs close.
    stages: Vec<JoinHandle<()>>,
    exporters: Vec<(String, JoinHandle<()>)>,
    servers: Vec<Server>,
    pub health: Arc<HealthState>,
    pub telemetry: SharedTelemetry,
    pub targets: TargetRegistry,
    /// The query façade stores, by exporter id.
    pub stores: Vec<(String, Arc<Store>)>,
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))
}

fn serve(name: &str, listener: TcpListener, router: axum::Router) -> Server {
    let (stop, stop_rx) = oneshot::channel::<()>();
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .await;
    });
    Server {
        name: name.to_string(),
        addr,
        stop,
        task,
    }
}

fn build_processor(
    id: &ComponentId,
    cfg: &ProcessorConfig,
) -> Result<Option<Box<dyn Processor>>, String> {
    let p: Box<dyn Processor> = match cfg {
        ProcessorConfig::Batch(_) => return Ok(None),
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

impl Running {
    /// Starts everything the config describes.
    pub async fn start(cfg: Arc<Config>) -> Result<Running, String> {
        let telemetry: SharedTelemetry = Arc::new(Telemetry::new());
        let health = Arc::new(HealthState::default());
        let targets: TargetRegistry = Arc::default();
        let mut servers = Vec::new();

        // Extensions and self-telemetry first, so health reports "starting" meanwhile.
        for id in &cfg.extensions {
            let Some(ext) = cfg.raw.extensions.get(id) else {
                continue;
            };
            match ext {
                ExtensionConfig::HealthCheck(h) => {
                    let addr = parse_listen_address(&h.endpoint)?;
                    let l = bind(&id.to_string(), addr).await?;
                    servers.push(serve(
                        &id.to_string(),
                        l,
                        health_check::router(h, health.clone()),
                    ));
                }
                ExtensionConfig::Zpages(z) => {
                    let addr = parse_listen_address(&z.endpoint)?;
                    let l = bind(&id.to_string(), addr).await?;
                    let state = Arc::new(ZpagesState {
                        config: arc_swap::ArcSwap::new(cfg.clone()),
                        started: SystemTime::now(),
                        targets: targets.clone(),
                    });
                    servers.push(serve(&id.to_string(), l, zpages::router(state)));
                }
            }
        }
        if let Some(addr) = cfg.raw.service.telemetry.metrics.listen_address()? {
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
            servers.push(serve("telemetry", l, router));
        }

        // Exporters used by any pipeline.
        let mut exporter_inputs: HashMap<ComponentId, mpsc::Sender<Metrics>> = HashMap::new();
        let mut stores = Vec::new();
        let mut exporters_running = Vec::new();
        for p in &cfg.pipelines {
            for id in &p.exporters {
                if exporter_inputs.contains_key(id) {
                    continue;
                }
                let Some(ec) = cfg.raw.exporters.get(id) else {
                    continue;
                };
                let (tx, rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                let name = id.to_string();
                let t = telemetry.clone();
                let task = match ec {
                    ExporterConfig::Otlp(c) => {
                        let tr = exporters::otlp::grpc::GrpcTransport::new(c)
                            .map_err(|e| format!("exporter {id}: {e}"))?;
                        tokio::spawn(exporters::otlp::run(
                            name.clone(),
                            (**c).clone(),
                            Arc::new(tr),
                            rx,
                            t,
                        ))
                    }
                    ExporterConfig::OtlpHttp(c) => {
                        let tr = exporters::otlp::http::HttpTransport::new(c)
                            .map_err(|e| format!("exporter {id}: {e}"))?;
                        tokio::spawn(exporters::otlp::run(
                            name.clone(),
                            (**c).clone(),
                            Arc::new(tr),
                            rx,
                            t,
                        ))
                    }
                    ExporterConfig::Debug(c) => {
                        tokio::spawn(exporters::debug::run(name.clone(), c.clone(), rx, t))
                    }
                    ExporterConfig::Promql(c) => {
                        let store = Arc::new(Store::new(c.max_series));
                        let addr = parse_listen_address(&c.endpoint)?;
                        let l = bind(&name, addr).await?;
                        let state = Arc::new(ApiState {
                            store: store.clone(),
                            opts: c.eval_options(),
                            query_timeout: c.query_timeout,
                            credentials: c
                                .credentials()
                                .map_err(|e| format!("exporter {id}: {e}"))?,
                            queryz: QueryLog::new(c.queryz_size),
                            parsed: Default::default(),
                        });
                        servers.push(serve(&name, l, api::router(&c.path_prefix, state)));
                        stores.push((name.clone(), store.clone()));
                        tokio::spawn(exporters::promql::run_ingest(
                            name.clone(),
                            (**c).clone(),
                            store,
                            rx,
                            t,
                        ))
                    }
                };
                exporters_running.push((name, task));
                exporter_inputs.insert(id.clone(), tx);
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
                let (tx, next_rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                match pc {
                    ProcessorConfig::Batch(b) => {
                        stages.push(tokio::spawn(batch::run(b.clone(), rx, tx)))
                    }
                    other => {
                        if let Some(proc_) = build_processor(pid, other)? {
                            stages.push(tokio::spawn(run_stage(proc_, rx, tx)));
                        }
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

        // Receivers last.
        let mut receivers = Vec::new();
        for (id, rc) in &cfg.raw.receivers.0 {
            let Some(outs) = receiver_outputs.remove(id) else {
                continue;
            };
            match rc {
                ReceiverConfig::Prometheus(pc) => {
                    let r = PrometheusReceiver::start(
                        id.to_string(),
                        pc,
                        Fanout::new(outs),
                        telemetry.clone(),
                        targets.clone(),
                    )
                    .map_err(|e| format!("receiver {id}: {e}"))?;
                    receivers.push(r);
                }
            }
        }
        health.set(Health::Ready);
        for s in &servers {
            tracing::info!(server = %s.name, address = %s.addr, "listening");
        }
        Ok(Running {
            receivers,
            stages,
            exporters: exporters_running,
            servers,
            health,
            telemetry,
            targets,
            stores,
        })
    }

    /// Address a started server listens on, by name (`health_check`, `zpages`, `telemetry`).
    pub fn server_address(&self, name: &str) -> Option<SocketAddr> {
        self.servers.iter().find(|s| s.name == name).map(|s| s.addr)
    }

    /// Stops scraping, flushes batches to the exporters and lets them drain until `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        self.health.set(Health::ShuttingDown);
        let until = tokio::time::Instant::now() + deadline;
        for r in self.receivers {
            r.shutdown().await;
        }
        for s in self.stages {
            let _ = tokio::time::timeout_at(until, s).await;
        }
        for (name, e) in self.exporters {
            if tokio::time::timeout_at(until, e).await.is_err() {
                tracing::warn!(exporter = %name, "exporter did not drain before the shutdown deadline");
            }
        }
        for s in self.servers {
            let _ = s.stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), s.task).await;
        }
    }
}
