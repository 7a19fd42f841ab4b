//! Test harness: real HTTP scrape targets, real OTLP receivers (gRPC and HTTP, built from the
//! opentelemetry-proto types), and helpers to run the agent.
#![allow(dead_code)]

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
type Requests = Arc<Mutex<Vec<(String, HeaderMap)>>>;

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let st = (pages.clone(), requests.clone());
        let app = axum::Router::new().fallback(
            |State((pages, requests)): State<(Pages, Requests)>,
             uri: axum::http::Uri,
             headers: HeaderMap| async move {
                requests
                    .lock()
                    .expect("lock")
                    .push((uri.path().to_string(), headers.clone()));
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
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.with_state(st)).await;
        });
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
            .filter(|(p, _)| p == path)
            .count()
    }

    pub fn last_headers(&self, path: &str) -> Option<HeaderMap> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
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
}

impl Sink {
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("lock").extend(replies);
    }

    fn next_reply(&self) -> Reply {
        *self.attempts.lock().expect("lock") += 1;
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = MetricsServiceServer::new(GrpcSink(sink.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    // The interceptor-free server records grpc-encoding through the request metadata.
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, sink)
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(http_export))
        .with_state(sink.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, sink)
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
    let cfg = meshmetrics::config::Config::from_text("test.yaml", yaml)
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
