//! The agent's own metrics under the collector's `otelcol_*` names, served in Prometheus text
//! format on `service.telemetry.metrics` (default `:8888/metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

type Labels = Vec<(String, String)>;
type CounterF = Family<Labels, Counter<f64, AtomicU64>>;
type GaugeF = Family<Labels, Gauge<i64>>;
type HistogramF = Family<Labels, Histogram, fn() -> Histogram>;

/// Query latency buckets (seconds): Flagger's checks take milliseconds; its client gives up
/// at 5 s.
fn query_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

/// All self metrics. Cheap to share: everything inside is atomic.
pub struct Telemetry {
    registry: Registry,
    started: Instant,
    pub receiver_accepted: CounterF,
    pub receiver_refused: CounterF,
    pub exporter_sent: CounterF,
    pub exporter_send_failed: CounterF,
    pub exporter_enqueue_failed: CounterF,
    pub exporter_queue_size: GaugeF,
    pub exporter_queue_capacity: GaugeF,
    /// Bytes a persistent sending queue holds on disk.
    pub exporter_queue_disk_bytes: GaugeF,
    /// How long the oldest batch still to be delivered has waited (0 when none waits).
    pub exporter_queue_oldest_age: Family<Labels, Gauge<f64, AtomicU64>>,
    pub scrapes: CounterF,
    pub scrape_failures: CounterF,
    pub scrapes_skipped: CounterF,
    pub requests_refused: CounterF,
    pub http_refused: CounterF,
    pub samples_out_of_bounds: CounterF,
    /// Query façade requests by handler (route) and status code, as Prometheus counts its own.
    pub query_requests: CounterF,
    pub query_duration: HistogramF,
    /// Series held in each query façade's window.
    pub window_series: GaugeF,
    /// Each exporter's deliveries (not a metric family: `/debug/exporterz`).
    pub exporter_status: ExporterStatuses,
    uptime: Family<Labels, Gauge<f64, AtomicU64>>,
    rss: GaugeF,
    cpu: Family<Labels, Gauge<f64, AtomicU64>>,
    open_fds: GaugeF,
    alive_tasks: GaugeF,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let receiver_accepted = CounterF::default();
        let receiver_refused = CounterF::default();
        let exporter_sent = CounterF::default();
        let exporter_send_failed = CounterF::default();
        let exporter_enqueue_failed = CounterF::default();
        let exporter_queue_size = GaugeF::default();
        let exporter_queue_capacity = GaugeF::default();
        let exporter_queue_disk_bytes = GaugeF::default();
        let exporter_queue_oldest_age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let scrapes = CounterF::default();
        let scrape_failures = CounterF::default();
        let scrapes_skipped = CounterF::default();
        let requests_refused = CounterF::default();
        let http_refused = CounterF::default();
        let samples_out_of_bounds = CounterF::default();
        let query_requests = CounterF::default();
        let query_duration = HistogramF::new_with_constructor(query_histogram);
        let window_series = GaugeF::default();
        let uptime = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let rss = GaugeF::default();
        let cpu = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let open_fds = GaugeF::default();
        let alive_tasks = GaugeF::default();
        registry.register(
            "otelcol_receiver_accepted_metric_points",
            "Number of metric points successfully pushed into the pipeline",
            receiver_accepted.clone(),
        );
        registry.register(
            "otelcol_receiver_refused_metric_points",
            "Number of metric points that could not be pushed into the pipeline",
            receiver_refused.clone(),
        );
        registry.register(
            "otelcol_exporter_sent_metric_points",
            "Number of metric points successfully sent to destination",
            exporter_sent.clone(),
        );
        registry.register(
            "otelcol_exporter_send_failed_metric_points",
            "Number of metric points in failed attempts to send to destination",
            exporter_send_failed.clone(),
        );
        registry.register(
            "otelcol_exporter_enqueue_failed_metric_points",
            "Number of metric points failed to be added to the sending queue",
            exporter_enqueue_failed.clone(),
        );
        registry.register(
            "otelcol_exporter_queue_size",
            "Current size of the retry queue (in batches)",
            exporter_queue_size.clone(),
        );
        registry.register(
            "otelcol_exporter_queue_capacity",
            "Fixed capacity of the retry queue (in batches)",
            exporter_queue_capacity.clone(),
        );
        registry.register(
            "meshmetrics_exporter_queue_disk_bytes",
            "Bytes a persistent sending queue holds on disk",
            exporter_queue_disk_bytes.clone(),
        );
        registry.register(
            "meshmetrics_exporter_queue_oldest_batch_age_seconds",
            "How long the oldest batch not yet delivered has waited (0 when the queue is empty)",
            exporter_queue_oldest_age.clone(),
        );
        registry.register(
            "meshmetrics_scrapes",
            "Scrapes attempted, per job",
            scrapes.clone(),
        );
        registry.register(
            "meshmetrics_scrape_failures",
            "Scrapes that failed (up = 0), per job",
            scrape_failures.clone(),
        );
        registry.register(
            "meshmetrics_scrapes_skipped",
            "Scrapes not started because a memory_limiter was refusing data, per job",
            scrapes_skipped.clone(),
        );
        registry.register(
            "meshmetrics_receiver_refused_requests",
            "Pushed requests refused whole, per receiver, transport and reason",
            requests_refused.clone(),
        );
        registry.register(
            "meshmetrics_http_server_refused",
            "Connections and requests a listener refused or cut off, per server and reason (connections, requests, header_timeout, idle_timeout, request_timeout)",
            http_refused.clone(),
        );
        registry.register(
            "meshmetrics_scrape_samples_out_of_bounds",
            "Scraped samples dropped because their own timestamp was too far ahead (10m) or too old for any window, per job",
            samples_out_of_bounds.clone(),
        );
        registry.register(
            "meshmetrics_query_requests",
            "Requests to a query façade, per exporter, handler and HTTP status code",
            query_requests.clone(),
        );
        registry.register(
            "meshmetrics_query_request_duration_seconds",
            "Time to answer a query façade request, per exporter and handler",
            query_duration.clone(),
        );
        registry.register(
            "meshmetrics_query_window_series",
            "Series held in a query façade's window, per exporter",
            window_series.clone(),
        );
        registry.register(
            "otelcol_process_uptime",
            "Uptime of the process in seconds",
            uptime.clone(),
        );
        registry.register(
            "otelcol_process_memory_rss",
            "Total physical memory (resident set size) in bytes",
            rss.clone(),
        );
        registry.register(
            "otelcol_process_cpu_seconds",
            "Total CPU user and system time in seconds",
            cpu.clone(),
        );
        registry.register(
            "meshmetrics_process_open_fds",
            "File descriptors the process holds open",
            open_fds.clone(),
        );
        registry.register(
            "meshmetrics_runtime_alive_tasks",
            "Tasks alive on the async runtime",
            alive_tasks.clone(),
        );
        Telemetry {
            registry,
            started: Instant::now(),
            receiver_accepted,
            receiver_refused,
            exporter_sent,
            exporter_send_failed,
            exporter_enqueue_failed,
            exporter_queue_size,
            exporter_queue_capacity,
            exporter_queue_disk_bytes,
            exporter_queue_oldest_age,
            scrapes,
            scrape_failures,
            scrapes_skipped,
            requests_refused,
            http_refused,
            samples_out_of_bounds,
            query_requests,
            query_duration,
            window_series,
            exporter_status: ExporterStatuses::default(),
            uptime,
            rss,
            cpu,
            open_fds,
            alive_tasks,
        }
    }

    /// Label set helper: `[("receiver", "prometheus")]`.
    pub fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Renders every metric in Prometheus text format.
    pub fn render(&self) -> String {
        let none = Vec::new();
        self.uptime
            .get_or_create(&none)
            .set(self.started.elapsed().as_secs_f64());
        if let Some((rss, cpu)) = process_stats() {
            self.rss.get_or_create(&none).set(rss as i64);
            self.cpu.get_or_create(&none).set(cpu);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.get_or_create(&none).set(fds.count() as i64);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.alive_tasks
                .get_or_create(&none)
                .set(rt.metrics().num_alive_tasks() as i64);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Resident memory (bytes) and CPU seconds of this process, from /proc.
pub fn process_stats() -> Option<(u64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces, closed by ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let ticks = 100.0; // USER_HZ on Linux
    Some((pages * 4096, (utime + stime) / ticks))
}

/// Shared handle.
pub type SharedTelemetry = Arc<Telemetry>;

/// What one exporter's deliveries came to, for `/debug/exporterz` and the health check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExporterStatus {
    pub last_success_unix_ms: Option<i64>,
    pub last_error_unix_ms: Option<i64>,
    /// The last failure's cause (`HTTP 401`, `connection: ...`, a gRPC status).
    pub last_error: Option<String>,
    /// What the backend said with it (its first KiB).
    pub last_error_body: Option<String>,
    /// Attempts that failed and were tried again.
    pub retries: u64,
    pub points_sent: u64,
    /// Points the backend refused for good (400, 401, 415 ...).
    pub points_refused: u64,
    /// Points given up on after the retry budget (in-memory queue only).
    pub points_dropped: u64,
    pub queue_batches: usize,
    pub queue_bytes_on_disk: u64,
    /// When recent attempts failed (ms), oldest first: what the health check counts.
    #[serde(skip)]
    failures: std::collections::VecDeque<i64>,
}

/// Most failure times kept per exporter (the health check's threshold is far below).
const FAILURES_KEPT: usize = 1024;

/// Every exporter's status, by name.
#[derive(Debug, Default)]
pub struct ExporterStatuses(std::sync::Mutex<std::collections::BTreeMap<String, ExporterStatus>>);

impl ExporterStatuses {
    pub fn update(&self, exporter: &str, f: impl FnOnce(&mut ExporterStatus)) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(exporter.to_string()).or_default());
        }
    }

    /// A failed attempt: its cause and the backend's words.
    pub fn failed(&self, exporter: &str, cause: &str, body: Option<&str>) {
        let now = crate::clock::now_ms();
        self.update(exporter, |s| {
            s.last_error_unix_ms = Some(now);
            s.last_error = Some(cause.to_string());
            s.last_error_body = body.map(|b| b.chars().take(1024).collect());
            if s.failures.len() == FAILURES_KEPT {
                s.failures.pop_front();
            }
            s.failures.push_back(now);
        });
    }

    pub fn snapshot(&self) -> Vec<(String, ExporterStatus)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Exporters with at least `threshold` failed attempts since `since_ms`.
    pub fn failing(&self, since_ms: i64, threshold: usize) -> Vec<(String, usize)> {
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.failures.iter().filter(|t| **t >= since_ms).count(),
                        )
                    })
                    .filter(|(_, n)| *n >= threshold.max(1))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The self-metrics server's routes: `/metrics` in the OpenMetrics text format.
pub fn metrics_router(telemetry: SharedTelemetry) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let t = telemetry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    t.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_collector_names() {
        let t = Telemetry::new();
        t.receiver_accepted
            .get_or_create(&Telemetry::labels(&[
                ("receiver", "prometheus"),
                ("transport", "http"),
            ]))
            .inc_by(5.0);
        let text = t.render();
        assert!(text.contains("otelcol_receiver_accepted_metric_points_total{receiver=\"prometheus\",transport=\"http\"} 5"), "{text}");
        assert!(text.contains("otelcol_process_uptime"));
    }
}
