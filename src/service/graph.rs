//! The graph's parts, started in order by `Running::assemble`: servers (extensions, self
//! metrics), exporters, pipelines with their memory gates, receivers; each reusing what the running
//! graph had when its settings are unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::components::ExtensionConfig;
use super::{Deferred, ExporterHandle, ReceiverHandle, Running, Server};
use crate::config::ComponentId;
use crate::exporters::{ExporterContext, StartedExporter};
use crate::extensions::bearer_token_auth::BearerTokenAuth;
use crate::extensions::ExtensionContext;
use crate::model::Metrics;
use crate::pipeline::{run_fanout, Fanout, CHANNEL_CAPACITY};
use crate::processors::memory_limiter::{self, MemoryGate, SharedGates};
use crate::processors::Stage;
use crate::receivers::ReceiverContext;
use crate::store::Store;

/// Each receiver's memory gates, by receiver id.
type Gates = HashMap<ComponentId, Vec<Arc<MemoryGate>>>;
/// Each receiver's outputs (the inputs of its pipelines), by receiver id.
type Outputs = HashMap<ComponentId, Vec<mpsc::Sender<Metrics>>>;

impl Running {
    /// Extensions and the self-metrics server: kept when their config is unchanged.
    pub(super) async fn start_servers(&mut self, old: Vec<(String, Server)>) -> Result<(), String> {
        let cfg = self.cfg.clone();
        let extension_fp = |id: &ComponentId, ext: &ExtensionConfig| format!("{id} {ext:#?}");
        let telemetry_fp = format!("telemetry {:#?}", cfg.raw.service.telemetry.metrics);
        let telemetry_addr = cfg.raw.service.telemetry.metrics.listen_address()?;
        let mut wanted: Vec<String> = cfg
            .extensions
            .iter()
            .filter_map(|id| Some(extension_fp(id, cfg.raw.extensions.get(id)?)))
            .collect();
        if telemetry_addr.is_some() {
            wanted.push(telemetry_fp.clone());
        }
        for (fp, server) in old {
            if wanted.contains(&fp) {
                self.servers.push((fp, server));
            } else {
                server.stop().await;
            }
        }
        for id in &cfg.extensions {
            let Some(ext) = cfg.raw.extensions.get(id) else {
                continue;
            };
            let fp = extension_fp(id, ext);
            if self.servers.iter().any(|(f, _)| *f == fp) {
                continue;
            }
            let ctx = ExtensionContext {
                name: id.to_string(),
                health: self.health.clone(),
                telemetry: self.telemetry.clone(),
                agent: self.agent.clone(),
            };
            let served = ext.start(ctx).await.map_err(|e| format!("{id}: {e}"))?;
            if let Some(served) = served {
                let name = id.to_string();
                self.servers.push((fp, Server { name, served }));
            }
        }
        if let Some(addr) = telemetry_addr {
            if !self.servers.iter().any(|(f, _)| *f == telemetry_fp) {
                let router = crate::telemetry::metrics_router(self.telemetry.clone());
                let served = crate::http_server::listen(
                    "service.telemetry.metrics",
                    addr,
                    router,
                    &self.telemetry,
                )
                .await
                .map_err(|e| format!("service.telemetry.metrics: {e}"))?;
                let name = "telemetry".to_string();
                self.servers.push((telemetry_fp, Server { name, served }));
            }
        }
        Ok(())
    }

    /// Starts one exporter on `input`; `window` is the store of the `promql` instance it
    /// replaces.
    pub(super) async fn start_exporter(
        &self,
        id: &ComponentId,
        input: mpsc::Receiver<Metrics>,
        window: Option<Arc<Store>>,
    ) -> Result<StartedExporter, String> {
        let ec = self
            .cfg
            .raw
            .exporters
            .get(id)
            .ok_or_else(|| format!("exporter {id} is not configured"))?;
        let ctx = ExporterContext {
            name: id.to_string(),
            telemetry: self.telemetry.clone(),
            agent: self.agent.clone(),
            storage: self.cfg.storage_for(id),
            memory_limit: self.cfg.memory_limit(),
            window,
        };
        ec.start(ctx, input)
            .await
            .map_err(|e| format!("exporter {id}: {e}"))
    }

    /// Exporters used by any pipeline: reused when unchanged, started when new, and for
    /// changed ones a fresh input now and a restart once the old instance has drained.
    /// Returns every exporter's input.
    pub(super) async fn start_exporters(
        &mut self,
        old: &mut Vec<(ComponentId, ExporterHandle)>,
    ) -> Result<(HashMap<ComponentId, mpsc::Sender<Metrics>>, Vec<Deferred>), String> {
        let cfg = self.cfg.clone();
        let mut inputs = HashMap::new();
        let mut deferred = Vec::new();
        for id in cfg.pipelines.iter().flat_map(|p| &p.exporters) {
            if inputs.contains_key(id) {
                continue;
            }
            let fingerprint = cfg.exporter_fingerprint(id);
            let previous = old
                .iter()
                .position(|(i, _)| i == id)
                .map(|i| old.remove(i).1);
            match previous {
                Some(h) if h.fingerprint == fingerprint => {
                    inputs.insert(id.clone(), h.input.clone());
                    self.exporters.push((id.clone(), h));
                }
                previous => {
                    let (tx, rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                    inputs.insert(id.clone(), tx.clone());
                    if previous.is_some() {
                        deferred.push(Deferred {
                            id: id.clone(),
                            old: previous,
                            fingerprint,
                            rx,
                            tx,
                        });
                        continue;
                    }
                    let started = self.start_exporter(id, rx, None).await?;
                    let handle = ExporterHandle {
                        fingerprint,
                        input: tx,
                        started,
                    };
                    self.exporters.push((id.clone(), handle));
                }
            }
        }
        Ok((inputs, deferred))
    }

    /// Pipelines: input → processor stages → fan-out to the exporters. Returns each
    /// receiver's outputs (the inputs of its pipelines) and its memory gates: one gate per
    /// memory limiter id, closed at the receivers of the pipelines that list it.
    pub(super) fn build_pipelines(
        &mut self,
        exporter_inputs: HashMap<ComponentId, mpsc::Sender<Metrics>>,
    ) -> Result<(Outputs, Gates), String> {
        let cfg = self.cfg.clone();
        let mut outputs: Outputs = HashMap::new();
        let mut gates: HashMap<&ComponentId, Arc<MemoryGate>> = HashMap::new();
        let mut receiver_gates: Gates = HashMap::new();
        for p in &cfg.pipelines {
            let (input_tx, mut rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
            for pid in &p.processors {
                let Some(pc) = cfg.raw.processors.get(pid) else {
                    continue;
                };
                match pc.stage().map_err(|e| format!("{pid}: {e}"))? {
                    // Acts at the receivers, not on the data.
                    Stage::Gate(m) => {
                        let gate = gates.entry(pid).or_insert_with(|| {
                            let gate = Arc::new(MemoryGate::default());
                            let task = memory_limiter::run(pid.to_string(), m, gate.clone());
                            self.background.push(tokio::spawn(task));
                            gate
                        });
                        for r in &p.receivers {
                            let list = receiver_gates.entry(r.clone()).or_default();
                            list.push(gate.clone());
                        }
                    }
                    Stage::Task(start) => {
                        let (tx, next_rx) = mpsc::channel::<Metrics>(CHANNEL_CAPACITY);
                        self.stages.push(start(rx, tx));
                        rx = next_rx;
                    }
                }
            }
            let outs: Vec<mpsc::Sender<Metrics>> = p
                .exporters
                .iter()
                .filter_map(|e| exporter_inputs.get(e).cloned())
                .collect();
            self.stages
                .push(tokio::spawn(run_fanout(rx, Fanout::new(outs))));
            for r in &p.receivers {
                outputs.entry(r.clone()).or_default().push(input_tx.clone());
            }
        }
        Ok((outputs, receiver_gates))
    }

    /// Receivers last: kept ones are repointed at the new pipelines (and take new settings
    /// when their config changed); new ones start; removed ones stop.
    pub(super) async fn start_receivers(
        &mut self,
        mut old: Vec<(ComponentId, ReceiverHandle)>,
        mut outputs: Outputs,
        mut gates: Gates,
    ) -> Result<(), String> {
        let cfg = self.cfg.clone();
        let auth = |name: &str| cfg.authenticator(name);
        for (id, rc) in &cfg.raw.receivers.0 {
            let Some(outs) = outputs.remove(id) else {
                continue;
            };
            let gate_list = gates.remove(id).unwrap_or_default();
            let fingerprint = cfg.receiver_fingerprint(rc);
            let previous = old
                .iter()
                .position(|(i, _)| i == id)
                .map(|i| old.remove(i).1);
            let handle = match previous {
                Some(mut h) => {
                    h.out.replace(outs);
                    h.gates.store(Arc::new(gate_list));
                    if h.fingerprint != fingerprint {
                        let ctx = self.receiver_context(id, &h.out, &h.gates, &auth);
                        h.receiver = h
                            .receiver
                            .update(rc, ctx)
                            .await
                            .map_err(|e| format!("receiver {id}: {e}"))?;
                        h.fingerprint = fingerprint;
                    }
                    h
                }
                None => {
                    let out = Fanout::new(outs);
                    let gates: SharedGates = Arc::new(arc_swap::ArcSwap::from_pointee(gate_list));
                    let ctx = self.receiver_context(id, &out, &gates, &auth);
                    let receiver = rc
                        .start(ctx)
                        .await
                        .map_err(|e| format!("receiver {id}: {e}"))?;
                    ReceiverHandle {
                        fingerprint,
                        receiver,
                        out,
                        gates,
                    }
                }
            };
            self.receivers.push((id.clone(), handle));
        }
        for (id, h) in old {
            tracing::info!(receiver = %id, "receiver removed by reload");
            h.receiver.shutdown().await;
            h.out.replace(Vec::new());
        }
        Ok(())
    }

    fn receiver_context<'a>(
        &self,
        id: &ComponentId,
        out: &Fanout,
        gates: &SharedGates,
        authenticator: &'a dyn Fn(&str) -> Option<BearerTokenAuth>,
    ) -> ReceiverContext<'a> {
        ReceiverContext {
            name: id.to_string(),
            out: out.clone(),
            telemetry: self.telemetry.clone(),
            gates: gates.clone(),
            targets: self.agent.targets.clone(),
            authenticator,
        }
    }
}
