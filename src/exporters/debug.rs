//! The `debug` exporter: logs what would be sent (`basic`, `normal` or `detailed`).

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::model::{is_stale_nan, Metrics};
use crate::telemetry::{SharedTelemetry, Telemetry};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DebugExporterConfig {
    /// How much of each batch is logged: `basic` (counts), `normal` (one line per series) or
    /// `detailed` (every sample).
    #[serde(default = "default_verbosity")]
    pub verbosity: String,
    /// Accepted for compatibility with collector configs; every batch is logged.
    #[serde(default)]
    pub sampling_initial: Option<u64>,
    /// Accepted for compatibility with collector configs; every batch is logged.
    #[serde(default)]
    pub sampling_thereafter: Option<u64>,
}

fn default_verbosity() -> String {
    "basic".into()
}

impl Default for DebugExporterConfig {
    fn default() -> Self {
        DebugExporterConfig {
            verbosity: default_verbosity(),
            sampling_initial: None,
            sampling_thereafter: None,
        }
    }
}

impl DebugExporterConfig {
    /// Starts the exporter.
    pub fn start(
        &self,
        ctx: super::ExporterContext,
        input: super::Input,
    ) -> super::StartedExporter {
        super::StartedExporter::task(tokio::spawn(run(
            ctx.name,
            self.clone(),
            input,
            ctx.telemetry,
        )))
    }

    pub fn validate(&self) -> Result<(), String> {
        match self.verbosity.as_str() {
            "basic" | "normal" | "detailed" => Ok(()),
            v => Err(format!("verbosity {v:?} must be basic, normal or detailed")),
        }
    }
}

/// Text the exporter logs for one batch.
pub fn describe(m: &Metrics, verbosity: &str) -> Vec<String> {
    let families: usize = m.resources.iter().map(|r| r.families.len()).sum();
    let mut lines = vec![format!(
        "Metrics: resource metrics: {}, metrics: {}, data points: {}",
        m.resources.len(),
        families,
        m.point_count()
    )];
    if verbosity == "basic" {
        return lines;
    }
    for r in &m.resources {
        let res: Vec<String> = r.resource.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(format!(
            "ResourceMetrics [{}] scope {} {}",
            res.join(" "),
            r.scope_name,
            r.scope_version
        ));
        for f in &r.families {
            lines.push(format!(
                "  {} ({}) {} points",
                f.otlp_name(),
                f.kind.as_str(),
                f.samples.len()
            ));
            if verbosity == "detailed" {
                for s in &f.samples {
                    let v = if is_stale_nan(s.value) {
                        "<no recorded value>".to_string()
                    } else {
                        s.value.to_string()
                    };
                    lines.push(format!(
                        "    {}{} {} @{}",
                        s.name, s.labels, v, s.timestamp_ms
                    ));
                }
            }
        }
    }
    lines
}

pub async fn run(
    name: String,
    cfg: DebugExporterConfig,
    mut input: mpsc::Receiver<Metrics>,
    telemetry: SharedTelemetry,
) {
    let labels = Telemetry::labels(&[("exporter", &name)]);
    while let Some(m) = input.recv().await {
        for line in describe(&m, &cfg.verbosity) {
            tracing::info!(exporter = %name, "{line}");
        }
        telemetry
            .exporter_sent
            .get_or_create(&labels)
            .inc_by(m.point_count() as f64);
    }
}
