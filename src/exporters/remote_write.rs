//! The `prometheusremotewrite` exporter, with the collector contrib's name and keys: the
//! same series the agent scrapes, sent to a store that outgrows one agent's window
//! (VictoriaMetrics, Mimir, Thanos Receive, a Prometheus with its receiver on) by the
//! Prometheus remote write 1.0 protocol: a snappy-compressed protobuf `WriteRequest` per
//! batch, POSTed with the protocol's headers. Batches go through the OTLP exporter's queue
//! (in memory, or on disk with `remote_write_queue.storage`) and retries.

use bytes::Bytes;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::otlp::{Batch, QueueConfig, RetryConfig, SendError, Transport};
use crate::config::secret::Secret;
use crate::config::tls::TlsClientConfig;
use crate::config::units::de_opt_duration;
use crate::model::Metrics;

/// `exporters: prometheusremotewrite:`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's URL (`http://vminsert:8480/insert/0/prometheus/api/v1/write`).
    pub endpoint: String,
    /// Extra request headers (a tenant, a token). Values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Per-request timeout (5s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub timeout: Option<Duration>,
    /// TLS settings for the remote write endpoint.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Labels added to every series that does not have them.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Every resource attribute becomes a label (names made Prometheus-safe).
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceConversion,
    /// A prefix for every metric name (`namespace_name`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The contrib exporter's queue: `enabled`, `queue_size`, `num_consumers`; `storage`
    /// names a `file_storage` extension to keep it on disk.
    #[serde(default = "default_queue")]
    pub remote_write_queue: QueueConfig,
    /// Retries of failed sends, with exponential backoff.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceConversion {
    /// Whether resource attributes become labels of every series.
    #[serde(default)]
    pub enabled: bool,
}

fn default_queue() -> QueueConfig {
    QueueConfig {
        queue_size: 10_000,
        num_consumers: 5,
        ..QueueConfig::default()
    }
}

impl RemoteWriteConfig {
    /// Starts the exporter: batches go through the OTLP exporter's queue and retries.
    pub fn start(
        &self,
        ctx: super::ExporterContext,
        input: super::Input,
    ) -> Result<super::StartedExporter, String> {
        let transport: std::sync::Arc<dyn Transport> =
            std::sync::Arc::new(RemoteWriteTransport::new(self)?);
        let encoder = self.encoder();
        let delivery = super::otlp::Delivery {
            queue: self.remote_write_queue.clone(),
            retry: self.retry_on_failure.clone(),
            encode: std::sync::Arc::new(move |m| encoder.batch(m)),
        };
        Ok(super::StartedExporter::task(tokio::spawn(
            super::otlp::run(
                ctx.name,
                delivery,
                transport,
                input,
                ctx.telemetry,
                ctx.storage,
            ),
        )))
    }

    pub fn validate(&self) -> Result<(), String> {
        let url: http::Uri = self
            .endpoint
            .parse()
            .map_err(|e| format!("invalid endpoint {:?}: {e}", self.endpoint))?;
        if !matches!(url.scheme_str(), Some("http") | Some("https")) {
            return Err(format!(
                "endpoint {:?} must start with http:// or https://",
                self.endpoint
            ));
        }
        for k in self.external_labels.keys() {
            if !crate::model::is_label_name(k) {
                return Err(format!("external_labels: {k:?} is not a label name"));
            }
        }
        if let Some(ns) = &self.namespace {
            if !ns.is_empty() && !crate::model::is_label_name(ns) {
                return Err(format!(
                    "namespace {ns:?} is not a valid metric name prefix"
                ));
            }
        }
        for k in self.headers.keys() {
            http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
        }
        Ok(())
    }

    /// How batches are made from pipeline data.
    pub fn encoder(&self) -> Encoder {
        Encoder {
            external: self
                .external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            resource_labels: self.resource_to_telemetry_conversion.enabled,
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
        }
    }
}

/// The remote write 1.0 messages (prometheus/prompb), as the protocol defines them.
mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

pub use prompb::{Label as WriteLabel, TimeSeries, WriteRequest};

/// Turns pipeline batches into snappy-compressed `WriteRequest`s.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    external: Vec<(String, String)>,
    resource_labels: bool,
    namespace: Option<String>,
}

/// A resource attribute name as a label name: what is not `[a-zA-Z0-9_]` becomes `_`.
fn label_name(attr: &str) -> String {
    let mut s: String = attr
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "key_");
    }
    s
}

impl Encoder {
    /// The series of `m`: every sample with `__name__`, `job` and `instance` (from the
    /// resource, as the store and Prometheus name them), its labels, the resource's
    /// attributes when asked, and the external labels it lacks; samples of one series in one
    /// `TimeSeries`, in time order. Staleness markers go as they are (the stale NaN).
    pub fn write_request(&self, m: &Metrics) -> WriteRequest {
        let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        let mut out: Vec<TimeSeries> = Vec::new();
        for r in &m.resources {
            let name = r.resource_attr("service.name").unwrap_or("");
            let job = match r.resource_attr("service.namespace") {
                Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
                _ => name.to_string(),
            };
            let instance = r.resource_attr("service.instance.id").unwrap_or("");
            for f in &r.families {
                for s in &f.samples {
                    let metric = match &self.namespace {
                        Some(ns) => format!("{ns}_{}", s.name),
                        None => s.name.to_string(),
                    };
                    let mut labels: Vec<(String, String)> = Vec::with_capacity(s.labels.len() + 4);
                    labels.push(("__name__".into(), metric));
                    for l in s.labels.iter() {
                        labels.push((l.name.to_string(), l.value.to_string()));
                    }
                    if !job.is_empty() {
                        labels.push(("job".into(), job.clone()));
                    }
                    if !instance.is_empty() {
                        labels.push(("instance".into(), instance.to_string()));
                    }
                    if self.resource_labels {
                        for (k, v) in &r.resource {
                            if !matches!(
                                k.as_str(),
                                "service.name" | "service.namespace" | "service.instance.id"
                            ) {
                                labels.push((label_name(k), v.clone()));
                            }
                        }
                    }
                    for (k, v) in &self.external {
                        labels.push((k.clone(), v.clone()));
                    }
                    // Sorted by name; the first of a name wins (the sample's own over the
                    // resource's, over the external labels).
                    labels.sort_by(|a, b| a.0.cmp(&b.0));
                    labels.dedup_by(|b, a| a.0 == b.0);
                    labels.retain(|(_, v)| !v.is_empty());
                    let sample = prompb::Sample {
                        value: s.value,
                        timestamp: s.timestamp_ms,
                    };
                    match index.get(&labels) {
                        Some(&i) => out[i].samples.push(sample),
                        None => {
                            index.insert(labels.clone(), out.len());
                            out.push(TimeSeries {
                                labels: labels
                                    .into_iter()
                                    .map(|(name, value)| prompb::Label { name, value })
                                    .collect(),
                                samples: vec![sample],
                            });
                        }
                    }
                }
            }
        }
        for ts in &mut out {
            ts.samples.sort_by_key(|s| s.timestamp);
        }
        WriteRequest { timeseries: out }
    }

    /// A batch: the `WriteRequest` as protobuf, snappy-compressed (the block format the
    /// protocol asks), and its sample count.
    pub fn batch(&self, m: &Metrics) -> Batch {
        use prost::Message;
        let req = self.write_request(m);
        let points = req.timeseries.iter().map(|t| t.samples.len()).sum();
        let raw = req.encode_to_vec();
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .unwrap_or_default();
        Batch {
            request: compressed.into(),
            points,
        }
    }
}

/// Sends batches with the remote write 1.0 headers.
pub struct RemoteWriteTransport {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<Bytes>,
    >,
    url: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    timeout: Duration,
}

impl RemoteWriteTransport {
    pub fn new(cfg: &RemoteWriteConfig) -> Result<Self, String> {
        let url: http::Uri = cfg
            .endpoint
            .parse()
            .map_err(|e| format!("invalid endpoint {:?}: {e}", cfg.endpoint))?;
        let client = super::otlp::http::client(&cfg.tls)?;
        let headers = super::otlp::http::header_values(&cfg.headers)?;
        Ok(RemoteWriteTransport {
            client,
            url,
            headers,
            timeout: cfg.timeout.unwrap_or(Duration::from_secs(5)),
        })
    }
}

#[async_trait::async_trait]
impl Transport for RemoteWriteTransport {
    async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        let mut req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                http::header::USER_AGENT,
                concat!("meshmetrics/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(http_body_util::Full::new(batch.request.clone()))
            .map_err(|e| SendError::Permanent {
                cause: "request".into(),
                detail: e.to_string(),
            })?;
        let (status, retry_after, detail) =
            super::otlp::http::post(&self.client, req, self.timeout).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let cause = format!("HTTP {status}");
        // As Prometheus's remote write client: 5xx and 429 are tried again, other 4xx not.
        if status >= 500 || status == 429 {
            Err(SendError::Retryable { cause, retry_after })
        } else {
            Err(SendError::Permanent { cause, detail })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, MetricFamily, MetricKind, ResourceMetrics, Sample};
    use prost::Message;

    #[test]
    fn series_get_job_instance_external_and_resource_labels() {
        let resource = ResourceMetrics {
            resource: vec![
                ("service.name".into(), "mesh".into()),
                ("service.instance.id".into(), "10.0.0.1:15020".into()),
                ("k8s.pod.name".into(), "podinfo-1".into()),
            ],
            scope_name: String::new(),
            scope_version: String::new(),
            families: vec![MetricFamily {
                name: "istio_requests_total".into(),
                kind: MetricKind::Counter,
                help: "".into(),
                unit: "".into(),
                samples: vec![
                    Sample {
                        name: "istio_requests_total".into(),
                        labels: Labels::from_pairs([("code", "200"), ("cluster", "mine")]),
                        value: 7.0,
                        timestamp_ms: 2000,
                    },
                    Sample {
                        name: "istio_requests_total".into(),
                        labels: Labels::from_pairs([("code", "200"), ("cluster", "mine")]),
                        value: 5.0,
                        timestamp_ms: 1000,
                    },
                ],
            }],
        };
        let m = Metrics {
            resources: vec![resource],
        };
        let cfg: RemoteWriteConfig = serde_saphyr::from_str(
            "endpoint: http://127.0.0.1:8428/api/v1/write\nexternal_labels: {cluster: east, region: eu}\nresource_to_telemetry_conversion: {enabled: true}\n",
        )
        .expect("parses");
        assert!(cfg.validate().is_ok());
        let req = cfg.encoder().write_request(&m);
        assert_eq!(req.timeseries.len(), 1);
        let ts = &req.timeseries[0];
        let labels: Vec<(&str, &str)> = ts
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("__name__", "istio_requests_total"),
                ("cluster", "mine"),
                ("code", "200"),
                ("instance", "10.0.0.1:15020"),
                ("job", "mesh"),
                ("k8s_pod_name", "podinfo-1"),
                ("region", "eu"),
            ]
        );
        let times: Vec<i64> = ts.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, vec![1000, 2000]);
        let batch = cfg.encoder().batch(&m);
        assert_eq!(batch.points, 2);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&batch.request)
            .expect("snappy");
        assert_eq!(WriteRequest::decode(raw.as_slice()).expect("protobuf"), req);
    }
}
