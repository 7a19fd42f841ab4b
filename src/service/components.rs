//! The registration list: every component type meshmetrics has, by kind. Each kind's enum
//! reads a component's settings by its type (`ComponentSection`), checks them, and starts the
//! component through the factory in its own folder; the rest of the service only orders,
//! connects and reloads what these return.
//!
//! Adding a component: write it in its kind's folder with a config type (doc comments on
//! every field, `deny_unknown_fields`, `JsonSchema`), a `validate` and a factory (`start` or
//! `stage`); then add a variant, its type name in `SUPPORTED`, and one arm in each `match`
//! below.

use serde::de::{self, MapAccess};
use std::net::SocketAddr;

use crate::config::{parse_listen_address, typed, unknown_type_message, ComponentSection};
use crate::exporters::debug::DebugExporterConfig;
use crate::exporters::otlp::{OtlpExporterConfig, QueueConfig};
use crate::exporters::promql::PromqlExporterConfig;
use crate::exporters::remote_write::RemoteWriteConfig;
use crate::exporters::{ExporterContext, Input, StartedExporter};
use crate::extensions::bearer_token_auth::BearerTokenAuthConfig;
use crate::extensions::file_storage::FileStorageConfig;
use crate::extensions::{ExtensionContext, HealthCheckConfig, ZpagesConfig};
use crate::http_server::Served;
use crate::processors::attributes::{AttributesConfig, ResourceConfig};
use crate::processors::batch::BatchConfig;
use crate::processors::filter::FilterConfig;
use crate::processors::memory_limiter::MemoryLimiterConfig;
use crate::processors::Stage;
use crate::receivers::otlp::{OtlpReceiver, OtlpReceiverConfig};
use crate::receivers::prometheus::config::PrometheusReceiverConfig;
use crate::receivers::prometheus::PrometheusReceiver;
use crate::receivers::ReceiverContext;

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
    fn kind_schemas(g: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
        vec![
            ("prometheus", g.subschema_for::<PrometheusReceiverConfig>()),
            ("otlp", g.subschema_for::<OtlpReceiverConfig>()),
        ]
    }
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
    Resource(ResourceConfig),
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
    fn kind_schemas(g: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
        vec![
            ("batch", g.subschema_for::<BatchConfig>()),
            ("filter", g.subschema_for::<FilterConfig>()),
            ("attributes", g.subschema_for::<AttributesConfig>()),
            ("resource", g.subschema_for::<ResourceConfig>()),
            ("memory_limiter", g.subschema_for::<MemoryLimiterConfig>()),
        ]
    }
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
    PrometheusRemoteWrite(Box<RemoteWriteConfig>),
}

impl ExporterConfig {
    /// The queue of an exporter that has one (its `storage`, if on disk).
    pub fn queue(&self) -> Option<&QueueConfig> {
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
    fn kind_schemas(g: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
        vec![
            ("otlp", g.subschema_for::<OtlpExporterConfig>()),
            ("otlphttp", g.subschema_for::<OtlpExporterConfig>()),
            ("debug", g.subschema_for::<DebugExporterConfig>()),
            ("promql", g.subschema_for::<PromqlExporterConfig>()),
            (
                "prometheusremotewrite",
                g.subschema_for::<RemoteWriteConfig>(),
            ),
        ]
    }
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
    fn kind_schemas(g: &mut schemars::SchemaGenerator) -> Vec<(&'static str, schemars::Schema)> {
        vec![
            ("health_check", g.subschema_for::<HealthCheckConfig>()),
            ("zpages", g.subschema_for::<ZpagesConfig>()),
            ("file_storage", g.subschema_for::<FileStorageConfig>()),
            (
                "bearertokenauth",
                g.subschema_for::<BearerTokenAuthConfig>(),
            ),
        ]
    }
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

impl ReceiverConfig {
    /// Checks what can be checked before starting; `authenticators` are the
    /// `bearertokenauth` extensions the service enables.
    pub fn validate(&self, authenticators: &[String]) -> Result<(), Vec<String>> {
        match self {
            ReceiverConfig::Otlp(o) => o.validate(authenticators).map_err(|m| vec![m]),
            ReceiverConfig::Prometheus(p) => p.config.resolve().map(|_| ()),
        }
    }

    /// The addresses it listens on, each with what listens there (`grpc`, `http`).
    pub fn listen_addresses(&self) -> Vec<(&'static str, &str)> {
        match self {
            ReceiverConfig::Prometheus(_) => Vec::new(),
            ReceiverConfig::Otlp(o) => {
                let p = &o.protocols;
                let grpc = p.grpc.as_ref().map(|g| ("grpc", g.endpoint.as_str()));
                let http = p.http.as_ref().map(|h| ("http", h.endpoint.as_str()));
                grpc.into_iter().chain(http).collect()
            }
        }
    }

    /// The ids of the authenticator extensions it names.
    pub fn authenticators(&self) -> Vec<&str> {
        match self {
            ReceiverConfig::Prometheus(_) => Vec::new(),
            ReceiverConfig::Otlp(o) => {
                let p = &o.protocols;
                let grpc = p.grpc.as_ref().and_then(|g| g.auth.as_ref());
                let http = p.http.as_ref().and_then(|h| h.auth.as_ref());
                grpc.into_iter()
                    .chain(http)
                    .map(|a| a.authenticator.as_str())
                    .collect()
            }
        }
    }

    /// Starts the receiver.
    pub async fn start(&self, ctx: ReceiverContext<'_>) -> Result<StartedReceiver, String> {
        Ok(match self {
            ReceiverConfig::Prometheus(p) => {
                StartedReceiver::Prometheus(PrometheusReceiver::start(p, ctx)?)
            }
            ReceiverConfig::Otlp(o) => StartedReceiver::Otlp(OtlpReceiver::start(o, ctx).await?),
        })
    }
}

/// A running receiver.
pub enum StartedReceiver {
    Prometheus(PrometheusReceiver),
    Otlp(OtlpReceiver),
}

impl StartedReceiver {
    /// Takes new settings: a scrape receiver job by job, keeping unchanged jobs' loops; an
    /// OTLP receiver by starting again (its ports may stay the same, so the old servers stop
    /// first).
    pub async fn update(
        self,
        cfg: &ReceiverConfig,
        ctx: ReceiverContext<'_>,
    ) -> Result<StartedReceiver, String> {
        match (self, cfg) {
            (StartedReceiver::Prometheus(mut r), ReceiverConfig::Prometheus(p)) => {
                r.reconfigure(p).await?;
                Ok(StartedReceiver::Prometheus(r))
            }
            (old, cfg) => {
                old.shutdown().await;
                cfg.start(ctx).await
            }
        }
    }

    pub async fn shutdown(self) {
        match self {
            StartedReceiver::Prometheus(r) => r.shutdown().await,
            StartedReceiver::Otlp(r) => r.shutdown().await,
        }
    }

    /// The addresses it listens on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            StartedReceiver::Prometheus(_) => Vec::new(),
            StartedReceiver::Otlp(o) => o.grpc_addr.into_iter().chain(o.http_addr).collect(),
        }
    }
}

impl ProcessorConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ProcessorConfig::Batch(b) => b.validate(),
            ProcessorConfig::Filter(f) => f.validate(),
            ProcessorConfig::Attributes(a) => a.validate(),
            ProcessorConfig::Resource(r) => r.validate(),
            ProcessorConfig::MemoryLimiter(m) => m.validate(),
        }
    }

    /// What the processor is in a pipeline.
    pub fn stage(&self) -> Result<Stage, String> {
        match self {
            ProcessorConfig::Batch(b) => Ok(b.stage()),
            ProcessorConfig::Filter(f) => f.stage(),
            ProcessorConfig::Attributes(a) => a.attributes_stage(),
            ProcessorConfig::Resource(r) => r.stage(),
            ProcessorConfig::MemoryLimiter(m) => Ok(m.stage()),
        }
    }
}

impl ExporterConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ExporterConfig::Otlp(o) => o.validate(false),
            ExporterConfig::OtlpHttp(o) => o.validate(true),
            ExporterConfig::Debug(d) => d.validate(),
            ExporterConfig::Promql(p) => p.validate(),
            ExporterConfig::PrometheusRemoteWrite(w) => w.validate(),
        }
    }

    /// Starts the exporter on its input.
    pub async fn start(
        &self,
        ctx: ExporterContext,
        input: Input,
    ) -> Result<StartedExporter, String> {
        match self {
            ExporterConfig::Otlp(c) => c.start(ctx, input, false),
            ExporterConfig::OtlpHttp(c) => c.start(ctx, input, true),
            ExporterConfig::PrometheusRemoteWrite(c) => c.start(ctx, input),
            ExporterConfig::Debug(c) => Ok(c.start(ctx, input)),
            ExporterConfig::Promql(c) => c.start(ctx, input).await,
        }
    }

    /// The address it listens on, if it serves.
    pub fn listen_address(&self) -> Option<&str> {
        match self {
            ExporterConfig::Promql(p) => Some(&p.endpoint),
            _ => None,
        }
    }
}

impl ExtensionConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ExtensionConfig::HealthCheck(h) => parse_listen_address(&h.endpoint).map(|_| ()),
            ExtensionConfig::Zpages(z) => parse_listen_address(&z.endpoint).map(|_| ()),
            ExtensionConfig::FileStorage(f) => f.validate(),
            ExtensionConfig::BearerTokenAuth(b) => b.validate(),
        }
    }

    /// Starts the extension: its server, when it has one.
    pub async fn start(&self, ctx: ExtensionContext) -> Result<Option<Served>, String> {
        match self {
            ExtensionConfig::HealthCheck(h) => h.start(ctx).await.map(Some),
            ExtensionConfig::Zpages(z) => z.start(ctx).await.map(Some),
            ExtensionConfig::FileStorage(f) => f.start().map(|()| None),
            // Used by the receivers that name it.
            ExtensionConfig::BearerTokenAuth(_) => Ok(None),
        }
    }

    /// The address it listens on, if it serves.
    pub fn listen_address(&self) -> Option<&str> {
        match self {
            ExtensionConfig::HealthCheck(h) => Some(&h.endpoint),
            ExtensionConfig::Zpages(z) => Some(&z.endpoint),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type a kind accepts has a schema, and only those.
    fn schemas_match<C: ComponentSection>() {
        let mut g = schemars::SchemaGenerator::default();
        let kinds: Vec<&str> = C::kind_schemas(&mut g)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, C::SUPPORTED, "{}s", C::NOUN);
    }

    #[test]
    fn each_kind_lists_the_same_types_everywhere() {
        schemas_match::<ReceiverConfig>();
        schemas_match::<ProcessorConfig>();
        schemas_match::<ExporterConfig>();
        schemas_match::<ExtensionConfig>();
    }
}
