//! The `health_check` extension: 200 with a JSON status while running, 503 otherwise; with
//! the collector's `check_collector_pipeline`, also 503 while an exporter keeps failing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The address the health check listens on.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The path answering 200 when healthy and 503 otherwise.
    #[serde(default = "default_path")]
    pub path: String,
    /// Whether failing exporters turn the health check red.
    #[serde(default)]
    pub check_collector_pipeline: PipelineCheck,
}

/// `check_collector_pipeline`, as the collector's health check: unhealthy while some
/// exporter failed `exporter_failure_threshold` attempts or more within `interval`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineCheck {
    /// Whether exporter failures count.
    #[serde(default)]
    pub enabled: bool,
    /// The window failed sends are counted in.
    #[serde(
        default = "default_check_interval",
        deserialize_with = "crate::config::units::de_duration"
    )]
    #[schemars(with = "crate::config::units::DurationText")]
    pub interval: std::time::Duration,
    /// Failed sends within `interval` that turn the check red.
    #[serde(default = "default_failure_threshold")]
    pub exporter_failure_threshold: usize,
}

fn default_check_interval() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

fn default_failure_threshold() -> usize {
    5
}

impl Default for PipelineCheck {
    fn default() -> Self {
        PipelineCheck {
            enabled: false,
            interval: default_check_interval(),
            exporter_failure_threshold: default_failure_threshold(),
        }
    }
}

fn default_endpoint() -> String {
    "0.0.0.0:13133".into()
}

fn default_path() -> String {
    "/".into()
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: default_endpoint(),
            path: default_path(),
            check_collector_pipeline: PipelineCheck::default(),
        }
    }
}

/// Lifecycle of the agent as health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Starting = 0,
    Ready = 1,
    ShuttingDown = 2,
}

/// Shared health state, flipped by the service as it starts and stops.
#[derive(Debug)]
pub struct HealthState {
    state: AtomicU8,
    since: std::sync::Mutex<SystemTime>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            state: AtomicU8::new(Health::Starting as u8),
            since: std::sync::Mutex::new(SystemTime::now()),
        }
    }
}

impl HealthState {
    pub fn set(&self, h: Health) {
        self.state.store(h as u8, Ordering::SeqCst);
        if let Ok(mut s) = self.since.lock() {
            *s = SystemTime::now();
        }
    }

    pub fn get(&self) -> Health {
        match self.state.load(Ordering::SeqCst) {
            1 => Health::Ready,
            2 => Health::ShuttingDown,
            _ => Health::Starting,
        }
    }
}

struct Checked {
    state: Arc<HealthState>,
    pipeline: PipelineCheck,
    telemetry: crate::telemetry::SharedTelemetry,
}

async fn handler(State(checked): State<Arc<Checked>>) -> impl IntoResponse {
    let state = &checked.state;
    let since = state
        .since
        .lock()
        .map(|s| *s)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let since = httpdate::fmt_http_date(since);
    let (code, status) = match state.get() {
        Health::Ready => (StatusCode::OK, "Server available"),
        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "Server not available"),
        Health::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "Server not available"),
    };
    let mut body = serde_json::json!({
        "status": status,
        "upSince": since,
        "uptime": "",
    });
    let check = &checked.pipeline;
    if code == StatusCode::OK && check.enabled {
        let window = i64::try_from(check.interval.as_millis()).unwrap_or(i64::MAX);
        let since = crate::clock::now_ms().saturating_sub(window);
        let failing = checked
            .telemetry
            .exporter_status
            .failing(since, check.exporter_failure_threshold);
        if !failing.is_empty() {
            let why: Vec<String> = failing
                .iter()
                .map(|(e, n)| {
                    format!(
                        "exporter {e}: {n} failed attempts in the last {}",
                        crate::config::units::format_duration(check.interval)
                    )
                })
                .collect();
            body["status"] = "Server not available".into();
            body["reason"] = why.join("; ").into();
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
        }
    }
    (code, axum::Json(body))
}

impl HealthCheckConfig {
    /// Serves the health check.
    pub async fn start(
        &self,
        ctx: super::ExtensionContext,
    ) -> Result<crate::http_server::Served, String> {
        let addr = crate::config::parse_listen_address(&self.endpoint)?;
        let router = router(self, ctx.health, ctx.telemetry.clone());
        crate::http_server::listen(&ctx.name, addr, router, &ctx.telemetry).await
    }
}

/// Routes for the health endpoint.
pub fn router(
    cfg: &HealthCheckConfig,
    state: Arc<HealthState>,
    telemetry: crate::telemetry::SharedTelemetry,
) -> axum::Router {
    axum::Router::new()
        .route(&cfg.path, axum::routing::get(handler))
        .with_state(Arc::new(Checked {
            state,
            pipeline: cfg.check_collector_pipeline.clone(),
            telemetry,
        }))
}
