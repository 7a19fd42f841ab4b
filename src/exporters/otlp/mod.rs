//! The `otlp` (gRPC) and `otlphttp` exporters: config, sending queue, retry with backoff,
//! and the two transports. Data is encoded to OTLP once, when it is queued.

pub mod disk_queue;
pub mod encode;
pub mod grpc;
pub mod http;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::config::secret::Secret;
use crate::config::tls::TlsClientConfig;
use crate::config::units::{de_duration, de_opt_duration};
use crate::model::Metrics;
use crate::telemetry::{SharedTelemetry, Telemetry};

/// Settings shared by `otlp` and `otlphttp` (collector names and defaults).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// gRPC: `host:port` (TLS unless `tls.insecure`), or an `http(s)://` URL.
    /// HTTP: base URL; `/v1/metrics` is appended.
    #[serde(default)]
    pub endpoint: String,
    /// HTTP only: the full metrics URL, used as is.
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// Extra request headers (`x-honeycomb-team`, `x-honeycomb-dataset`, ...). Values are
    /// treated as secrets and never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: Option<String>,
    /// HTTP only: `proto` (default) or `json`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Per-request timeout: gRPC 5s, HTTP 30s by default.
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub timeout: Option<Duration>,
    /// TLS settings for the backend.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// Retries of failed sends, with exponential backoff.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// The queue of batches waiting to be sent, in memory or on disk.
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Whether failed sends are retried.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The wait before the first retry.
    #[serde(default = "d5s", deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub initial_interval: Duration,
    /// The longest wait between retries.
    #[serde(default = "d30s", deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub max_interval: Duration,
    /// Give up on a batch after this long; 0 retries forever.
    #[serde(default = "d300s", deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub max_elapsed_time: Duration,
    /// How much each wait grows.
    #[serde(default = "m15")]
    pub multiplier: f64,
    /// The jitter applied to each wait (0.5: ±50 %).
    #[serde(default = "r05")]
    pub randomization_factor: f64,
}

fn yes() -> bool {
    true
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d300s() -> Duration {
    Duration::from_secs(300)
}
fn m15() -> f64 {
    1.5
}
fn r05() -> f64 {
    0.5
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: d5s(),
            max_interval: d30s(),
            max_elapsed_time: d300s(),
            multiplier: m15(),
            randomization_factor: r05(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Whether batches queue; without it a send that fails is dropped after its retries.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How many batches are sent at once.
    #[serde(default = "ten")]
    pub num_consumers: usize,
    /// Capacity in batches. When full, the incoming batch is refused and counted in
    /// `otelcol_exporter_enqueue_failed_metric_points`.
    #[serde(default = "thousand")]
    pub queue_size: usize,
    /// A `file_storage` extension id: keep the queue on disk (see `disk_queue.rs`).
    #[serde(default)]
    pub storage: Option<String>,
}

fn ten() -> usize {
    10
}
fn thousand() -> usize {
    1000
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            storage: None,
        }
    }
}

/// Wire compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl OtlpExporterConfig {
    /// Starts the exporter: OTLP/gRPC (`otlp`), or OTLP/HTTP (`otlphttp`) when `http`.
    pub fn start(
        &self,
        ctx: super::ExporterContext,
        input: super::Input,
        http: bool,
    ) -> Result<super::StartedExporter, String> {
        let transport: Arc<dyn Transport> = if http {
            Arc::new(http::HttpTransport::new(self)?)
        } else {
            Arc::new(grpc::GrpcTransport::new(self)?)
        };
        Ok(super::StartedExporter::task(tokio::spawn(run(
            ctx.name,
            Delivery::otlp(self),
            transport,
            input,
            ctx.telemetry,
            ctx.storage,
        ))))
    }

    pub fn compression(&self) -> Compression {
        match self.compression.as_deref() {
            Some("none") | Some("") => Compression::None,
            Some("zstd") => Compression::Zstd,
            _ => Compression::Gzip,
        }
    }

    pub fn validate(&self, http: bool) -> Result<(), String> {
        if self.endpoint.is_empty() && self.metrics_endpoint.is_none() {
            return Err("endpoint must be set".into());
        }
        match self.compression.as_deref() {
            None | Some("gzip") | Some("zstd") | Some("none") | Some("") => {}
            Some(c) => {
                return Err(format!(
                    "compression {c:?} is not supported (gzip, zstd, none)"
                ))
            }
        }
        if !http && (self.encoding.is_some() || self.metrics_endpoint.is_some()) {
            return Err("encoding and metrics_endpoint apply to otlphttp only".into());
        }
        if let Some(e) = self.encoding.as_deref() {
            if e != "proto" && e != "json" {
                return Err(format!("encoding {e:?} is not supported (proto, json)"));
            }
        }
        for (k, v) in &self.headers {
            if v.is_empty() {
                return Err(format!(
                    "header {k:?} has an empty value (an unset environment variable?)"
                ));
            }
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(format!("invalid header name {k:?}"));
            }
        }
        if self.sending_queue.enabled
            && (self.sending_queue.queue_size == 0 || self.sending_queue.num_consumers == 0)
        {
            return Err("sending_queue.queue_size and num_consumers must be above 0".into());
        }
        if self.retry_on_failure.multiplier < 1.0 {
            return Err("retry_on_failure.multiplier must be at least 1".into());
        }
        if self.tls.insecure && self.tls.ca_file.is_some() {
            return Err("tls.insecure and tls.ca_file are exclusive".into());
        }
        Ok(())
    }
}

/// The outcome of one send attempt.
#[derive(Debug)]
pub enum SendError {
    /// Will never succeed (bad key, bad data): drop the batch.
    Permanent { cause: String, detail: String },
    /// Throttled or unavailable: try again, after `retry_after` when the server said so.
    Retryable {
        cause: String,
        retry_after: Option<Duration>,
    },
}

/// A queued batch: encoded once, retried as is.
#[derive(Debug)]
pub struct Batch {
    /// The protobuf bytes of one `ExportMetricsServiceRequest`.
    pub request: bytes::Bytes,
    pub points: usize,
}

/// The size of the last request encoded: the next one is usually about as large, and
/// allocating that at once saves growing the buffer (and faulting its pages in) step by step.
static LAST_REQUEST_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Batch {
    pub fn encode(m: &Metrics) -> Batch {
        use std::sync::atomic::Ordering::Relaxed;
        let mut request = Vec::with_capacity(LAST_REQUEST_BYTES.load(Relaxed));
        encode::encode_to(m, &mut request);
        LAST_REQUEST_BYTES.store(request.len(), Relaxed);
        // A small batch after a large one (another pipeline's, or a queue's backlog) gives
        // the rest back: a queued batch must not hold more than its bytes.
        if request.capacity() - request.len() > request.len() / 8 {
            request.shrink_to_fit();
        }
        Batch {
            request: request.into(),
            points: m.point_count(),
        }
    }
}

/// One transport.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, batch: &Batch) -> Result<(), SendError>;
}

/// The "dropping data" error, at most once a minute per exporter, with the points dropped
/// since it was last written: a backend refusing every batch (a wrong key) says so without
/// drowning the log, and the count says how much was lost.
#[derive(Default)]
struct DropLog(Mutex<(Option<std::time::Instant>, u64)>);

const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

impl DropLog {
    fn dropped(&self, exporter: &str, cause: &str, detail: &str, points: usize) {
        let Ok(mut guard) = self.0.lock() else {
            return;
        };
        let (last, pending) = &mut *guard;
        *pending += points as u64;
        if last.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            tracing::error!(
                exporter,
                cause,
                response = detail,
                points_dropped = *pending,
                "export failed; dropping data (this error repeats at most once a minute, with the points dropped since)"
            );
            *last = Some(std::time::Instant::now());
            *pending = 0;
        } else {
            tracing::debug!(exporter, cause, points, "export failed; dropping data");
        }
    }
}

/// Backoff schedule with jitter, as the collector's exponential backoff.
pub fn next_backoff(cfg: &RetryConfig, current: Duration) -> Duration {
    let next = current.as_secs_f64() * cfg.multiplier;
    Duration::from_secs_f64(next.min(cfg.max_interval.as_secs_f64()))
}

fn jitter(cfg: &RetryConfig, d: Duration) -> Duration {
    let r = cfg.randomization_factor.clamp(0.0, 1.0);
    if r == 0.0 {
        return d;
    }
    let f = 1.0 + r * (2.0 * rand::random::<f64>() - 1.0);
    Duration::from_secs_f64(d.as_secs_f64() * f)
}

/// How one batch's delivery ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// The backend refused it for good.
    Refused,
    /// Still failing when the retry budget ran out.
    GaveUp,
}

/// Sends one batch, retrying as configured. With `keep` (a persistent queue), running out of
/// retries is not counted as a loss: the caller puts the batch back. A delivery by any
/// consumer wakes the others from their backoff (`recovered`): after an outage the backlog
/// drains at once instead of after the longest backoff.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    name: &str,
    transport: &dyn Transport,
    retry: &RetryConfig,
    batch: &Batch,
    log: &DropLog,
    telemetry: &Telemetry,
    keep: bool,
    recovered: &tokio::sync::Notify,
) -> Outcome {
    let status = &telemetry.exporter_status;
    let labels = Telemetry::labels(&[("exporter", name)]);
    let started = tokio::time::Instant::now();
    let mut backoff = retry.initial_interval;
    loop {
        match transport.send(batch).await {
            Ok(()) => {
                telemetry
                    .exporter_sent
                    .get_or_create(&labels)
                    .inc_by(batch.points as f64);
                status.update(name, |s| {
                    s.last_success_unix_ms = Some(crate::clock::now_ms());
                    s.points_sent += batch.points as u64;
                });
                recovered.notify_waiters();
                return Outcome::Delivered;
            }
            Err(SendError::Permanent { cause, detail }) => {
                status.failed(name, &cause, Some(&detail));
                status.update(name, |s| s.points_refused += batch.points as u64);
                log.dropped(name, &cause, &detail, batch.points);
                telemetry
                    .exporter_send_failed
                    .get_or_create(&labels)
                    .inc_by(batch.points as f64);
                return Outcome::Refused;
            }
            Err(SendError::Retryable { cause, retry_after }) => {
                status.failed(name, &cause, None);
                let wait = retry_wait(retry_after, || jitter(retry, backoff));
                let elapsed = started.elapsed();
                let out_of_time = !retry.max_elapsed_time.is_zero()
                    && elapsed.saturating_add(wait) > retry.max_elapsed_time;
                if keep && (!retry.enabled || out_of_time) {
                    tracing::warn!(
                        exporter = name,
                        cause,
                        points = batch.points,
                        "export still failing after retries; the batch stays in the persistent queue"
                    );
                    return Outcome::GaveUp;
                }
                if !retry.enabled || out_of_time {
                    log.dropped(name, &cause, "(retries exhausted)", batch.points);
                    status.update(name, |s| s.points_dropped += batch.points as u64);
                    telemetry
                        .exporter_send_failed
                        .get_or_create(&labels)
                        .inc_by(batch.points as f64);
                    return Outcome::GaveUp;
                }
                status.update(name, |s| s.retries += 1);
                tracing::info!(exporter = name, cause, retry_in = ?wait, "export failed; will retry");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = recovered.notified() => {}
                }
                backoff = next_backoff(retry, backoff);
            }
        }
    }
}

/// How an exporter turns pipeline data into the bytes its transport sends.
pub type BatchEncoder = Arc<dyn Fn(&Metrics) -> Batch + Send + Sync>;

/// An exporter's delivery settings: its queue and retries, and how batches are encoded (OTLP
/// by default; the remote write exporter brings its own).
pub struct Delivery {
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    pub encode: BatchEncoder,
}

impl Delivery {
    /// An OTLP exporter's.
    pub fn otlp(cfg: &OtlpExporterConfig) -> Delivery {
        Delivery {
            queue: cfg.sending_queue.clone(),
            retry: cfg.retry_on_failure.clone(),
            encode: Arc::new(Batch::encode),
        }
    }
}

/// Runs an exporter: encodes what arrives, queues it, and sends with `num_consumers`
/// concurrent workers. Returns when the input is closed and the queue drained.
pub async fn run(
    name: String,
    delivery: Delivery,
    transport: Arc<dyn Transport>,
    mut input: mpsc::Receiver<Metrics>,
    telemetry: SharedTelemetry,
    storage: Option<Storage>,
) {
    let Delivery {
        queue: queue_cfg,
        retry: retry_cfg,
        encode,
    } = delivery;
    let labels = Telemetry::labels(&[("exporter", &name)]);
    let log = Arc::new(DropLog::default());
    let recovered = Arc::new(tokio::sync::Notify::new());
    if !queue_cfg.enabled {
        while let Some(m) = input.recv().await {
            let batch = encode(&m);
            deliver(
                &name,
                transport.as_ref(),
                &retry_cfg,
                &batch,
                &log,
                &telemetry,
                false,
                &recovered,
            )
            .await;
        }
        return;
    }
    let cap = queue_cfg.queue_size;
    let queue = match storage {
        None => disk_queue::DiskQueue::in_memory(cap),
        Some(st) => match disk_queue::DiskQueue::open(&st.dir, st.fsync, st.max_bytes, cap) {
            Ok((q, replayed)) => {
                if replayed.batches > 0 || replayed.dropped_bytes > 0 {
                    tracing::info!(exporter = %name, batches = replayed.batches, points = replayed.points, torn_bytes = replayed.dropped_bytes, "persistent queue: resending what an earlier run left");
                }
                q
            }
            Err(e) => {
                // Without its directory the exporter still works, from memory, and says so.
                tracing::error!(exporter = %name, error = %e, "persistent queue unavailable; queueing in memory");
                disk_queue::DiskQueue::in_memory(cap)
            }
        },
    };
    let queue = Arc::new(queue);
    telemetry
        .exporter_queue_capacity
        .get_or_create(&labels)
        .set(cap as i64);
    let gauge = {
        let telemetry = telemetry.clone();
        let labels = labels.clone();
        let name = name.clone();
        move |q: &disk_queue::DiskQueue| {
            telemetry
                .exporter_queue_size
                .get_or_create(&labels)
                .set(q.len() as i64);
            telemetry
                .exporter_queue_disk_bytes
                .get_or_create(&labels)
                .set(q.disk_bytes() as i64);
            telemetry.exporter_status.update(&name, |s| {
                s.queue_batches = q.len();
                s.queue_bytes_on_disk = q.disk_bytes();
            });
        }
    };
    gauge(&queue);
    // The oldest batch's age, once a second: a walk of the queue, too dear for every push.
    let age_gauge = {
        let (queue, telemetry, labels) = (queue.clone(), telemetry.clone(), labels.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let age = queue
                    .oldest_queued_ms()
                    .map_or(0.0, |t| (crate::clock::now_ms() - t).max(0) as f64 / 1000.0);
                telemetry
                    .exporter_queue_oldest_age
                    .get_or_create(&labels)
                    .set(age);
            }
        })
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..queue_cfg.num_consumers {
        let queue = queue.clone();
        let transport = transport.clone();
        let retry = retry_cfg.clone();
        let log = log.clone();
        let telemetry = telemetry.clone();
        let name = name.clone();
        let gauge = gauge.clone();
        let recovered = recovered.clone();
        workers.spawn(async move {
            // On disk, a batch that outlived its retry budget goes back in line; in memory it
            // is dropped (and counted by `deliver`).
            let keep = queue.on_disk();
            while let Some((item, batch)) = queue.pop().await {
                gauge(&queue);
                let outcome = deliver(
                    &name,
                    transport.as_ref(),
                    &retry,
                    &batch,
                    &log,
                    &telemetry,
                    keep,
                    &recovered,
                )
                .await;
                if keep && outcome == Outcome::GaveUp {
                    tokio::time::sleep(retry.initial_interval).await;
                    queue.requeue(item, batch);
                } else {
                    queue.ack(item);
                }
                gauge(&queue);
            }
        });
    }
    // Refusals are logged once per episode, which ends when the queue has drained; all are
    // counted.
    let mut refusing = false;
    while let Some(m) = input.recv().await {
        let points = m.point_count();
        if points == 0 {
            continue;
        }
        let batch = encode(&m);
        match queue.push(batch) {
            Ok(_) if refusing && queue.len() <= 1 => {
                refusing = false;
                tracing::info!(exporter = %name, "sending queue has drained; taking batches again");
            }
            Ok(_) => {}
            Err(_) => {
                if !refusing {
                    refusing = true;
                    tracing::warn!(exporter = %name, points, "sending queue is full; refusing new batches until it drains (counted in otelcol_exporter_enqueue_failed_metric_points)");
                }
                telemetry
                    .exporter_enqueue_failed
                    .get_or_create(&labels)
                    .inc_by(points as f64);
            }
        }
        gauge(&queue);
    }
    queue.close();
    while workers.join_next().await.is_some() {}
    age_gauge.abort();
}

/// Where and how an exporter keeps its queue on disk (from its `file_storage` extension).
#[derive(Debug, Clone)]
pub struct Storage {
    pub dir: std::path::PathBuf,
    pub fsync: bool,
    pub max_bytes: u64,
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
/// The longest a server's `Retry-After` (or gRPC `RetryInfo`) may hold a consumer: a reply
/// asking for a year would otherwise stall it, and with it a share of the queue.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait before the next attempt: the server's hint, capped, or the backoff.
pub fn retry_wait(hint: Option<Duration>, backoff: impl FnOnce() -> Duration) -> Duration {
    hint.map_or_else(backoff, |h| h.min(MAX_RETRY_AFTER))
}

pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hints_cannot_stall_a_consumer() {
        for hint in [
            "99999999999999999999",
            "18446744073709551615",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let parsed = parse_retry_after(hint);
            let wait = retry_wait(parsed, || Duration::from_secs(1));
            assert!(wait <= MAX_RETRY_AFTER, "{hint}: {wait:?}");
        }
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            retry_wait(None, || Duration::from_millis(7)),
            Duration::from_millis(7)
        );
        assert_eq!(
            retry_wait(Some(Duration::from_secs(2)), || Duration::ZERO),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn defaults_are_the_collectors() {
        let c: OtlpExporterConfig = serde_saphyr::from_str("endpoint: x:4317\n").expect("parses");
        assert_eq!(c.retry_on_failure, RetryConfig::default());
        assert_eq!(c.sending_queue, QueueConfig::default());
        assert_eq!(c.compression(), Compression::Gzip);
        assert_eq!(
            next_backoff(&c.retry_on_failure, Duration::from_secs(5)),
            Duration::from_millis(7500)
        );
        assert_eq!(
            next_backoff(&c.retry_on_failure, Duration::from_secs(25)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn header_values_never_print() {
        let c: OtlpExporterConfig =
            serde_saphyr::from_str("endpoint: x:4317\nheaders: {x-honeycomb-team: hcaik_SECRET}\n")
                .expect("parses");
        assert!(!format!("{c:?}").contains("hcaik_SECRET"));
    }
}
