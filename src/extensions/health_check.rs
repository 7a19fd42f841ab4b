//! The `health_check` extension: 200 with a JSON status while running, 503 otherwise.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_path")]
    pub path: String,
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

async fn handler(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
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
    let body = serde_json::json!({
        "status": status,
        "upSince": since,
        "uptime": "",
    });
    (code, axum::Json(body))
}

/// Routes for the health endpoint.
pub fn router(cfg: &HealthCheckConfig, state: Arc<HealthState>) -> axum::Router {
    axum::Router::new()
        .route(&cfg.path, axum::routing::get(handler))
        .with_state(state)
}
