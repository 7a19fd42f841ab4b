//! The `otlp` receiver against SDK-shaped clients: opentelemetry-proto messages over real
//! gRPC (tonic client, gzip) and HTTP (protobuf with zstd, and the spec's JSON encoding),
//! checked through the query façade against the OTLP → Prometheus mapping; refusals (delta
//! temporality, exponential histograms, auth, size limits, compression bombs, bad bodies,
//! memory limit) each with its status and reason.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pb;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn metric(name: &str, unit: &str, data: pb::metric::Data) -> pb::Metric {
    pb::Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} for tests"),
        data: Some(data),
        ..Default::default()
    }
}

fn number(t_ns: u64, v: pb::number_data_point::Value, attrs: Vec<KeyValue>) -> pb::NumberDataPoint {
    pb::NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: t_ns - 60_000_000_000,
        time_unix_nano: t_ns,
        value: Some(v),
        ..Default::default()
    }
}

const CUMULATIVE: i32 = pb::AggregationTemporality::Cumulative as i32;
const DELTA: i32 = pb::AggregationTemporality::Delta as i32;

/// What an OTel SDK sends: one resource (service, namespace, instance, k8s and SDK
/// attributes), one scope, the given metrics.
fn request(metrics: Vec<pb::Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("service.namespace", s("shop")),
                    kv("service.instance.id", s("pod-1")),
                    kv("k8s.pod.name", s("checkout-abc")),
                    kv("telemetry.sdk.language", s("rust")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![pb::ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// The values of an instant query, by the labels that tell series apart.
async fn values(port: u16, q: &str) -> Vec<(serde_json::Value, f64)> {
    let v = instant_query(port, q).await;
    v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let val = r["value"][1]
                .as_str()
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), val)
        })
        .collect()
}

async fn one_value(port: u16, q: &str) -> f64 {
    let v = values(port, q).await;
    assert_eq!(v.len(), 1, "{q}: {v:?}");
    v[0].1
}

async fn grpc_export(
    port: u16,
    token: Option<&str>,
    req: ExportMetricsServiceRequest,
) -> Result<ExportMetricsServiceResponse, tonic::Status> {
    let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(64 << 20);
    let mut r = tonic::Request::new(req);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    client.export(r).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_pushes_over_grpc_and_http_are_queryable_by_the_spec_mapping() {
    let (grpc, http, open, facade) = (free_port(), free_port(), free_port(), free_port());
    let running = start_agent(&format!(
        r#"
extensions:
  bearertokenauth:
    token: test-token
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}", auth: {{authenticator: bearertokenauth}}}}
      http: {{endpoint: "127.0.0.1:{http}", auth: {{authenticator: bearertokenauth}}, max_request_body_size: 65536}}
  otlp/open:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{open}", max_recv_msg_size_mib: 1}}
exporters:
  promql: {{endpoint: "127.0.0.1:{facade}"}}
service:
  extensions: [bearertokenauth]
  pipelines:
    metrics: {{receivers: [otlp, otlp/open], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
"#
    ))
    .await;
    let t = now_ns() - 1_000_000_000;
    use pb::metric::Data;
    use pb::number_data_point::Value::{AsDouble, AsInt};

    // gRPC, gzip: a counter, gauges, a histogram, and two things Prometheus cannot hold.
    let grpc_req = request(vec![
        metric(
            "http.server.requests",
            "{request}",
            Data::Sum(pb::Sum {
                data_points: vec![number(
                    t,
                    AsInt(42),
                    vec![
                        kv("http.response.status_code", any_value::Value::IntValue(200)),
                        kv("http.route", s("/pay")),
                    ],
                )],
                aggregation_temporality: CUMULATIVE,
                is_monotonic: true,
            }),
        ),
        metric(
            "process.memory.usage",
            "By",
            Data::Gauge(pb::Gauge {
                data_points: vec![number(t, AsDouble(1048576.5), vec![])],
            }),
        ),
        metric(
            "cpu.utilization",
            "1",
            Data::Gauge(pb::Gauge {
                data_points: vec![number(t, AsDouble(0.25), vec![])],
            }),
        ),
        metric(
            "http.server.request.duration",
            "s",
            Data::Histogram(pb::Histogram {
                data_points: vec![pb::HistogramDataPoint {
                    attributes: vec![kv("http.route", s("/pay"))],
                    start_time_unix_nano: t - 60_000_000_000,
                    time_unix_nano: t,
                    count: 10,
                    sum: Some(3.2),
                    bucket_counts: vec![5, 3, 1, 1],
                    explicit_bounds: vec![0.1, 0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: CUMULATIVE,
            }),
        ),
        metric(
            "delta.counter",
            "",
            Data::Sum(pb::Sum {
                data_points: vec![number(t, AsInt(5), vec![])],
                aggregation_temporality: DELTA,
                is_monotonic: true,
            }),
        ),
        metric(
            "latency.exp",
            "s",
            Data::ExponentialHistogram(pb::ExponentialHistogram {
                data_points: vec![pb::ExponentialHistogramDataPoint {
                    time_unix_nano: t,
                    count: 1,
                    ..Default::default()
                }],
                aggregation_temporality: CUMULATIVE,
            }),
        ),
    ]);
    // Without the token: refused, nothing stored.
    let e = grpc_export(grpc, None, grpc_req.clone())
        .await
        .expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = grpc_export(grpc, Some("wrong"), grpc_req.clone())
        .await
        .expect_err("wrong token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let resp = grpc_export(grpc, Some("test-token"), grpc_req)
        .await
        .expect("export");
    let partial = resp.partial_success.expect("partial success reported");
    assert_eq!(partial.rejected_data_points, 2, "{partial:?}");
    assert!(
        partial.error_message.contains("delta temporality")
            && partial.error_message.contains("exponential histograms"),
        "{}",
        partial.error_message
    );

    // HTTP, protobuf + zstd: a non-monotonic sum and a summary.
    let http_req = request(vec![
        metric(
            "queue.depth",
            "",
            Data::Sum(pb::Sum {
                data_points: vec![number(t, AsInt(7), vec![])],
                aggregation_temporality: CUMULATIVE,
                is_monotonic: false,
            }),
        ),
        metric(
            "rpc.latency",
            "ms",
            Data::Summary(pb::Summary {
                data_points: vec![pb::SummaryDataPoint {
                    time_unix_nano: t,
                    count: 5,
                    sum: 100.0,
                    quantile_values: vec![
                        pb::summary_data_point::ValueAtQuantile {
                            quantile: 0.5,
                            value: 12.0,
                        },
                        pb::summary_data_point::ValueAtQuantile {
                            quantile: 0.99,
                            value: 40.0,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        ),
    ]);
    let url = format!("http://127.0.0.1:{http}/v1/metrics");
    let body = zstd::encode_all(&http_req.encode_to_vec()[..], 3).expect("zstd");
    let (status, _, _) = http_post(
        &url,
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "zstd"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "no token");
    let (status, headers, resp) = http_post(
        &url,
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "zstd"),
            ("authorization", "Bearer test-token"),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf")
    );
    let resp = ExportMetricsServiceResponse::decode(resp.as_slice()).expect("response");
    assert!(resp.partial_success.is_none(), "{resp:?}");

    // HTTP, the spec's JSON encoding (camelCase, 64-bit integers as strings).
    let json = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}},{{"key":"service.instance.id","value":{{"stringValue":"j-1"}}}}]}},
        "scopeMetrics":[{{"scope":{{"name":"json"}},"metrics":[{{"name":"json.items","unit":"{{item}}",
        "sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{{"asInt":"12","timeUnixNano":"{t}","attributes":[{{"key":"shard","value":{{"intValue":"3"}}}}]}}]}}}}]}}]}}]}}"#
    );
    let (status, _, resp) = http_post(
        &url,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer test-token"),
        ],
        json.into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));

    // The mapping, read back through PromQL.
    let job = r#"job="shop/checkout",instance="pod-1""#;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        one_value(
            facade,
            &format!(
                r#"http_server_requests_total{{{job},http_response_status_code="200",http_route="/pay"}}"#
            )
        )
        .await,
        42.0
    );
    assert_eq!(
        one_value(facade, &format!("process_memory_usage_bytes{{{job}}}")).await,
        1048576.5
    );
    assert_eq!(one_value(facade, "cpu_utilization_ratio").await, 0.25);
    assert_eq!(one_value(facade, "queue_depth").await, 7.0);
    let buckets = values(facade, "http_server_request_duration_seconds_bucket").await;
    let le = |b: &str| {
        buckets
            .iter()
            .find(|(m, _)| m["le"] == b)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    };
    assert_eq!(buckets.len(), 4, "{buckets:?}");
    assert_eq!(
        (le("0.1"), le("0.5"), le("1"), le("+Inf")),
        (5.0, 8.0, 9.0, 10.0)
    );
    assert_eq!(
        one_value(facade, "http_server_request_duration_seconds_count").await,
        10.0
    );
    assert_eq!(
        one_value(facade, "http_server_request_duration_seconds_sum").await,
        3.2
    );
    // Prometheus's interpolation inside the bucket holding the rank: 0.5 * 10 = 5 → le 0.1.
    assert_eq!(
        one_value(
            facade,
            "histogram_quantile(0.5, http_server_request_duration_seconds_bucket)"
        )
        .await,
        0.1
    );
    assert_eq!(
        one_value(facade, r#"rpc_latency_milliseconds{quantile="0.99"}"#).await,
        40.0
    );
    assert_eq!(
        one_value(facade, "rpc_latency_milliseconds_count").await,
        5.0
    );
    let info = values(facade, "target_info").await;
    let checkout = info
        .iter()
        .find(|(m, _)| m["job"] == "shop/checkout")
        .unwrap_or_else(|| panic!("target_info: {info:?}"));
    assert_eq!(checkout.0["k8s_pod_name"], "checkout-abc");
    assert_eq!(checkout.0["telemetry_sdk_language"], "rust");
    assert_eq!(checkout.0["instance"], "pod-1");
    assert!(checkout.0.get("service_name").is_none(), "{info:?}");
    assert_eq!(
        one_value(
            facade,
            r#"json_items_total{job="json-svc",instance="j-1",shard="3"}"#
        )
        .await,
        12.0
    );
    assert!(values(facade, "delta_counter_total").await.is_empty());
    assert!(values(facade, "latency_exp_seconds").await.is_empty());

    // Limits and malformed requests, each refused with its reason.
    let big = request(vec![metric(
        "big.gauge",
        "",
        Data::Gauge(pb::Gauge {
            data_points: (0..40_000)
                .map(|i| {
                    number(
                        t,
                        AsDouble(1.0),
                        vec![kv("i", any_value::Value::IntValue(i))],
                    )
                })
                .collect(),
        }),
    )]);
    assert!(big.encoded_len() > 1 << 20);
    let e = grpc_export(open, None, big.clone())
        .await
        .expect_err("over max_recv_msg_size_mib");
    // As grpc-go answers an oversized message, and before it is inflated in full.
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("size limit"), "{e:?}");
    let auth = ("authorization", "Bearer test-token");
    let (status, _, resp) = http_post(
        &url,
        &[("content-type", "application/x-protobuf"), auth],
        big.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&resp));
    // 1 MiB of zeros gzip to 1 KiB: under the body limit, over it once inflated.
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 65536);
    let (status, _, resp) = http_post(
        &url,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            auth,
        ],
        bomb,
    )
    .await;
    assert_eq!(status, 413);
    let msg = String::from_utf8_lossy(&resp).to_string();
    assert!(msg.contains("after decompression"), "{msg}");
    let (status, _, resp) = http_post(
        &url,
        &[("content-type", "application/x-protobuf"), auth],
        b"\xff\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let st = meshmetrics::google_rpc::Status::decode(resp.as_slice()).expect("google.rpc.Status");
    assert!(st.message.contains("cannot decode"), "{st:?}");
    let (status, _, _) = http_post(&url, &[("content-type", "text/plain"), auth], vec![]).await;
    assert_eq!(status, 415);
    let (status, _, _) = http_post(
        &url,
        &[("content-type", "application/json"), auth],
        b"{\"resourceMetrics\": [".to_vec(),
    )
    .await;
    assert_eq!(status, 400);

    // The data that was accepted is still all there.
    assert_eq!(one_value(facade, "queue_depth").await, 7.0);
    running.shutdown(Duration::from_secs(2)).await;
}

/// While a memory limiter of its pipeline refuses data, pushes get OTLP's retryable answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limiter_refusal_is_retryable() {
    let (grpc, http, facade) = (free_port(), free_port(), free_port());
    let running = start_agent(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  memory_limiter: {{check_interval: 50ms, limit_mib: 2, spike_limit_mib: 1}}
exporters:
  promql: {{endpoint: "127.0.0.1:{facade}"}}
service:
  pipelines:
    metrics: {{receivers: [otlp], processors: [memory_limiter], exporters: [promql]}}
  telemetry: {{metrics: {{address: ''}}}}
"#
    ))
    .await;
    // Any process is above 1 MiB resident: the limiter refuses from its first check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let req = request(vec![metric(
        "refused.gauge",
        "",
        pb::metric::Data::Gauge(pb::Gauge {
            data_points: vec![number(
                now_ns(),
                pb::number_data_point::Value::AsDouble(1.0),
                vec![],
            )],
        }),
    )]);
    let e = grpc_export(grpc, None, req.clone())
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let (status, headers, _) = http_post(
        &format!("http://127.0.0.1:{http}/v1/metrics"),
        &[("content-type", "application/x-protobuf")],
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(values(facade, "refused_gauge").await.is_empty());
    running.shutdown(Duration::from_secs(2)).await;
}
