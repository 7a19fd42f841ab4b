//! OTLP over gRPC (tonic), with gzip or zstd and TLS through rustls.

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::{Batch, Compression, OtlpExporterConfig, SendError, Transport};
use crate::google_rpc::{RetryInfo, Status as RpcStatus};

fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use prost::Message;
    let s = RpcStatus::decode(status.details()).ok()?;
    for d in s.details {
        if d.type_url.ends_with("google.rpc.RetryInfo") {
            let ri = RetryInfo::decode(d.value.as_slice()).ok()?;
            let pd = ri.retry_delay?;
            return Some(Duration::new(
                pd.seconds.max(0) as u64,
                pd.nanos.max(0) as u32,
            ));
        }
    }
    None
}

/// Sends requests already encoded (`Batch::request`) and decodes the response with prost:
/// the generated client would want the request as a struct.
struct PreEncodedCodec;

struct PreEncodedEncoder;

impl tonic::codec::Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = PreEncodedEncoder;
    type Decoder = tonic_prost::ProstDecoder<ExportMetricsServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

pub struct GrpcTransport {
    /// Swapped for a new connection after a request timed out (see `send`).
    client: arc_swap::ArcSwap<tonic::client::Grpc<Channel>>,
    endpoint: Endpoint,
    connector: Connector,
    compression: Compression,
    headers: MetadataMap,
    timeout: Duration,
}

/// A client on a new lazily connected HTTP/2 channel.
fn new_client(
    endpoint: &Endpoint,
    connector: &Connector,
    compression: Compression,
) -> tonic::client::Grpc<Channel> {
    let channel = endpoint.connect_with_connector_lazy(connector.clone());
    let client = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(usize::MAX);
    match compression {
        Compression::Gzip => client.send_compressed(CompressionEncoding::Gzip),
        Compression::Zstd => client.send_compressed(CompressionEncoding::Zstd),
        Compression::None => client,
    }
}

impl GrpcTransport {
    pub fn new(cfg: &OtlpExporterConfig) -> Result<Self, String> {
        let ep = cfg.endpoint.trim();
        let (uri, tls) = if let Some(rest) = ep.strip_prefix("http://") {
            (format!("http://{rest}"), false)
        } else if let Some(rest) = ep.strip_prefix("https://") {
            (format!("https://{rest}"), true)
        } else if cfg.tls.insecure {
            (format!("http://{ep}"), false)
        } else {
            (format!("https://{ep}"), true)
        };
        let timeout = cfg.timeout.unwrap_or(Duration::from_secs(5));
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("invalid endpoint {uri:?}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        let tls_cfg = cfg.tls.rustls_config()?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = if tls {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_cfg)
                .https_only()
                .enable_http2()
                .wrap_connector(http)
        } else {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_cfg)
                .https_or_http()
                .enable_http2()
                .wrap_connector(http)
        };
        let client = new_client(&endpoint, &connector, cfg.compression());
        let mut headers = MetadataMap::new();
        for (k, v) in &cfg.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
            let val = MetadataValue::try_from(v.expose())
                .map_err(|_| format!("header {k:?} has a value that is not valid in a header"))?;
            headers.insert(key, val);
        }
        Ok(GrpcTransport {
            client: arc_swap::ArcSwap::from_pointee(client),
            endpoint,
            connector,
            compression: cfg.compression(),
            headers,
            timeout,
        })
    }
}

/// gRPC codes the OTLP spec says to retry.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::OutOfRange
            | tonic::Code::DataLoss
    )
}

#[async_trait::async_trait]
impl Transport for GrpcTransport {
    async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        let mut req = tonic::Request::new(batch.request.clone());
        *req.metadata_mut() = self.headers.clone();
        req.set_timeout(self.timeout);
        req.extensions_mut().insert(tonic::GrpcMethod::new(
            "opentelemetry.proto.collector.metrics.v1.MetricsService",
            "Export",
        ));
        let mut client = tonic::client::Grpc::clone(&self.client.load());
        let started = tokio::time::Instant::now();
        let sent = match client.ready().await {
            Ok(()) => {
                client
                    .unary(
                        req,
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        PreEncodedCodec,
                    )
                    .await
            }
            Err(e) => Err(tonic::Status::unavailable(format!(
                "channel not ready: {e}"
            ))),
        };
        if sent.is_err() && started.elapsed() >= self.timeout {
            // All requests share one HTTP/2 connection, and one that a dead link or a silent
            // backend left open would hold every later request until its timeout as well:
            // the next request opens a new one.
            self.client.store(std::sync::Arc::new(new_client(
                &self.endpoint,
                &self.connector,
                self.compression,
            )));
        }
        match sent {
            Ok(resp) => {
                if let Some(ps) = &resp.get_ref().partial_success {
                    if ps.rejected_data_points > 0 {
                        tracing::warn!(rejected = ps.rejected_data_points, message = %ps.error_message, "backend rejected part of a batch");
                    }
                }
                Ok(())
            }
            Err(status) => {
                let cause = format!("gRPC {:?}", status.code());
                if retryable(status.code()) {
                    Err(SendError::Retryable {
                        cause: format!("{cause}: {}", status.message()),
                        retry_after: retry_delay(&status),
                    })
                } else {
                    Err(SendError::Permanent {
                        detail: status.message().to_string(),
                        cause,
                    })
                }
            }
        }
    }
}
