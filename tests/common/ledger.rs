//! What arrived, point by point: a real OTLP receiver (gRPC or HTTP) that keeps only each
//! number point's series and timestamp, with how many times it came, so hour-long runs stay
//! small; and what the agent scraped, read back from its query façade the same way, to
//! compare the two.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// `name{job,instance,other labels sorted}` and a millisecond timestamp.
pub type Point = (String, i64);

#[derive(Clone, Default)]
pub struct Ledger {
    points: Arc<Mutex<HashMap<Point, u32>>>,
    requests: Arc<Mutex<u64>>,
    /// Only metric names starting with this are kept.
    prefix: Arc<String>,
}

pub fn series_key(name: &str, mut labels: Vec<(String, String)>) -> String {
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Ledger {
    fn record(&self, req: &ExportMetricsServiceRequest) {
        *self.requests.lock().expect("ledger") += 1;
        let mut points = self.points.lock().expect("ledger");
        for rm in &req.resource_metrics {
            let res = rm
                .resource
                .as_ref()
                .map(|r| super::attrs_map(&r.attributes))
                .unwrap_or_default();
            let mut base = Vec::new();
            if let Some(job) = res.get("service.name") {
                base.push(("job".to_string(), job.clone()));
            }
            if let Some(instance) = res.get("service.instance.id") {
                base.push(("instance".to_string(), instance.clone()));
            }
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    if !m.name.starts_with(self.prefix.as_str()) {
                        continue;
                    }
                    let dps = match &m.data {
                        Some(Data::Gauge(g)) => &g.data_points,
                        Some(Data::Sum(s)) => &s.data_points,
                        _ => continue,
                    };
                    for p in dps {
                        if p.flags & 1 == 1 {
                            continue; // staleness marker
                        }
                        let mut labels = base.clone();
                        labels.extend(super::attrs_map(&p.attributes));
                        let key = (
                            series_key(&m.name, labels),
                            (p.time_unix_nano / 1_000_000) as i64,
                        );
                        *points.entry(key).or_insert(0) += 1;
                    }
                }
            }
        }
    }

    /// Export requests accepted.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().expect("ledger")
    }

    /// Distinct points received.
    pub fn len(&self) -> usize {
        self.points.lock().expect("ledger").len()
    }

    /// Of `expected`, how many never arrived; and how many extra copies arrived of all points.
    pub fn compare(&self, expected: &BTreeSet<Point>) -> (usize, u64) {
        let points = self.points.lock().expect("ledger");
        let lost = expected.iter().filter(|p| !points.contains_key(*p)).count();
        let dups = points.values().map(|n| u64::from(n - 1)).sum();
        (lost, dups)
    }

    /// A few of `expected` that never arrived, for a failure message.
    pub fn missing(&self, expected: &BTreeSet<Point>, n: usize) -> Vec<Point> {
        let points = self.points.lock().expect("ledger");
        expected
            .iter()
            .filter(|p| !points.contains_key(*p))
            .take(n)
            .cloned()
            .collect()
    }

    /// Waits until every expected point arrived; (lost, duplicated) then or at `wait`.
    pub async fn settle(
        &self,
        expected: &BTreeSet<Point>,
        wait: std::time::Duration,
    ) -> (usize, u64) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (lost, dups) = self.compare(expected);
            if lost == 0 || tokio::time::Instant::now() > deadline {
                return (lost, dups);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

struct GrpcLedger(Ledger);

#[tonic::async_trait]
impl MetricsService for GrpcLedger {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.record(request.get_ref());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1 keeping the points of metrics named `prefix…`.
pub async fn grpc_ledger(prefix: &str) -> (SocketAddr, Ledger) {
    let ledger = Ledger {
        prefix: Arc::new(prefix.to_string()),
        ..Ledger::default()
    };
    let svc = MetricsServiceServer::new(GrpcLedger(ledger.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .max_decoding_message_size(64 << 20);
    (super::serve_metrics_service(svc).await, ledger)
}

async fn http_export(State(ledger): State<Ledger>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let raw = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => {
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return StatusCode::BAD_REQUEST;
            }
            out
        }
        Some("zstd") => match zstd::stream::decode_all(&body[..]) {
            Ok(b) => b,
            Err(_) => return StatusCode::BAD_REQUEST,
        },
        _ => body.to_vec(),
    };
    match ExportMetricsServiceRequest::decode(&raw[..]) {
        Ok(req) => {
            ledger.record(&req);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1 (protobuf) keeping the points of metrics `prefix…`.
pub async fn http_ledger(prefix: &str) -> (SocketAddr, Ledger) {
    let ledger = Ledger {
        prefix: Arc::new(prefix.to_string()),
        ..Ledger::default()
    };
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(http_export))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(ledger.clone());
    (super::serve_http(app).await, ledger)
}

/// Every (series, ms timestamp) the façade on `port` holds for `selector` within `range`
/// (a PromQL duration), keyed like the ledger's.
pub async fn facade_points(port: u16, selector: &str, range: &str) -> BTreeSet<Point> {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        super::go_query_escape(&format!("{selector}[{range}]"))
    );
    let (status, body) = super::http_get(&url, &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut out = BTreeSet::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let mut labels: BTreeMap<String, String> = s["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        let name = labels.remove("__name__").unwrap_or_default();
        let key = series_key(&name, labels.into_iter().collect());
        for pair in s["values"].as_array().into_iter().flatten() {
            let ts = pair[0].as_f64().expect("timestamp");
            out.insert((key.clone(), (ts * 1000.0).round() as i64));
        }
    }
    out
}
