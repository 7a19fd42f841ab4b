//! The whole config document: its sections as parsed, the pipelines resolved, and the checks
//! that need more than one component (references, storage, ports taken twice). Each
//! component's own settings and checks are its kind's (`components.rs`).

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::components::{ExporterConfig, ExtensionConfig, ProcessorConfig, ReceiverConfig};
use crate::config::{
    expand, layers, loc_error, nearest, parse_listen_address, resolve_refs, same_port, yaml_error,
    ComponentId, ComponentMap, ConfigError, ConfigErrors, ConfigOverview, Pipeline,
    TelemetryConfig, DEFAULT_CONFIG, IGNORED_LOG_KEYS,
};
use crate::exporters::otlp::Storage;
use crate::extensions::bearer_token_auth::BearerTokenAuth;

/// `service.pipelines.<id>`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Ids of the receivers feeding this pipeline (at least one).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub receivers: Vec<Spanned<String>>,
    /// Ids of the processors, in the order data passes them.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub processors: Vec<Spanned<String>>,
    /// Ids of the exporters receiving this pipeline's data (at least one).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exporters: Vec<Spanned<String>>,
}

/// `service:`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Ids of the extensions to run.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub extensions: Vec<Spanned<String>>,
    /// Pipelines by id (`metrics` or `metrics/<name>`).
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// The agent's own logs and metrics.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// The whole file, as parsed.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where data enters: components by id (`prometheus`, `otlp`).
    #[serde(default)]
    pub receivers: ComponentMap<ReceiverConfig>,
    /// What happens to data on its way: components by id (`batch`, `filter`, `attributes`,
    /// `resource`, `memory_limiter`).
    #[serde(default)]
    pub processors: ComponentMap<ProcessorConfig>,
    /// Where data leaves: components by id (`otlp`, `otlphttp`, `prometheusremotewrite`,
    /// `promql`, `debug`).
    #[serde(default)]
    pub exporters: ComponentMap<ExporterConfig>,
    /// Components outside the pipelines (`health_check`, `zpages`, `file_storage`,
    /// `bearertokenauth`); each runs only when listed in `service.extensions`.
    #[serde(default)]
    pub extensions: ComponentMap<ExtensionConfig>,
    /// Not supported: a config with connectors is refused.
    #[serde(default)]
    pub connectors: Option<serde_json::Value>,
    /// Which extensions run, the pipelines connecting receivers, processors and exporters, and
    /// the agent's own telemetry.
    pub service: ServiceConfig,
}

/// A loaded and validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<default>`).
    pub source: String,
    /// SHA-less content fingerprint of the expanded text, to tell real changes apart.
    pub fingerprint: u64,
    /// What loads but does nothing here (collector keys without an equivalent).
    pub warnings: Vec<String>,
    /// The config as loaded, secrets redacted, as YAML (`/api/v1/status/config`).
    pub redacted_yaml: String,
    pub raw: RawConfig,
    pub pipelines: Vec<Pipeline>,
    pub extensions: Vec<ComponentId>,
}

impl Config {
    /// The config made of `files` (the embedded default when there are none) and `sets`
    /// (`processors::batch::timeout=2s`), merged by the collector's rules (`config::layers`).
    pub fn from_layers(files: &[String], sets: &[String]) -> Result<Config, ConfigErrors> {
        match (files, sets) {
            ([], []) => Config::default_config(),
            ([one], []) => Config::load(one),
            _ => {
                let (name, text) = layers::merged_text(files, sets)?;
                Config::from_expanded(&name, &text)
            }
        }
    }

    /// Loads the embedded default config.
    pub fn default_config() -> Result<Config, ConfigErrors> {
        Config::from_text("<default>", DEFAULT_CONFIG)
    }

    /// Loads and validates a config file.
    pub fn load(path: &str) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read config: {e}"),
            }])
        })?;
        Config::from_text(path, &text)
    }

    /// Parses and validates config text; `file` is used in messages.
    pub fn from_text(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        let expanded = expand::expand_env(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                line: e.line,
                column: e.column,
                message: e.message,
            }])
        })?;
        Config::from_expanded(file, &expanded)
    }

    /// Parses and validates config text whose references are already expanded.
    pub fn from_expanded(file: &str, expanded: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = serde_saphyr::from_str(expanded)
            .map_err(|e| ConfigErrors(vec![yaml_error(file, &e)]))?;
        let fingerprint = xxhash_rust::xxh3::xxh3_64(expanded.as_bytes());
        let mut cfg = validate(file, raw, fingerprint)?;
        cfg.redacted_yaml = serde_saphyr::from_str::<serde_json::Value>(expanded)
            .ok()
            .and_then(|doc| serde_saphyr::to_string(&layers::redacted(doc)).ok())
            .unwrap_or_default();
        Ok(cfg)
    }
}

impl Config {
    /// What the agent's pages show of this config.
    pub fn overview(&self) -> ConfigOverview {
        ConfigOverview {
            source: self.source.clone(),
            redacted_yaml: self.redacted_yaml.clone(),
            pipelines: self.pipelines.clone(),
            extensions: self.extensions.clone(),
            zpages_port: self.raw.extensions.0.iter().find_map(|(_, e)| match e {
                ExtensionConfig::Zpages(z) => {
                    z.endpoint.rsplit_once(':').map(|(_, p)| p.to_string())
                }
                _ => None,
            }),
        }
    }

    /// The longest window a query façade of this config keeps, if it has one.
    pub fn longest_window(&self) -> Option<Duration> {
        self.raw
            .exporters
            .0
            .iter()
            .filter_map(|(_, e)| match e {
                ExporterConfig::Promql(p) => Some(p.retention),
                _ => None,
            })
            .max()
    }

    /// Every address the running config listens on, named by what listens: the receivers
    /// and exporters of its pipelines, its extensions and its self metrics.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut out = Vec::new();
        let mut add = |name: String, addr: &str| {
            if let Ok(a) = parse_listen_address(addr) {
                out.push((name, a));
            }
        };
        let mut receivers: Vec<&ComponentId> =
            self.pipelines.iter().flat_map(|p| &p.receivers).collect();
        receivers.sort_by_key(|id| id.to_string());
        receivers.dedup();
        for id in receivers {
            let Some(rc) = self.raw.receivers.get(id) else {
                continue;
            };
            for (what, endpoint) in rc.listen_addresses() {
                add(format!("receivers::{id} ({what})"), endpoint);
            }
        }
        let mut exporters: Vec<&ComponentId> =
            self.pipelines.iter().flat_map(|p| &p.exporters).collect();
        exporters.sort_by_key(|id| id.to_string());
        exporters.dedup();
        for id in exporters {
            if let Some(endpoint) = self.raw.exporters.get(id).and_then(|e| e.listen_address()) {
                add(format!("exporters::{id}"), endpoint);
            }
        }
        for id in &self.extensions {
            if let Some(endpoint) = self.raw.extensions.get(id).and_then(|e| e.listen_address()) {
                add(format!("extensions::{id}"), endpoint);
            }
        }
        if let Ok(Some(a)) = self.raw.service.telemetry.metrics.listen_address() {
            out.push(("service.telemetry.metrics".into(), a));
        }
        out
    }
}

/// The references between components: what one component's start needs of another's
/// settings, and what decides whether a running one is kept across a reload.
impl Config {
    /// The bearer-token authenticator an OTLP receiver names, by extension id.
    pub fn authenticator(&self, name: &str) -> Option<BearerTokenAuth> {
        let id = ComponentId::parse(name).ok()?;
        match self.raw.extensions.get(&id) {
            Some(ExtensionConfig::BearerTokenAuth(b)) => Some(BearerTokenAuth::new(b.clone())),
            _ => None,
        }
    }

    /// The on-disk queue location of an exporter whose `sending_queue.storage` names a
    /// `file_storage` extension (checked when the config was loaded).
    pub fn storage_for(&self, exporter: &ComponentId) -> Option<Storage> {
        let queue = self.raw.exporters.get(exporter)?.queue()?;
        let id = ComponentId::parse(queue.storage.as_deref()?).ok()?;
        match self.raw.extensions.get(&id)? {
            ExtensionConfig::FileStorage(f) => Some(Storage {
                dir: f.queue_dir(&exporter.to_string()),
                fsync: f.fsync,
                max_bytes: f.max_size_mib.saturating_mul(1 << 20),
            }),
            _ => None,
        }
    }

    /// The agent's memory limit, when a `memory_limiter` sets one.
    pub fn memory_limit(&self) -> Option<u64> {
        self.raw.processors.0.iter().find_map(|(_, p)| match p {
            ProcessorConfig::MemoryLimiter(m) => Some(m.limits().0),
            _ => None,
        })
    }

    /// What decides whether a running exporter is kept across a reload: its settings and
    /// where its queue lives.
    pub fn exporter_fingerprint(&self, id: &ComponentId) -> String {
        format!(
            "{:#?}{:#?}",
            self.raw.exporters.get(id),
            self.storage_for(id)
        )
    }

    /// What decides whether a running receiver must take new settings: its config, and the
    /// authenticators it names.
    pub fn receiver_fingerprint(&self, rc: &ReceiverConfig) -> String {
        let mut fp = format!("{rc:#?}");
        for name in rc.authenticators() {
            if let Ok(id) = ComponentId::parse(name) {
                fp.push_str(&format!("{:#?}", self.raw.extensions.get(&id)));
            }
        }
        fp
    }
}

/// A `sending_queue.storage` must name a `file_storage` extension the service enables.
fn check_storage_ref(raw: &RawConfig, storage: &str) -> Result<(), String> {
    let id = ComponentId::parse(storage).map_err(|m| format!("sending_queue.storage: {m}"))?;
    match raw.extensions.get(&id) {
        Some(ExtensionConfig::FileStorage(_)) => {}
        Some(_) => {
            return Err(format!(
                "sending_queue.storage: extension {id} is not a file_storage extension"
            ))
        }
        None => {
            return Err(format!(
                "sending_queue.storage references extension {id} which is not configured"
            ))
        }
    }
    if !raw.service.extensions.iter().any(|e| e.value == storage) {
        return Err(format!(
            "sending_queue.storage: extension {id} must also be listed in service.extensions"
        ));
    }
    Ok(())
}

fn validate(file: &str, raw: RawConfig, fingerprint: u64) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let plain = |message: String| ConfigError {
        file: file.to_string(),
        line: 0,
        column: 0,
        message,
    };
    if raw.connectors.as_ref().is_some_and(|c| !c.is_null()) {
        errors.push(plain("connectors are not supported by meshmetrics".into()));
    }
    if raw.service.pipelines.is_empty() {
        errors.push(plain(
            "service.pipelines must define at least one pipeline".into(),
        ));
    }
    let mut pipelines = Vec::new();
    for (pid, p) in &raw.service.pipelines {
        let signal = pid.split('/').next().unwrap_or("");
        match signal {
            "metrics" => {}
            "traces" | "logs" | "profiles" => {
                errors.push(plain(format!(
                    "pipeline {pid:?}: meshmetrics handles metrics only; {signal} pipelines are not supported"
                )));
                continue;
            }
            _ => {
                let mut m =
                    format!("pipeline id {pid:?} must be \"metrics\" or \"metrics/<name>\"");
                if let Some(s) = nearest(signal, ["metrics"].into_iter()) {
                    m.push_str(&format!("; did you mean {s:?}?"));
                }
                errors.push(plain(m));
                continue;
            }
        }
        if p.receivers.is_empty() {
            errors.push(plain(format!(
                "pipeline {pid:?} must have at least one receiver"
            )));
        }
        if p.exporters.is_empty() {
            errors.push(plain(format!(
                "pipeline {pid:?} must have at least one exporter"
            )));
        }
        let receivers = resolve_refs(
            file,
            "receiver",
            pid,
            &p.receivers,
            &raw.receivers,
            &mut errors,
        );
        let processors = resolve_refs(
            file,
            "processor",
            pid,
            &p.processors,
            &raw.processors,
            &mut errors,
        );
        let exporters = resolve_refs(
            file,
            "exporter",
            pid,
            &p.exporters,
            &raw.exporters,
            &mut errors,
        );
        pipelines.push(Pipeline {
            id: pid.clone(),
            receivers,
            processors,
            exporters,
        });
    }
    let mut extensions = Vec::new();
    for e in &raw.service.extensions {
        match ComponentId::parse(&e.value) {
            Ok(id) if raw.extensions.get(&id).is_some() => extensions.push(id),
            Ok(id) => errors.push(loc_error(
                file,
                e,
                format!("service.extensions references extension {id} which is not configured"),
            )),
            Err(m) => errors.push(loc_error(file, e, m)),
        }
    }
    // Per-component checks, reported at the component's key.
    let at = |(line, column): (usize, usize), message: String| ConfigError {
        file: file.to_string(),
        line,
        column,
        message,
    };
    // Authenticators a receiver may name: bearertokenauth extensions the service enables.
    let authenticators: Vec<String> = extensions
        .iter()
        .filter(|id| {
            matches!(
                raw.extensions.get(id),
                Some(ExtensionConfig::BearerTokenAuth(_))
            )
        })
        .map(|id| id.to_string())
        .collect();
    for (i, (id, r)) in raw.receivers.0.iter().enumerate() {
        if let Err(es) = r.validate(&authenticators) {
            for m in es {
                errors.push(at(
                    raw.receivers.position(i),
                    format!("receivers::{id}: {m}"),
                ));
            }
        }
    }
    for (i, (id, p)) in raw.processors.0.iter().enumerate() {
        if let Err(m) = p.validate() {
            errors.push(at(
                raw.processors.position(i),
                format!("processors::{id}: {m}"),
            ));
        }
    }
    for (i, (id, x)) in raw.exporters.0.iter().enumerate() {
        let mut r = x.validate();
        if let (Ok(()), Some(q)) = (&r, x.queue()) {
            if let Some(st) = &q.storage {
                r = check_storage_ref(&raw, st);
            }
        }
        if let Err(m) = r {
            errors.push(at(
                raw.exporters.position(i),
                format!("exporters::{id}: {m}"),
            ));
        }
    }
    for (i, (id, x)) in raw.extensions.0.iter().enumerate() {
        if let Err(m) = x.validate() {
            errors.push(at(
                raw.extensions.position(i),
                format!("extensions::{id}: {m}"),
            ));
        }
    }
    if let Err(m) = raw.service.telemetry.metrics.listen_address() {
        errors.push(plain(format!("service.telemetry.metrics: {m}")));
    }
    let mut warnings = Vec::new();
    for key in raw.service.telemetry.logs.ignored.keys() {
        if IGNORED_LOG_KEYS.contains(&key.as_str()) {
            warnings.push(format!(
                "service.telemetry.logs.{key} is a collector setting with no effect in meshmetrics"
            ));
        } else {
            let mut m = format!("service.telemetry.logs: unknown key {key:?}");
            let known = ["level", "encoding"]
                .iter()
                .chain(IGNORED_LOG_KEYS.iter())
                .copied();
            if let Some(s) = nearest(key, known) {
                m.push_str(&format!("; did you mean {s:?}?"));
            }
            errors.push(plain(m));
        }
    }
    for (key, present) in [
        ("resource", raw.service.telemetry.resource.is_some()),
        ("traces", raw.service.telemetry.traces.is_some()),
    ] {
        if present {
            warnings.push(format!(
                "service.telemetry.{key} is a collector setting with no effect in meshmetrics"
            ));
        }
    }
    let level = &raw.service.telemetry.logs.level;
    if !crate::logging::LEVELS.contains(&level.as_str()) {
        let mut m = format!(
            "service.telemetry.logs.level {level:?} is not one of {}",
            crate::logging::LEVELS.join(", ")
        );
        let close = nearest(level, crate::logging::LEVELS.iter().copied()).or_else(|| {
            crate::logging::LEVELS
                .iter()
                .find(|l| level.to_ascii_lowercase().starts_with(**l))
                .copied()
        });
        if let Some(s) = close {
            m.push_str(&format!("; did you mean {s:?}?"));
        }
        errors.push(plain(m));
    }
    if !matches!(
        raw.service.telemetry.logs.encoding.as_str(),
        "console" | "json"
    ) {
        errors.push(plain(
            "service.telemetry.logs.encoding must be console or json".into(),
        ));
    }
    if errors.is_empty() {
        let cfg = Config {
            source: file.to_string(),
            fingerprint,
            warnings,
            redacted_yaml: String::new(),
            raw,
            pipelines,
            extensions,
        };
        // Two components on one port: the second could never start.
        let listeners = cfg.listeners();
        for (i, (name, addr)) in listeners.iter().enumerate() {
            if let Some((first, other)) = listeners[..i]
                .iter()
                .find(|(_, other)| same_port(*other, *addr))
            {
                errors.push(plain(format!(
                    "{name} and {first} both listen on port {} ({other} and {addr})",
                    addr.port()
                )));
            }
        }
        if errors.is_empty() {
            return Ok(cfg);
        }
        Err(ConfigErrors(errors))
    } else {
        Err(ConfigErrors(errors))
    }
}
