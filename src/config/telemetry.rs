//! `service.telemetry`: where the agent serves its own metrics and how it logs, with the
//! collector's keys (those that change nothing here load with a warning: see `validate`).

use serde::Deserialize;
use std::net::SocketAddr;

use super::parse_listen_address;

/// `service.telemetry`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where the agent serves its own metrics (`/metrics`).
    #[serde(default)]
    pub metrics: TelemetryMetricsConfig,
    /// The agent's logs: level and encoding.
    #[serde(default)]
    pub logs: TelemetryLogsConfig,
    /// Collector keys with no effect here (accepted, with a warning).
    #[serde(default)]
    pub resource: Option<serde_json::Value>,
    /// A collector setting with no effect here (accepted with a warning).
    #[serde(default)]
    pub traces: Option<serde_json::Value>,
}

/// `service.telemetry.metrics`: where the agent serves its own `otelcol_*` metrics.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryMetricsConfig {
    /// `none` turns self metrics off; `basic`, `normal` and `detailed` all serve them.
    #[serde(default = "default_level")]
    pub level: String,
    /// Listen address; `""` disables the endpoint.
    #[serde(default = "default_telemetry_address")]
    pub address: String,
    /// The newer collector form: `readers: [{pull: {exporter: {prometheus: {host, port}}}}]`.
    #[serde(default)]
    pub readers: Vec<serde_json::Value>,
}

impl Default for TelemetryMetricsConfig {
    fn default() -> Self {
        TelemetryMetricsConfig {
            level: default_level(),
            address: default_telemetry_address(),
            readers: Vec::new(),
        }
    }
}

fn default_level() -> String {
    "normal".into()
}

fn default_telemetry_address() -> String {
    "0.0.0.0:8888".into()
}

impl TelemetryMetricsConfig {
    /// The listen address for self metrics, if they are served at all.
    pub fn listen_address(&self) -> Result<Option<SocketAddr>, String> {
        if self.level == "none" {
            return Ok(None);
        }
        let mut addr = self.address.clone();
        for r in &self.readers {
            let p = &r["pull"]["exporter"]["prometheus"];
            if p.is_object() {
                let host = p["host"].as_str().unwrap_or("0.0.0.0");
                let port = p["port"].as_u64().unwrap_or(8888);
                addr = format!("{host}:{port}");
            }
        }
        if addr.is_empty() {
            return Ok(None);
        }
        parse_listen_address(&addr).map(Some)
    }
}

/// `service.telemetry.logs`. Unknown keys land in `ignored` and are checked in `validate`
/// (serde cannot deny unknown fields beside a flattened map).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct TelemetryLogsConfig {
    /// The least severe level logged: `debug`, `info`, `warn` or `error`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `console` or `json`.
    #[serde(default = "default_log_encoding")]
    pub encoding: String,
    /// The collector's zap settings, with no effect here (accepted, with a warning).
    #[serde(flatten)]
    pub ignored: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Keys of `service.telemetry.logs` the collector takes and meshmetrics accepts without
/// acting on them: a config carried over from the collector still loads.
pub const IGNORED_LOG_KEYS: &[&str] = &[
    "development",
    "disable_caller",
    "disable_stacktrace",
    "sampling",
    "output_paths",
    "error_output_paths",
    "initial_fields",
    "processors",
];

impl Default for TelemetryLogsConfig {
    fn default() -> Self {
        TelemetryLogsConfig {
            level: default_log_level(),
            encoding: default_log_encoding(),
            ignored: Default::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

fn default_log_encoding() -> String {
    "console".into()
}
