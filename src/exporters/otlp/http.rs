//! OTLP over HTTP: protobuf or JSON bodies, gzip/zstd, TLS through rustls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use std::io::Write;
use std::time::Duration;

use super::{parse_retry_after, Batch, Compression, OtlpExporterConfig, SendError, Transport};

/// Most bytes of a response body read.
const ERROR_BODY_LIMIT: usize = 64 << 10;

pub struct HttpTransport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    compression: Compression,
    json: bool,
    timeout: Duration,
    /// One zstd context for every request: a new one per request allocated (and the kernel
    /// zeroed) its tables each time.
    zstd: std::sync::Mutex<Option<zstd::bulk::Compressor<'static>>>,
}

/// The HTTP client of an exporter: HTTP/1 and 2, TLS by `tls` (rustls).
pub fn client(
    tls: &crate::config::tls::TlsClientConfig,
) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let tls = tls.rustls_config()?;
    let mut conn = HttpConnector::new();
    conn.enforce_http(false);
    conn.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(conn);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// Configured headers as request headers, their values marked sensitive (never printed).
pub fn header_values(
    headers: &std::collections::BTreeMap<String, crate::config::secret::Secret>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    let mut out = Vec::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header name {k:?}"))?;
        let mut value = http::HeaderValue::from_str(v.expose())
            .map_err(|_| format!("header {k:?} has a value that is not valid in a header"))?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

/// Sends `req` within `timeout`: the status, the server's retry hint and the first KiB of
/// the body; a timeout or a connection failure is retryable.
pub async fn post(
    client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(u16, Option<Duration>, String), SendError> {
    let resp = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => {
            return Err(SendError::Retryable {
                cause: format!("timeout after {timeout:?}"),
                retry_after: None,
            })
        }
        Ok(Err(e)) => {
            return Err(SendError::Retryable {
                cause: format!("connection: {e}"),
                retry_after: None,
            })
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let detail = read_error_body(resp.into_body(), timeout).await;
    Ok((status, retry_after, detail))
}

/// The first KiB of a response body, for the log and exporterz: a server answering with an
/// endless or huge body costs at most `ERROR_BODY_LIMIT` bytes read, and the timeout.
pub async fn read_error_body(body: hyper::body::Incoming, timeout: Duration) -> String {
    let limited = http_body_util::Limited::new(body, ERROR_BODY_LIMIT);
    let body = match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => Bytes::new(),
    };
    String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned()
}

impl HttpTransport {
    pub fn new(cfg: &OtlpExporterConfig) -> Result<Self, String> {
        let url = match &cfg.metrics_endpoint {
            Some(u) => u.clone(),
            None => format!("{}/v1/metrics", cfg.endpoint.trim_end_matches('/')),
        };
        let url: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid endpoint {url:?}: {e}"))?;
        if !matches!(url.scheme_str(), Some("http") | Some("https")) {
            return Err(format!(
                "endpoint {url} must start with http:// or https://"
            ));
        }
        let client = client(&cfg.tls)?;
        let headers = header_values(&cfg.headers)?;
        Ok(HttpTransport {
            client,
            url,
            headers,
            compression: cfg.compression(),
            json: cfg.encoding.as_deref() == Some("json"),
            timeout: cfg.timeout.unwrap_or(Duration::from_secs(30)),
            zstd: std::sync::Mutex::new(None),
        })
    }

    fn body(&self, batch: &Batch) -> Result<Bytes, String> {
        // Protobuf bodies are the queued bytes themselves, not a copy.
        let raw = if self.json {
            let request = ExportMetricsServiceRequest::decode(batch.request.clone())
                .map_err(|e| e.to_string())?;
            Bytes::from(serde_json::to_vec(&request).map_err(|e| e.to_string())?)
        } else {
            batch.request.clone()
        };
        match self.compression {
            Compression::None => Ok(raw),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 4),
                    flate2::Compression::fast(),
                );
                enc.write_all(&raw).map_err(|e| e.to_string())?;
                enc.finish().map(Bytes::from).map_err(|e| e.to_string())
            }
            Compression::Zstd => {
                let compressed = match self.zstd.lock() {
                    Ok(mut slot) => {
                        let compressor = match slot.as_mut() {
                            Some(c) => c,
                            None => slot
                                .insert(zstd::bulk::Compressor::new(1).map_err(|e| e.to_string())?),
                        };
                        compressor.compress(&raw)
                    }
                    // A panic elsewhere while compressing: a context of its own.
                    Err(_) => zstd::bulk::compress(&raw, 1),
                };
                compressed.map(Bytes::from).map_err(|e| e.to_string())
            }
        }
    }
}

/// Status codes the OTLP/HTTP spec says to retry.
fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        let body = self.body(batch).map_err(|e| SendError::Permanent {
            cause: "encoding".into(),
            detail: e,
        })?;
        let mut req = http::Request::post(self.url.clone())
            .header(
                http::header::CONTENT_TYPE,
                if self.json {
                    "application/json"
                } else {
                    "application/x-protobuf"
                },
            )
            .header(
                http::header::USER_AGENT,
                concat!("meshmetrics/", env!("CARGO_PKG_VERSION")),
            );
        match self.compression {
            Compression::Gzip => req = req.header(http::header::CONTENT_ENCODING, "gzip"),
            Compression::Zstd => req = req.header(http::header::CONTENT_ENCODING, "zstd"),
            Compression::None => {}
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| SendError::Permanent {
                cause: "request".into(),
                detail: e.to_string(),
            })?;
        let (status, retry_after, detail) = post(&self.client, req, self.timeout).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let cause = format!("HTTP {status}");
        if retryable(status) {
            Err(SendError::Retryable { cause, retry_after })
        } else {
            Err(SendError::Permanent { cause, detail })
        }
    }
}
