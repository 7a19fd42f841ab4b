//! The `otlp` receiver: OTLP metrics pushed over gRPC (`:4317`) and HTTP (`:4318`,
//! `/v1/metrics`, protobuf or JSON), gzip or zstd, with the collector's size limits and
//! optional bearer-token auth. Requests are translated to the internal model by
//! [`translate`] and enter the receiver's pipelines like scraped data; what cannot be
//! represented is refused as an OTLP partial success. While a memory limiter of its pipelines
//! refuses data, requests get the OTLP retryable answer (gRPC `UNAVAILABLE`, HTTP 503).

pub mod budget;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use serde::{Deserialize, Deserializer};
use tokio::net::TcpListener;

use super::ReceiverContext;
use crate::config::units::de_opt_bytes;
use crate::extensions::bearer_token_auth::BearerTokenAuth;
use crate::model::Interner;
use crate::pipeline::Fanout;
use crate::processors::memory_limiter::SharedGates;
use crate::telemetry::{SharedTelemetry, Telemetry};

/// The collector's defaults: 4 MiB gRPC messages, 20 MiB HTTP bodies (both after
/// decompression, so a small compressed bomb cannot inflate past them).
pub const DEFAULT_GRPC_MAX_RECV_MSG_SIZE_MIB: u64 = 4;
pub const DEFAULT_HTTP_MAX_REQUEST_BODY_SIZE: u64 = 20 << 20;
/// How long a request body may take to arrive: a slow sender holds a connection, not the
/// receiver.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A request may decode to this many times its transport's size limit.
const DECODED_SIZE_FACTOR: usize = 8;
/// The OTLP metrics export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// Which protocols to serve: `grpc`, `http`, or both.
    #[serde(default)]
    pub protocols: Protocols,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// `grpc:` with nothing after it enables gRPC with its defaults, as in the collector.
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    /// Serve OTLP/HTTP (`/v1/metrics`); empty (`http:`) takes every default.
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

/// A key that is present, even with an empty value, enables its section with defaults.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `auth: {authenticator: <extension id>}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthRef {
    /// The id of a `bearertokenauth` extension listed in `service.extensions`.
    pub authenticator: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// The address the gRPC server listens on.
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    /// The largest request accepted, in MiB.
    #[serde(default = "default_grpc_max")]
    pub max_recv_msg_size_mib: u64,
    /// The authenticator callers must pass.
    #[serde(default)]
    pub auth: Option<AuthRef>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: DEFAULT_GRPC_MAX_RECV_MSG_SIZE_MIB,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The address the HTTP server listens on.
    #[serde(default = "default_http_endpoint")]
    pub endpoint: String,
    /// Bytes (`20971520`) or with a unit (`20MiB`).
    #[serde(default, deserialize_with = "de_opt_bytes")]
    #[schemars(with = "Option<crate::config::units::ByteSize>")]
    pub max_request_body_size: Option<u64>,
    /// The path metrics are posted to.
    #[serde(default = "default_metrics_path")]
    pub metrics_url_path: String,
    /// The authenticator callers must pass.
    #[serde(default)]
    pub auth: Option<AuthRef>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: default_http_endpoint(),
            max_request_body_size: None,
            metrics_url_path: default_metrics_path(),
            auth: None,
        }
    }
}

impl HttpConfig {
    pub fn body_limit(&self) -> usize {
        self.max_request_body_size
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_HTTP_MAX_REQUEST_BODY_SIZE) as usize
    }
}

// The collector's defaults since v0.104: loopback unless an address is given.
fn default_grpc_endpoint() -> String {
    "localhost:4317".into()
}
fn default_http_endpoint() -> String {
    "localhost:4318".into()
}
fn default_grpc_max() -> u64 {
    DEFAULT_GRPC_MAX_RECV_MSG_SIZE_MIB
}
fn default_metrics_path() -> String {
    "/v1/metrics".into()
}

impl OtlpReceiverConfig {
    /// Checks what can be checked without the rest of the config; `authenticators` are the
    /// ids of the `bearertokenauth` extensions the service enables.
    pub fn validate(&self, authenticators: &[String]) -> Result<(), String> {
        let p = &self.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err(
                "protocols must enable grpc, http or both (for example `protocols: {grpc: {endpoint: 0.0.0.0:4317}}`)"
                    .into(),
            );
        }
        let check_auth = |a: &Option<AuthRef>| {
            match a {
            Some(a) if !authenticators.contains(&a.authenticator) => Err(format!(
                "auth.authenticator {:?} must name a bearertokenauth extension listed in service.extensions",
                a.authenticator
            )),
            _ => Ok(()),
        }
        };
        if let Some(g) = &p.grpc {
            crate::config::parse_listen_address(&g.endpoint)
                .map_err(|e| format!("protocols.grpc.endpoint: {e}"))?;
            if g.max_recv_msg_size_mib == 0 {
                return Err("protocols.grpc.max_recv_msg_size_mib must be above 0".into());
            }
            check_auth(&g.auth).map_err(|e| format!("protocols.grpc.{e}"))?;
        }
        if let Some(h) = &p.http {
            crate::config::parse_listen_address(&h.endpoint)
                .map_err(|e| format!("protocols.http.endpoint: {e}"))?;
            if !h.metrics_url_path.starts_with('/') {
                return Err("protocols.http.metrics_url_path must start with /".into());
            }
            check_auth(&h.auth).map_err(|e| format!("protocols.http.{e}"))?;
        }
        if let (Some(g), Some(h)) = (&p.grpc, &p.http) {
            if crate::config::parse_listen_address(&g.endpoint)
                == crate::config::parse_listen_address(&h.endpoint)
            {
                return Err("protocols.grpc and protocols.http need different endpoints".into());
            }
        }
        Ok(())
    }
}

/// What both transports share.
struct Shared {
    name: String,
    out: Fanout,
    gates: SharedGates,
    telemetry: SharedTelemetry,
    interner: Interner,
    /// Decoded bytes: per request, and in flight across both transports.
    budget: budget::DecodeBudget,
}

/// Why a request was not taken in.
enum Refusal {
    Unauthenticated,
    MemoryLimit,
    TooLarge(String),
    /// What the request would decode to is over the decode budget.
    DecodedTooLarge(String),
    Timeout(String),
    BadRequest(String),
    UnsupportedMediaType(String),
}

impl Refusal {
    /// The `reason` label of `meshmetrics_receiver_refused_requests`.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::MemoryLimit => "memory_limit",
            Refusal::TooLarge(_) => "too_large",
            Refusal::DecodedTooLarge(_) => "decoded_too_large",
            Refusal::Timeout(_) => "timeout",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::UnsupportedMediaType(_) => "unsupported_media_type",
        }
    }
}

impl Shared {
    fn refusing(&self) -> bool {
        self.gates.load().iter().any(|g| !g.open())
    }

    /// Translates and forwards a decoded request; returns the partial success to report.
    async fn accept(
        &self,
        transport: &str,
        req: &ExportMetricsServiceRequest,
    ) -> Option<ExportMetricsPartialSuccess> {
        let t = translate::translate(req, &self.interner);
        // OTLP data points, as the collector counts them (a histogram point is one point
        // here, though it becomes many series samples).
        let accepted = point_count(req).saturating_sub(t.rejected as usize) as f64;
        let receiver = Telemetry::labels(&[("receiver", &self.name), ("transport", transport)]);
        self.telemetry
            .receiver_accepted
            .get_or_create(&receiver)
            .inc_by(accepted);
        if t.rejected > 0 {
            self.telemetry
                .receiver_refused
                .get_or_create(&receiver)
                .inc_by(t.rejected as f64);
            tracing::warn!(receiver = %self.name, rejected = t.rejected, reasons = %t.errors.join("; "), "points refused");
        }
        if !t.metrics.resources.is_empty() {
            self.out.send(t.metrics).await;
        }
        (t.rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: t.rejected as i64,
            error_message: t.errors.join("; "),
        })
    }

    /// Counts a request refused whole (before decoding: its points are not known).
    fn count_refused_request(&self, transport: &str, reason: &str) {
        self.telemetry
            .requests_refused
            .get_or_create(&Telemetry::labels(&[
                ("receiver", &self.name),
                ("transport", transport),
                ("reason", reason),
            ]))
            .inc();
    }
}

fn point_count(req: &ExportMetricsServiceRequest) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

/// A running receiver: its servers and the output a reload can repoint.
pub struct OtlpReceiver {
    servers: Vec<crate::http_server::Served>,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
}

impl OtlpReceiver {
    /// Binds and serves the enabled protocols, with the authenticators they name.
    pub async fn start(cfg: &OtlpReceiverConfig, ctx: ReceiverContext<'_>) -> Result<Self, String> {
        let ReceiverContext {
            name,
            out,
            telemetry,
            gates,
            authenticator: auth,
            ..
        } = ctx;
        // A request may decode to 8 times its size limit (OTLP's structs are larger than
        // their wire form); twice that is decoded at once, the rest waits its turn.
        let largest = [
            cfg.protocols
                .grpc
                .as_ref()
                .map(|g| (g.max_recv_msg_size_mib << 20) as usize),
            cfg.protocols.http.as_ref().map(HttpConfig::body_limit),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(DEFAULT_HTTP_MAX_REQUEST_BODY_SIZE as usize);
        let per_request = largest.saturating_mul(DECODED_SIZE_FACTOR);
        let shared = Arc::new(Shared {
            name: name.clone(),
            out,
            gates,
            telemetry,
            budget: budget::DecodeBudget::new(per_request, per_request.saturating_mul(2)),
            interner: Interner::default(),
        });
        let mut r = OtlpReceiver {
            servers: Vec::new(),
            grpc_addr: None,
            http_addr: None,
        };
        if let Some(g) = &cfg.protocols.grpc {
            let addr = crate::config::parse_listen_address(&g.endpoint)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (grpc): {e}"))?;
            r.grpc_addr = listener.local_addr().ok();
            let auth = match &g.auth {
                Some(a) => Some(auth(&a.authenticator).ok_or("unknown authenticator")?),
                None => None,
            };
            let svc = GrpcService {
                shared: shared.clone(),
                auth,
                max_message: (g.max_recv_msg_size_mib << 20) as usize,
            };
            tracing::info!(receiver = %name, address = ?r.grpc_addr, "OTLP/gRPC listening");
            let router = svc.router();
            r.servers.push(crate::http_server::serve(
                &format!("{name}/grpc"),
                listener,
                router,
                crate::http_server::Limits::default(),
                Some(shared.telemetry.clone()),
            ));
        }
        if let Some(h) = &cfg.protocols.http {
            let addr = crate::config::parse_listen_address(&h.endpoint)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (http): {e}"))?;
            r.http_addr = listener.local_addr().ok();
            let auth = match &h.auth {
                Some(a) => Some(auth(&a.authenticator).ok_or("unknown authenticator")?),
                None => None,
            };
            let limit = h.body_limit();
            let state = Arc::new(HttpState {
                shared: shared.clone(),
                auth,
                limit,
            });
            let router = axum::Router::new()
                .route(&h.metrics_url_path, axum::routing::post(http_export))
                // The handler enforces the limit itself, before and after decompression,
                // and answers in OTLP's error format.
                .layer(axum::extract::DefaultBodyLimit::disable())
                .with_state(state);
            tracing::info!(receiver = %name, address = ?r.http_addr, "OTLP/HTTP listening");
            r.servers.push(crate::http_server::serve(
                &format!("{name}/http"),
                listener,
                router,
                crate::http_server::Limits::default(),
                Some(shared.telemetry.clone()),
            ));
        }
        Ok(r)
    }

    /// Stops accepting requests; requests in flight finish (up to 5 s).
    pub async fn shutdown(self) {
        for served in self.servers {
            served.stop(Duration::from_secs(5)).await;
        }
    }
}

/// OTLP/gRPC's `Export`, decoded here rather than by tonic: the memory limiter and the
/// decode budget are checked on the message's bytes, before they become structs.
#[derive(Clone)]
struct GrpcService {
    shared: Arc<Shared>,
    auth: Option<BearerTokenAuth>,
    max_message: usize,
}

impl GrpcService {
    fn router(self) -> axum::Router {
        axum::Router::new().route(
            EXPORT_PATH,
            axum::routing::post(move |req: axum::extract::Request| {
                let svc = self.clone();
                async move {
                    // The size limit applies to the decompressed message, as tonic's own.
                    let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                        .max_decoding_message_size(svc.max_message);
                    grpc.unary(svc, req).await.map(axum::body::Body::new)
                }
            }),
        )
    }

    async fn export(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if let Some(auth) = &self.auth {
            let values = request
                .metadata()
                .get_all("authorization")
                .iter()
                .map(|v| v.as_bytes());
            if !auth.admits(values) {
                self.shared.count_refused_request("grpc", "unauthenticated");
                return Err(tonic::Status::unauthenticated(
                    "missing or invalid bearer token",
                ));
            }
        }
        if self.shared.refusing() {
            self.shared.count_refused_request("grpc", "memory_limit");
            return Err(tonic::Status::unavailable(
                "memory limit reached: data refused, retry later",
            ));
        }
        let body = request.into_inner();
        // Walking a large body takes a while: not on the workers the scrape loops run on.
        let (body, estimate) = tokio::task::spawn_blocking(move || {
            let estimate = budget::decoded_size(&body);
            (body, estimate)
        })
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let _room = match self.shared.budget.admit(estimate).await {
            Ok(room) => room,
            Err(budget::Denied::TooLarge(n)) => {
                self.shared
                    .count_refused_request("grpc", "decoded_too_large");
                return Err(tonic::Status::resource_exhausted(format!(
                    "request would decode to about {} MiB, over the limit of {} MiB",
                    n >> 20,
                    self.shared.budget.per_request >> 20
                )));
            }
            Err(budget::Denied::Malformed) => {
                self.shared.count_refused_request("grpc", "bad_request");
                return Err(tonic::Status::invalid_argument(
                    "malformed protobuf message",
                ));
            }
        };
        let decoded =
            tokio::task::spawn_blocking(move || ExportMetricsServiceRequest::decode(body))
                .await
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let req = decoded.map_err(|e| {
            self.shared.count_refused_request("grpc", "bad_request");
            tonic::Status::invalid_argument(format!("cannot decode the request: {e}"))
        })?;
        let partial_success = self.shared.accept("grpc", &req).await;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success,
        }))
    }
}

impl tonic::server::UnaryService<Bytes> for GrpcService {
    type Response = ExportMetricsServiceResponse;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>>
                + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move { svc.export(request).await })
    }
}

/// Takes the request message as its bytes and writes the response with prost.
struct RawRequestCodec;

struct BytesDecoder;

impl tonic::codec::Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl tonic::codec::Codec for RawRequestCodec {
    type Encode = ExportMetricsServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportMetricsServiceResponse>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

struct HttpState {
    shared: Arc<Shared>,
    auth: Option<BearerTokenAuth>,
    limit: usize,
}

impl HttpState {
    fn refuse(&self, enc: Encoding, refusal: Refusal) -> Response {
        self.shared.count_refused_request("http", refusal.reason());
        respond_error(enc, refusal)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn respond_error(enc: Encoding, refusal: Refusal) -> Response {
    // gRPC codes in the Status, as the OTLP/HTTP spec asks.
    let (status, code, message) = match refusal {
        Refusal::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            16,
            "missing or invalid bearer token".to_string(),
        ),
        Refusal::MemoryLimit => (
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "memory limit reached: data refused, retry later".to_string(),
        ),
        Refusal::TooLarge(m) | Refusal::DecodedTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, 8, m),
        Refusal::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, 4, m),
        Refusal::BadRequest(m) => (StatusCode::BAD_REQUEST, 3, m),
        Refusal::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, m),
    };
    // OTLP/HTTP error bodies are a `google.rpc.Status`.
    let s = crate::google_rpc::Status {
        code,
        message,
        details: Vec::new(),
    };
    let mut resp = match enc {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            s.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": s.code, "message": s.message}).to_string(),
        )
            .into_response(),
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// Inflates `body` per `Content-Encoding`, never past `limit` bytes.
fn decompress(encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let too_large = || {
        Refusal::TooLarge(format!(
            "request body exceeds {limit} bytes after decompression"
        ))
    };
    let read_limited = |r: Box<dyn Read + '_>| -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        r.take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Refusal::BadRequest(format!("cannot decompress the body: {e}")))?;
        if out.len() > limit {
            return Err(too_large());
        }
        Ok(out)
    };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => read_limited(Box::new(flate2::read::MultiGzDecoder::new(body))),
        "deflate" => read_limited(Box::new(flate2::read::ZlibDecoder::new(body))),
        "zstd" => {
            let d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| Refusal::BadRequest(format!("cannot decompress the body: {e}")))?;
            read_limited(Box::new(d))
        }
        other => Err(Refusal::UnsupportedMediaType(format!(
            "unsupported Content-Encoding {other:?} (gzip, zstd, deflate or none)"
        ))),
    }
}

/// Reads a body of at most `limit` bytes within [`BODY_TIMEOUT`]. Past the limit the rest
/// is read and thrown away (bounded in bytes and time), so that a client still sending gets
/// the 413 rather than a reset connection.
async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<Bytes, Refusal> {
    use http_body_util::BodyExt;
    const DRAIN_BYTES: usize = 64 << 20;
    const DRAIN_TIME: Duration = Duration::from_secs(5);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let mut deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                return Err(Refusal::BadRequest(format!("cannot read the body: {e}")))
            }
            Ok(None) => break,
            Err(_) if seen > limit => break,
            Err(_) => {
                return Err(Refusal::Timeout(format!(
                    "body not received within {}s",
                    BODY_TIMEOUT.as_secs()
                )))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let was_within = seen <= limit;
        seen += data.len();
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if was_within {
            buf = bytes::BytesMut::new();
            deadline = deadline.min(tokio::time::Instant::now() + DRAIN_TIME);
        } else if seen > limit + DRAIN_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(Refusal::TooLarge(format!(
            "request body exceeds {limit} bytes"
        )));
    }
    Ok(buf.freeze())
}

async fn http_export(
    State(st): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let enc = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return st.refuse(
                Encoding::Json,
                Refusal::UnsupportedMediaType(format!(
                "unsupported Content-Type {other:?} (application/x-protobuf or application/json)"
            )),
            )
        }
    };
    if let Some(auth) = &st.auth {
        let values = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        if !auth.admits(values) {
            return st.refuse(enc, Refusal::Unauthenticated);
        }
    }
    if st.shared.refusing() {
        // Refused before the body is read: nothing to count but the request.
        return st.refuse(enc, Refusal::MemoryLimit);
    }
    let body = match read_body(body, st.limit).await {
        Ok(b) => b,
        Err(r) => return st.refuse(enc, r),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Inflating and sizing a large body take a while: not on the workers the scrape loops
    // run on. What the body decodes to must fit the budget, and waits for room among the
    // requests being decoded. JSON: every object may become a message.
    let limit = st.limit;
    let encoding = encoding.to_string();
    let sized = tokio::task::spawn_blocking(move || {
        let raw = decompress(&encoding, &body, limit)?;
        let estimate = match enc {
            Encoding::Protobuf => budget::decoded_size(&raw),
            Encoding::Json => Some(
                memchr::memchr_iter(b'{', &raw)
                    .count()
                    .saturating_mul(budget::MESSAGE_COST)
                    .saturating_add(raw.len()),
            ),
        };
        Ok((raw, estimate))
    })
    .await;
    let (raw, estimate) = match sized {
        Ok(Ok(r)) => r,
        Ok(Err(r)) => return st.refuse(enc, r),
        Err(e) => return st.refuse(enc, Refusal::BadRequest(format!("decoding failed: {e}"))),
    };
    let room = st.shared.budget.admit(estimate).await;
    let _room = match room {
        Ok(room) => room,
        Err(budget::Denied::TooLarge(n)) => {
            return st.refuse(
                enc,
                Refusal::DecodedTooLarge(format!(
                    "request would decode to about {} MiB, over the limit of {} MiB",
                    n >> 20,
                    st.shared.budget.per_request >> 20
                )),
            )
        }
        Err(budget::Denied::Malformed) => {
            return st.refuse(
                enc,
                Refusal::BadRequest("cannot decode the protobuf body: malformed".into()),
            )
        }
    };
    let req = tokio::task::spawn_blocking(move || match enc {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(raw.as_slice())
            .map_err(|e| format!("cannot decode the protobuf body: {e}")),
        Encoding::Json => serde_json::from_slice::<ExportMetricsServiceRequest>(&raw)
            .map_err(|e| format!("cannot decode the JSON body: {e}")),
    })
    .await;
    let req = match req {
        Ok(Ok(r)) => r,
        Ok(Err(m)) => return st.refuse(enc, Refusal::BadRequest(m)),
        Err(e) => return st.refuse(enc, Refusal::BadRequest(format!("decoding failed: {e}"))),
    };
    let partial_success = st.shared.accept("http", &req).await;
    let resp = ExportMetricsServiceResponse { partial_success };
    match enc {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            resp.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into()),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_forms() {
        let c: OtlpReceiverConfig =
            serde_saphyr::from_str("protocols:\n  grpc:\n  http:\n").expect("parses");
        assert_eq!(c.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(c.protocols.http, Some(HttpConfig::default()));
        assert!(c.validate(&[]).is_ok());
        let none: OtlpReceiverConfig = serde_saphyr::from_str("protocols: {}\n").expect("parses");
        assert!(none.validate(&[]).is_err());
        let auth: OtlpReceiverConfig = serde_saphyr::from_str(
            "protocols:\n  grpc: {endpoint: 0.0.0.0:4317, auth: {authenticator: bearertokenauth}}\n",
        )
        .expect("parses");
        assert!(auth.validate(&[]).is_err());
        assert!(auth.validate(&["bearertokenauth".into()]).is_ok());
    }

    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let zeros = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).expect("gzip");
        let bomb = gz.finish().expect("gzip");
        assert!(bomb.len() < 10_000);
        assert!(matches!(
            decompress("gzip", &bomb, 1 << 16),
            Err(Refusal::TooLarge(_))
        ));
        assert_eq!(
            decompress("gzip", &bomb, 1 << 20).map(|v| v.len()).ok(),
            Some(1 << 20)
        );
        let z = zstd::encode_all(&zeros[..], 3).expect("zstd");
        assert!(matches!(
            decompress("zstd", &z, 1000),
            Err(Refusal::TooLarge(_))
        ));
        assert!(matches!(
            decompress("br", &z, 1000),
            Err(Refusal::UnsupportedMediaType(_))
        ));
    }
}
