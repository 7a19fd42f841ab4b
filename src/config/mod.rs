//! The collector-style YAML config: loading, env expansion, component dispatch by type,
//! validation, and errors that name `file:line:column`.

pub mod expand;
pub mod layers;
mod listen;
pub mod secret;
mod telemetry;
pub mod tls;
pub mod units;
pub mod watch;

pub use listen::{parse_listen_address, same_port};
use telemetry::IGNORED_LOG_KEYS;
pub use telemetry::{TelemetryConfig, TelemetryLogsConfig, TelemetryMetricsConfig};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use crate::exporters::debug::DebugExporterConfig;
use crate::exporters::otlp::OtlpExporterConfig;
use crate::exporters::promql::PromqlExporterConfig;
use crate::extensions::bearer_token_auth::BearerTokenAuthConfig;
use crate::extensions::file_storage::FileStorageConfig;
use crate::extensions::{HealthCheckConfig, ZpagesConfig};
use crate::processors::attributes::AttributesConfig;
use crate::processors::batch::BatchConfig;
use crate::processors::filter::FilterConfig;
use crate::processors::memory_limiter::MemoryLimiterConfig;
use crate::receivers::otlp::OtlpReceiverConfig;
use crate::receivers::prometheus::config::PrometheusReceiverConfig;

/// The config the agent runs when started without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.yaml");

/// One config problem, located in the file when the location is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// All problems found in one config.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `type[/name]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub kind: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !kind_ok {
            return Err(format!(
                "invalid component id {s:?}: the type must be [a-zA-Z][a-zA-Z0-9_]*"
            ));
        }
        if let Some(n) = name {
            if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(format!("invalid component id {s:?}: bad name after '/'"));
            }
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}

/// A kind of component section (`receivers`, `processors`, ...) and its closed set of types.
pub trait ComponentSection: Sized {
    /// Singular name for messages: "receiver".
    const NOUN: &'static str;
    /// Types meshmetrics implements.
    const SUPPORTED: &'static [&'static str];
    /// Collector types users may bring over that meshmetrics does not implement.
    const UNSUPPORTED: &'static [&'static str];
    fn deserialize_typed<'de, A: MapAccess<'de>>(kind: &str, map: &mut A)
        -> Result<Self, A::Error>;
}

fn typed<'de, A: MapAccess<'de>, T: Deserialize<'de> + Default>(
    map: &mut A,
) -> Result<T, A::Error> {
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

/// What a collector user reaches for instead of a component meshmetrics does not have.
fn equivalent(noun: &str, kind: &str) -> Option<&'static str> {
    Some(match (noun, kind) {
        ("exporter", "logging") => "use `debug`, its successor, with the same verbosity",
        ("exporter", "prometheus") => {
            "use `promql`: it serves Prometheus's query API over the same samples, which a Prometheus can also federate"
        }
        ("processor", "k8sattributes") => {
            "the prometheus receiver's Kubernetes discovery already adds k8s.namespace.name, k8s.pod.name, k8s.node.name and the workload as resource attributes"
        }
        ("processor", "transform") => {
            "use `attributes`/`resource` actions, or `filter` match rules (metric names, strict or regexp) instead of OTTL"
        }
        ("processor", "metricstransform") => {
            "rename or drop with the prometheus receiver's metric_relabel_configs"
        }
        ("processor", "cumulativetodelta") | ("processor", "deltatocumulative") => {
            "meshmetrics keeps Prometheus's cumulative counters as they are scraped"
        }
        ("receiver", "hostmetrics") | ("receiver", "kubeletstats") => {
            "scrape node_exporter or the kubelet's /metrics/cadvisor with the prometheus receiver"
        }
        _ => return None,
    })
}

/// Why a component type is not accepted, with a suggestion when it looks like a typo.
fn unknown_type_message<C: ComponentSection>(kind: &str) -> String {
    if C::UNSUPPORTED.contains(&kind) {
        let mut msg = format!(
            "{} type {kind:?} is an OpenTelemetry Collector component that meshmetrics does not support (supported: {})",
            C::NOUN,
            C::SUPPORTED.join(", ")
        );
        if let Some(instead) = equivalent(C::NOUN, kind) {
            msg.push_str("; ");
            msg.push_str(instead);
        }
        return msg;
    }
    let mut msg = format!("unknown {} type {kind:?}", C::NOUN);
    if let Some(s) = nearest(kind, C::SUPPORTED.iter().copied()) {
        msg.push_str(&format!("; did you mean {s:?}?"));
    } else {
        msg.push_str(&format!(" (supported: {})", C::SUPPORTED.join(", ")));
    }
    msg
}

/// The closest candidate by edit distance, when it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Marks a `line:column` that an error message carries for itself.
const KEY_POSITION: &str = "§§";

/// Components of one section in file order.
#[derive(Debug, Clone)]
pub struct ComponentMap<C>(
    pub Vec<(ComponentId, C)>,
    /// Line and column of each component's key, for errors found after parsing.
    pub Vec<(usize, usize)>,
);

impl<C> Default for ComponentMap<C> {
    fn default() -> Self {
        ComponentMap(Vec::new(), Vec::new())
    }
}

impl<C> ComponentMap<C> {
    /// Where component `i` is defined.
    pub fn position(&self, i: usize) -> (usize, usize) {
        self.1.get(i).copied().unwrap_or((0, 0))
    }

    pub fn get(&self, id: &ComponentId) -> Option<&C> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, c)| c)
    }
    pub fn ids(&self) -> impl Iterator<Item = &ComponentId> {
        self.0.iter().map(|(i, _)| i)
    }
}

impl<'de, C: ComponentSection> Deserialize<'de> for ComponentMap<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);
        impl<'de, C: ComponentSection> Visitor<'de> for V<C> {
            type Value = ComponentMap<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a map of {} ids to their settings", C::NOUN)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ComponentMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(ComponentId, C)> = Vec::new();
                let mut positions = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    // The deserializer has moved past the key by now, so errors about the key
                    // carry its position themselves (see `yaml_error`).
                    let at = |m: String| {
                        de::Error::custom(format!(
                            "{KEY_POSITION}{}:{}{KEY_POSITION}{m}",
                            key.referenced.line(),
                            key.referenced.column()
                        ))
                    };
                    let id = ComponentId::parse(&key.value).map_err(at)?;
                    if !C::SUPPORTED.contains(&id.kind.as_str()) {
                        return Err(at(unknown_type_message::<C>(&id.kind)));
                    }
                    if out.iter().any(|(i, _)| *i == id) {
                        return Err(at(format!("duplicate {} {id}", C::NOUN)));
                    }
                    let cfg = C::deserialize_typed(&id.kind, &mut map)?;
                    positions.push((
                        key.referenced.line() as usize,
                        key.referenced.column() as usize,
                    ));
                    out.push((id, cfg));
                }
                Ok(ComponentMap(out, positions))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Settings of one receiver.
#[derive(Debug, Clone)]
pub enum ReceiverConfig {
    Prometheus(Box<PrometheusReceiverConfig>),
    Otlp(Box<OtlpReceiverConfig>),
}

impl ComponentSection for ReceiverConfig {
    const NOUN: &'static str = "receiver";
    const SUPPORTED: &'static [&'static str] = &["prometheus", "otlp"];
    const UNSUPPORTED: &'static [&'static str] = &[
        "hostmetrics",
        "kubeletstats",
        "k8s_cluster",
        "filelog",
        "jaeger",
        "zipkin",
        "kafka",
        "statsd",
        "prometheus_simple",
        "receiver_creator",
        "carbon",
        "influxdb",
        "opencensus",
        "fluentforward",
        "journald",
        "k8s_events",
        "k8sobjects",
        "docker_stats",
        "simpleprometheus",
        "httpcheck",
        "nop",
    ];
    fn deserialize_typed<'de, A: MapAccess<'de>>(
        kind: &str,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        match kind {
            "prometheus" => Ok(ReceiverConfig::Prometheus(Box::new(typed(map)?))),
            "otlp" => Ok(ReceiverConfig::Otlp(Box::new(typed(map)?))),
            _ => Err(de::Error::custom(unknown_type_message::<Self>(kind))),
        }
    }
}

/// Settings of one processor.
#[derive(Debug, Clone)]
pub enum ProcessorConfig {
    Batch(BatchConfig),
    Filter(Box<FilterConfig>),
    Attributes(AttributesConfig),
    Resource(AttributesConfig),
    MemoryLimiter(MemoryLimiterConfig),
}

impl ComponentSection for ProcessorConfig {
    const NOUN: &'static str = "processor";
    const SUPPORTED: &'static [&'static str] = &[
        "batch",
        "filter",
        "attributes",
        "resource",
        "memory_limiter",
    ];
    const UNSUPPORTED: &'static [&'static str] = &[
        "transform",
        "k8sattributes",
        "resourcedetection",
        "tail_sampling",
        "probabilistic_sampler",
        "metricstransform",
        "groupbyattrs",
        "cumulativetodelta",
        "deltatocumulative",
        "routing",
        "span",
        "redaction",
        "metricsgeneration",
        "interval",
        "groupbytrace",
        "schema",
        "deltatorate",
        "sumologic",
    ];
    fn deserialize_typed<'de, A: MapAccess<'de>>(
        kind: &str,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        match kind {
            "batch" => Ok(ProcessorConfig::Batch(typed(map)?)),
            "filter" => Ok(ProcessorConfig::Filter(Box::new(typed(map)?))),
            "memory_limiter" => Ok(ProcessorConfig::MemoryLimiter(typed(map)?)),
            "attributes" => Ok(ProcessorConfig::Attributes(typed(map)?)),
            "resource" => Ok(ProcessorConfig::Resource(typed(map)?)),
            _ => Err(de::Error::custom(unknown_type_message::<Self>(kind))),
        }
    }
}

/// Settings of one exporter.
#[derive(Debug, Clone)]
pub enum ExporterConfig {
    Otlp(Box<OtlpExporterConfig>),
    OtlpHttp(Box<OtlpExporterConfig>),
    Debug(DebugExporterConfig),
    Promql(Box<PromqlExporterConfig>),
    PrometheusRemoteWrite(Box<crate::exporters::remote_write::RemoteWriteConfig>),
}

impl ExporterConfig {
    /// The queue of an exporter that has one (its `storage`, if on disk).
    pub fn queue(&self) -> Option<&crate::exporters::otlp::QueueConfig> {
        match self {
            ExporterConfig::Otlp(o) | ExporterConfig::OtlpHttp(o) => Some(&o.sending_queue),
            ExporterConfig::PrometheusRemoteWrite(r) => Some(&r.remote_write_queue),
            ExporterConfig::Debug(_) | ExporterConfig::Promql(_) => None,
        }
    }
}

impl ComponentSection for ExporterConfig {
    const NOUN: &'static str = "exporter";
    const SUPPORTED: &'static [&'static str] = &[
        "otlp",
        "otlphttp",
        "debug",
        "promql",
        "prometheusremotewrite",
    ];
    const UNSUPPORTED: &'static [&'static str] = &[
        "prometheus",
        "logging",
        "file",
        "kafka",
        "loadbalancing",
        "awsemf",
        "datadog",
        "googlecloud",
        "azuremonitor",
        "elasticsearch",
        "loki",
        "zipkin",
        "jaeger",
        "signalfx",
        "splunk_hec",
        "nop",
        "otlp_http",
        "influxdb",
        "clickhouse",
    ];
    fn deserialize_typed<'de, A: MapAccess<'de>>(
        kind: &str,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        match kind {
            "otlp" => Ok(ExporterConfig::Otlp(Box::new(typed(map)?))),
            "otlphttp" => Ok(ExporterConfig::OtlpHttp(Box::new(typed(map)?))),
            "debug" => Ok(ExporterConfig::Debug(typed(map)?)),
            "promql" => Ok(ExporterConfig::Promql(Box::new(typed(map)?))),
            "prometheusremotewrite" => Ok(ExporterConfig::PrometheusRemoteWrite(Box::new(
                map.next_value()?,
            ))),
            _ => Err(de::Error::custom(unknown_type_message::<Self>(kind))),
        }
    }
}

/// Settings of one extension.
#[derive(Debug, Clone)]
pub enum ExtensionConfig {
    HealthCheck(HealthCheckConfig),
    Zpages(ZpagesConfig),
    FileStorage(FileStorageConfig),
    BearerTokenAuth(BearerTokenAuthConfig),
}

impl ComponentSection for ExtensionConfig {
    const NOUN: &'static str = "extension";
    const SUPPORTED: &'static [&'static str] =
        &["health_check", "zpages", "file_storage", "bearertokenauth"];
    const UNSUPPORTED: &'static [&'static str] = &[
        "pprof",
        "basicauth",
        "oauth2client",
        "headers_setter",
        "k8s_observer",
        "docker_observer",
        "host_observer",
        "memory_ballast",
        "healthcheckv2",
        "oidc",
        "sigv4auth",
        "db_storage",
        "opamp",
    ];
    fn deserialize_typed<'de, A: MapAccess<'de>>(
        kind: &str,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        match kind {
            "health_check" => Ok(ExtensionConfig::HealthCheck(typed(map)?)),
            "zpages" => Ok(ExtensionConfig::Zpages(typed(map)?)),
            "file_storage" => Ok(ExtensionConfig::FileStorage(typed(map)?)),
            "bearertokenauth" => Ok(ExtensionConfig::BearerTokenAuth(typed(map)?)),
            _ => Err(de::Error::custom(unknown_type_message::<Self>(kind))),
        }
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

/// `service.pipelines.<id>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default)]
    pub receivers: Vec<Spanned<String>>,
    #[serde(default)]
    pub processors: Vec<Spanned<String>>,
    #[serde(default)]
    pub exporters: Vec<Spanned<String>>,
}

/// `service:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default)]
    pub extensions: Vec<Spanned<String>>,
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// The whole file, as parsed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub receivers: ComponentMap<ReceiverConfig>,
    #[serde(default)]
    pub processors: ComponentMap<ProcessorConfig>,
    #[serde(default)]
    pub exporters: ComponentMap<ExporterConfig>,
    #[serde(default)]
    pub extensions: ComponentMap<ExtensionConfig>,
    #[serde(default)]
    pub connectors: Option<serde_json::Value>,
    pub service: ServiceConfig,
}

/// A pipeline with its component ids resolved.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
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

const TOP_KEYS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "service",
];

/// Turns a serde-saphyr error into ours, adding a suggestion for an unknown key.
fn yaml_error(file: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let (mut line, mut column) = (line, column);
    let mut message = e.without_snippet().to_string();
    // serde-saphyr appends " at line N, column M"; we print the position up front.
    if let Some(k) = message.rfind(" at line ") {
        message.truncate(k);
    }
    // A position the message carries itself wins (errors about map keys).
    let mut parts = message.splitn(3, KEY_POSITION);
    if let (Some(_), Some(pos), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        if let Some((l, c)) = pos.split_once(':') {
            line = l.parse().unwrap_or(line);
            column = c.parse().unwrap_or(column);
        }
        message = rest.to_string();
    }
    let original = message.clone();
    let unknown = original
        .strip_prefix("unknown field `")
        .map(|r| ("key", r))
        .or_else(|| {
            original
                .strip_prefix("unknown variant `")
                .map(|r| ("value", r))
        });
    if let Some((what, rest)) = unknown {
        if let Some((key, tail)) = rest.split_once('`') {
            let expected: Vec<&str> = tail
                .split_once("expected one of ")
                .or_else(|| tail.split_once("expected "))
                .map(|(_, list)| {
                    list.split(", ")
                        .map(|s| s.trim_matches(|c| c == '`' || c == ' '))
                        .collect()
                })
                .unwrap_or_default();
            let pool: Vec<&str> = if expected.is_empty() {
                TOP_KEYS.to_vec()
            } else {
                expected
            };
            message = format!("unknown {what} {key:?}");
            match nearest(key, pool.iter().copied()) {
                Some(s) => message.push_str(&format!("; did you mean {s:?}?")),
                None => message.push_str(&format!(" (expected one of: {})", pool.join(", "))),
            }
        }
    }
    ConfigError {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

impl Config {
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

fn loc_error(file: &str, s: &Spanned<String>, message: String) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        line: s.referenced.line() as usize,
        column: s.referenced.column() as usize,
        message,
    }
}

fn resolve_refs<C>(
    file: &str,
    section: &str,
    pipeline: &str,
    refs: &[Spanned<String>],
    defined: &ComponentMap<C>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ComponentId> {
    let mut out = Vec::new();
    for r in refs {
        match ComponentId::parse(&r.value) {
            Ok(id) if defined.get(&id).is_some() => {
                if out.contains(&id) {
                    errors.push(loc_error(
                        file,
                        r,
                        format!("pipeline {pipeline:?} lists {section} {id} twice"),
                    ));
                } else {
                    out.push(id);
                }
            }
            Ok(id) => {
                let names: Vec<String> = defined.ids().map(|i| i.to_string()).collect();
                let mut m = format!(
                    "pipeline {pipeline:?} references {section} {id} which is not configured"
                );
                if let Some(s) = nearest(&r.value, names.iter().map(String::as_str)) {
                    m.push_str(&format!("; did you mean {s:?}?"));
                }
                errors.push(loc_error(file, r, m));
            }
            Err(m) => errors.push(loc_error(file, r, m)),
        }
    }
    out
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
        match r {
            ReceiverConfig::Otlp(o) => {
                if let Err(m) = o.validate(&authenticators) {
                    errors.push(at(
                        raw.receivers.position(i),
                        format!("receivers::{id}: {m}"),
                    ));
                }
            }
            ReceiverConfig::Prometheus(p) => {
                if let Err(es) = p.config.resolve() {
                    for m in es {
                        errors.push(at(
                            raw.receivers.position(i),
                            format!("receivers::{id}: {m}"),
                        ));
                    }
                }
            }
        }
    }
    for (i, (id, p)) in raw.processors.0.iter().enumerate() {
        let r = match p {
            ProcessorConfig::Batch(b) => b.validate(),
            ProcessorConfig::Filter(f) => f.validate(),
            ProcessorConfig::Attributes(a) | ProcessorConfig::Resource(a) => a.validate(),
            ProcessorConfig::MemoryLimiter(m) => m.validate(),
        };
        if let Err(m) = r {
            errors.push(at(
                raw.processors.position(i),
                format!("processors::{id}: {m}"),
            ));
        }
    }
    for (i, (id, x)) in raw.exporters.0.iter().enumerate() {
        let mut r = match x {
            ExporterConfig::Otlp(o) => o.validate(false),
            ExporterConfig::OtlpHttp(o) => o.validate(true),
            ExporterConfig::Debug(d) => d.validate(),
            ExporterConfig::Promql(p) => p.validate(),
            ExporterConfig::PrometheusRemoteWrite(w) => w.validate(),
        };
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
        let r = match x {
            ExtensionConfig::HealthCheck(h) => parse_listen_address(&h.endpoint).map(|_| ()),
            ExtensionConfig::Zpages(z) => parse_listen_address(&z.endpoint).map(|_| ()),
            ExtensionConfig::FileStorage(f) => f.validate(),
            ExtensionConfig::BearerTokenAuth(b) => b.validate(),
        };
        if let Err(m) = r {
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
