//! Test harness: real HTTP scrape targets, real OTLP receivers (gRPC and HTTP, built from the
//! opentelemetry-proto types), and helpers to run the agent.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod kube_api;
pub mod ledger;
pub mod prometheus;
mod query_escape;
pub mod webdriver;
pub use query_escape::go_query_escape;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1 as pb;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a test target serves on one path.
#[derive(Clone)]
pub struct Page {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Serve gzip-compressed when the scraper accepts it.
    pub gzip: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Page {
    pub fn text(body: impl Into<Vec<u8>>) -> Self {
        Page {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8".into(),
            body: body.into(),
            gzip: false,
            delay: Duration::ZERO,
        }
    }

    pub fn openmetrics(body: impl Into<Vec<u8>>) -> Self {
        Page {
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8".into(),
            ..Page::text(body)
        }
    }
}

type Pages = Arc<Mutex<HashMap<String, Page>>>;
type Requests = Arc<Mutex<Vec<(String, HeaderMap, std::time::Instant)>>>;

/// A scrape target on 127.0.0.1 whose pages tests can change while it runs.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pages: Pages,
    pub requests: Requests,
}

impl Target {
    pub async fn start() -> Target {
        let pages: Pages = Arc::default();
        let requests: Requests = Arc::default();
        let st = (pages.clone(), requests.clone());
        let app = axum::Router::new().fallback(
            |State((pages, requests)): State<(Pages, Requests)>,
             uri: axum::http::Uri,
             headers: HeaderMap| async move {
                requests.lock().expect("lock").push((
                    uri.path().to_string(),
                    headers.clone(),
                    std::time::Instant::now(),
                ));
                let page = pages.lock().expect("lock").get(uri.path()).cloned();
                let Some(page) = page else {
                    return (StatusCode::NOT_FOUND, HeaderMap::new(), Vec::new()).into_response();
                };
                if !page.delay.is_zero() {
                    tokio::time::sleep(page.delay).await;
                }
                let mut h = HeaderMap::new();
                h.insert("content-type", page.content_type.parse().expect("ct"));
                let accepts_gzip = headers
                    .get("accept-encoding")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("gzip"));
                let body = if page.gzip && accepts_gzip {
                    h.insert("content-encoding", "gzip".parse().expect("ce"));
                    gzip(&page.body)
                } else {
                    page.body.clone()
                };
                (StatusCode::from_u16(page.status).expect("status"), h, body).into_response()
            },
        );
        let addr = serve_http(app.with_state(st)).await;
        Target {
            addr,
            pages,
            requests,
        }
    }

    pub fn set(&self, path: &str, page: Page) {
        self.pages
            .lock()
            .expect("lock")
            .insert(path.to_string(), page);
    }

    pub fn request_count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _, _)| p == path)
            .count()
    }

    pub fn last_headers(&self, path: &str) -> Option<HeaderMap> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .rev()
            .find(|(p, _, _)| p == path)
            .map(|(_, h, _)| h.clone())
    }

    /// When each request for `path` arrived.
    pub fn request_times(&self, path: &str) -> Vec<std::time::Instant> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, _, t)| *t)
            .collect()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// One export as a receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub request: ExportMetricsServiceRequest,
    pub headers: HashMap<String, String>,
}

/// Responses a sink gives, in order; when the script runs out, it accepts.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    /// HTTP status (with an optional Retry-After) or, for gRPC, a tonic code number.
    Fail {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
}

#[derive(Clone, Default)]
pub struct Sink {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub attempts: Arc<Mutex<usize>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// While set, every request gets this reply (an outage of any length).
    outage: Arc<Mutex<Option<Reply>>>,
}

impl Sink {
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("lock").extend(replies);
    }

    /// Starts (`Some`) or ends (`None`) an outage.
    pub fn outage(&self, reply: Option<Reply>) {
        *self.outage.lock().expect("lock") = reply;
    }

    fn next_reply(&self) -> Reply {
        *self.attempts.lock().expect("lock") += 1;
        if let Some(r) = self.outage.lock().expect("lock").clone() {
            return r;
        }
        self.script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Reply::Ok)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Every metric received, flattened with its resource attributes.
    pub fn metrics(&self) -> Vec<(HashMap<String, String>, pb::Metric)> {
        let mut out = Vec::new();
        for r in self.requests() {
            for rm in r.request.resource_metrics {
                let attrs = rm
                    .resource
                    .as_ref()
                    .map(|r| attrs_map(&r.attributes))
                    .unwrap_or_default();
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        out.push((attrs.clone(), m));
                    }
                }
            }
        }
        out
    }

    /// Waits until `pred` holds for the received metrics, or panics after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&Sink) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if pred(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let names: Vec<String> = self.metrics().iter().map(|(_, m)| m.name.clone()).collect();
        panic!("timed out waiting for {what}; received metrics: {names:?}");
    }
}

pub fn attrs_map(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    s.clone()
                }
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

struct GrpcSink(Sink);

#[tonic::async_trait]
impl MetricsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        match self.0.next_reply() {
            Reply::Ok => {
                let headers = request
                    .metadata()
                    .clone()
                    .into_headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                self.0.received.lock().expect("lock").push(Received {
                    request: request.into_inner(),
                    headers,
                });
                Ok(tonic::Response::new(ExportMetricsServiceResponse {
                    partial_success: None,
                }))
            }
            Reply::Fail { status, body, .. } => {
                Err(tonic::Status::new(tonic::Code::from(status as i32), body))
            }
        }
    }
}

/// A real OTLP/gRPC receiver on 127.0.0.1 (accepts gzip and zstd).
pub async fn grpc_sink() -> (SocketAddr, Sink) {
    let sink = Sink::default();
    let svc = MetricsServiceServer::new(GrpcSink(sink.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    (serve_metrics_service(svc).await, sink)
}

/// Serves an OTLP metrics gRPC service on 127.0.0.1 (a free port) until the test ends.
pub async fn serve_metrics_service<T: MetricsService>(svc: MetricsServiceServer<T>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    addr
}

/// The sum of a self metric's samples (every label set) on the agent's telemetry port;
/// NaN when the port does not answer.
pub async fn self_metric(port: u16, name: &str) -> f64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let Some((_, text)) = try_http_get(&url).await else {
        return f64::NAN;
    };
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn http_export(
    State(sink): State<Sink>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let reply = sink.next_reply();
    if let Reply::Fail {
        status,
        retry_after,
        body,
    } = reply
    {
        let mut h = HeaderMap::new();
        if let Some(s) = retry_after {
            h.insert("retry-after", s.to_string().parse().expect("header"));
        }
        return (StatusCode::from_u16(status).expect("status"), h, body).into_response();
    }
    let raw = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .expect("gunzip");
            out
        }
        Some("zstd") => zstd::stream::decode_all(&body[..]).expect("unzstd"),
        _ => body.to_vec(),
    };
    let request = match headers.get("content-type").and_then(|v| v.to_str().ok()) {
        Some("application/json") => serde_json::from_slice(&raw).expect("OTLP JSON"),
        _ => ExportMetricsServiceRequest::decode(&raw[..]).expect("OTLP protobuf"),
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    sink.received
        .lock()
        .expect("lock")
        .push(Received { request, headers });
    (StatusCode::OK, HeaderMap::new(), Vec::new()).into_response()
}

/// A real OTLP/HTTP receiver on 127.0.0.1 (`POST /v1/metrics`, protobuf or JSON, gzip/zstd).
pub async fn http_sink() -> (SocketAddr, Sink) {
    let sink = Sink::default();
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(http_export))
        .with_state(sink.clone());
    (serve_http(app).await, sink)
}

/// Number points of a metric (gauge or sum).
pub fn number_points(m: &pb::Metric) -> Vec<pb::NumberDataPoint> {
    match &m.data {
        Some(pb::metric::Data::Gauge(g)) => g.data_points.clone(),
        Some(pb::metric::Data::Sum(s)) => s.data_points.clone(),
        _ => Vec::new(),
    }
}

pub fn value(p: &pb::NumberDataPoint) -> Option<f64> {
    match p.value {
        Some(pb::number_data_point::Value::AsDouble(v)) => Some(v),
        Some(pb::number_data_point::Value::AsInt(v)) => Some(v as f64),
        None => None,
    }
}

/// Runs the agent in-process on a config text.
pub async fn start_agent(yaml: &str) -> meshmetrics::service::Running {
    let cfg = meshmetrics::service::Config::from_text("test.yaml", yaml)
        .unwrap_or_else(|e| panic!("config: {e}"));
    meshmetrics::service::Running::start(Arc::new(cfg))
        .await
        .expect("agent starts")
}

/// The Istio sidecar sample from the shared corpora.
pub fn istio_sample() -> Vec<u8> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpora/envoy-istio-samples/datadog/istio-1.11.4-sidecar-merged.txt");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Istio's default request-duration buckets (ms), without +Inf.
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A sidecar-like exposition for pod `pod` after `step` updates: `istio_requests_total` and
/// `istio_request_duration_milliseconds` with Istio's 25 labels, plus Envoy cluster counters.
/// Pods alternate between the primary and canary workloads; canary pods fail more often.
pub fn istio_like_body(pod: usize, step: u64, ts_ms: Option<i64>) -> String {
    let workload = if pod.is_multiple_of(2) {
        "podinfo-primary"
    } else {
        "podinfo-canary"
    };
    let ts = ts_ms.map(|t| format!(" {t}")).unwrap_or_default();
    let mut out = String::new();
    out.push_str(
        "# HELP istio_requests_total Total requests.\n# TYPE istio_requests_total counter\n",
    );
    let codes: [(&str, u64); 3] = [
        ("200", 20 + pod as u64),
        ("404", 1 + (pod as u64 % 2)),
        ("503", if pod % 2 == 1 { 3 } else { 1 }),
    ];
    let labels = |code: &str| {
        format!(
            "connection_security_policy=\"mutual_tls\",destination_app=\"podinfo\",destination_canonical_revision=\"latest\",destination_canonical_service=\"podinfo\",destination_cluster=\"Kubernetes\",destination_principal=\"spiffe://cluster.local/ns/test/sa/podinfo\",destination_service=\"podinfo.test.svc.cluster.local\",destination_service_name=\"podinfo\",destination_service_namespace=\"test\",destination_version=\"v1\",destination_workload=\"{workload}\",destination_workload_namespace=\"test\",grpc_response_status=\"\",reporter=\"destination\",request_protocol=\"http\",response_code=\"{code}\",response_flags=\"-\",source_app=\"loadtester\",source_canonical_revision=\"latest\",source_canonical_service=\"loadtester\",source_cluster=\"Kubernetes\",source_principal=\"spiffe://cluster.local/ns/test/sa/loadtester\",source_version=\"unknown\",source_workload=\"flagger-loadtester\",source_workload_namespace=\"test\""
        )
    };
    for (code, rate) in codes {
        out.push_str(&format!(
            "istio_requests_total{{{}}} {}{ts}\n",
            labels(code),
            step * rate
        ));
    }
    out.push_str("# HELP istio_request_duration_milliseconds Request duration.\n# TYPE istio_request_duration_milliseconds histogram\n");
    for (code, rate) in codes {
        let total = step * rate;
        let l = labels(code);
        // Latency grows with the pod index and for errors, so quantiles differ per workload.
        let shift = pod as f64 * 0.3 + if code == "503" { 2.0 } else { 0.0 };
        for (j, le) in ISTIO_BUCKETS.iter().enumerate() {
            let frac = (1.0 - (-(j as f64 + 1.0 - shift).max(0.0) / 3.0).exp()).clamp(0.0, 1.0);
            let cum = (total as f64 * frac).floor() as u64;
            out.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{{l},le=\"{le}\"}} {cum}{ts}\n"
            ));
        }
        out.push_str(&format!(
            "istio_request_duration_milliseconds_bucket{{{l},le=\"+Inf\"}} {total}{ts}\n"
        ));
        out.push_str(&format!(
            "istio_request_duration_milliseconds_sum{{{l}}} {}{ts}\n",
            total * (40 + pod as u64)
        ));
        out.push_str(&format!(
            "istio_request_duration_milliseconds_count{{{l}}} {total}{ts}\n"
        ));
    }
    out.push_str("# TYPE envoy_cluster_upstream_rq counter\n");
    for (c, cluster) in [
        "inbound|9898||",
        "outbound|80||podinfo.test.svc.cluster.local",
        "xds-grpc",
    ]
    .iter()
    .enumerate()
    {
        for code in ["200", "503"] {
            let v = step * (5 + c as u64) / if code == "503" { 5 } else { 1 };
            out.push_str(&format!(
                "envoy_cluster_upstream_rq{{response_code=\"{code}\",cluster_name=\"{cluster}\"}} {v}{ts}\n"
            ));
        }
    }
    out.push_str("# TYPE envoy_server_live gauge\n");
    out.push_str(&format!("envoy_server_live 1{ts}\n"));
    out.push_str("# TYPE envoy_cluster_upstream_cx_active gauge\n");
    out.push_str(&format!(
        "envoy_cluster_upstream_cx_active{{cluster_name=\"xds-grpc\"}} {}{ts}\n",
        (step % 7) + pod as u64
    ));
    out
}

/// A GET that reports a failed connection as `None`.
pub async fn try_http_get(url: &str) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().ok()?).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A GET with headers; `None` when nothing answers.
pub async fn try_http_get_with(url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(http_body_util::Empty::new()).ok()?)
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A GET with headers; returns status and body.
pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    try_http_get_with(url, headers)
        .await
        .unwrap_or_else(|| panic!("GET {url}: no answer"))
}

/// An instant query to a façade on 127.0.0.1:`port`; the parsed JSON answer.
pub async fn instant_query(port: u16, q: &str) -> serde_json::Value {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        go_query_escape(q)
    );
    let (status, body) = http_get(&url, &[]).await;
    assert_eq!(status, 200, "{q}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// A POST with headers; returns status, response headers and body.
pub async fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = http::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let resp = client.request(req).await.expect("POST");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body.to_vec())
}

/// A POST of a urlencoded form.
pub async fn http_post_form(url: &str, form: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            form.to_string(),
        )))
        .expect("request");
    let resp = client.request(req).await.expect("POST");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A test CA and a server certificate for 127.0.0.1 signed by it (PEM).
pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    TestPki {
        ca_pem: ca.pem(),
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    }
}

/// Serves `app` over plain HTTP on a free port of 127.0.0.1.
pub async fn serve_http(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Serves `app` over TLS on 127.0.0.1 (HTTP/1.1 and HTTP/2 by ALPN).
pub async fn serve_tls(app: axum::Router, pki: &TestPki) -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .expect("key")
        .expect("a key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// An OTLP/HTTP receiver over TLS.
pub async fn https_sink(pki: &TestPki) -> (SocketAddr, Sink) {
    let sink = Sink::default();
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(http_export))
        .with_state(sink.clone());
    (serve_tls(app, pki).await, sink)
}

/// A free TCP port on 127.0.0.1, for an agent to listen on.
///
/// Taken below the kernel's ephemeral range: a port the kernel picked for `bind(0)` comes from
/// the range it also gives outgoing connections, so any client (another agent, a proxy) could
/// take it between this check and the agent's bind. Below it, only another listener can. A
/// per-process sequence keeps concurrent tests of one binary apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(11_000));
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = low + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The agent binary running on `yaml`, written to a file of a temporary directory that lives
/// as long as the process; stdout is dropped, stderr goes where `stderr` says.
pub fn spawn_agent(yaml: &str, stderr: std::process::Stdio) -> (ChildGuard, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_meshmetrics"))
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("agent starts");
    (ChildGuard(child), dir)
}

/// A field of a process's `/proc/PID/status` in KiB (`VmHWM:` is its peak resident memory).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A child process (the agent binary) killed when the test ends, passing or not.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
