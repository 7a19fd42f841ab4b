//! The `promql` exporter: keeps a recent window of everything that reaches it in the
//! [`Store`] and serves Prometheus's HTTP query API over it, for Flagger's MetricTemplates.

pub mod api;
pub mod canaryz;
pub mod local;
pub mod peer;
pub mod queryz;
pub mod ui;

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use crate::auth::Credentials;
use crate::config::secret::{read_secret_file, Secret};
use crate::config::units::{de_duration, de_opt_bytes, de_opt_duration};
use crate::model::Metrics;
use crate::promql::{Compat, EvalOptions};
use crate::store::Store;
use crate::telemetry::{SharedTelemetry, Telemetry};

/// `exporters: promql:`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromqlExporterConfig {
    /// Listen address of the query API.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// How much history to keep and answer from.
    #[serde(default = "default_retention", deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub retention: Duration,
    /// Serve the API under this prefix (e.g. `/prometheus`), as Prometheus's `--web.route-prefix`.
    #[serde(default)]
    pub path_prefix: String,
    /// Series beyond this are refused (counted); 0 = no limit.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Queries are cut off after this long; below Flagger's fixed 5 s client timeout.
    #[serde(default = "default_query_timeout", deserialize_with = "de_duration")]
    #[schemars(with = "crate::config::units::DurationText")]
    pub query_timeout: Duration,
    /// Most samples one query may load; 0 = no limit.
    #[serde(default = "default_max_samples")]
    pub max_samples_per_query: usize,
    /// Most memory one query may hold while it is evaluated (loaded samples, result points
    /// and series; e.g. `64MiB`). A query over it is refused (422, `execution`) before the
    /// memory is taken. Default: an eighth of the `memory_limiter`'s limit, else of the
    /// container's memory limit (between 16 MiB and 512 MiB), else 64 MiB.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    #[schemars(with = "Option<crate::config::units::ByteSize>")]
    pub max_query_memory: Option<u64>,
    /// Queries evaluated at once; more wait for a turn until their deadline.
    #[serde(default = "default_max_concurrent_queries")]
    pub max_concurrent_queries: usize,
    /// `5m` like Prometheus.
    #[serde(default, deserialize_with = "de_opt_duration")]
    #[schemars(with = "Option<crate::config::units::DurationText>")]
    pub lookback_delta: Option<Duration>,
    /// Which Prometheus to answer like where versions differ: `"3"` (default), `"2"` (2.53),
    /// or a 2.x version such as `"2.42"` for the rate extrapolation of releases before 2.51.
    #[serde(default)]
    pub prometheus_compat: Option<String>,
    /// Credentials callers must present (default: none, every caller admitted).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Queries remembered on `/debug/queryz`.
    #[serde(default = "default_queryz")]
    pub queryz_size: usize,
    /// Other agents whose series queries here also cover (query fan-out).
    #[serde(default)]
    pub peers: Option<peer::PeersConfig>,
}

fn default_endpoint() -> String {
    "0.0.0.0:9090".into()
}
fn default_retention() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_series() -> usize {
    1_000_000
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(4)
}
fn default_max_samples() -> usize {
    50_000_000
}
fn default_max_concurrent_queries() -> usize {
    8
}
fn default_queryz() -> usize {
    100
}

impl Default for PromqlExporterConfig {
    fn default() -> Self {
        PromqlExporterConfig {
            endpoint: default_endpoint(),
            retention: default_retention(),
            path_prefix: String::new(),
            max_series: default_max_series(),
            query_timeout: default_query_timeout(),
            max_samples_per_query: default_max_samples(),
            max_query_memory: None,
            max_concurrent_queries: default_max_concurrent_queries(),
            lookback_delta: None,
            prometheus_compat: None,
            auth: None,
            queryz_size: default_queryz(),
            peers: None,
        }
    }
}

/// Who may query: bearer tokens and/or basic-auth users, from the config, a file or env.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A bearer token admitted (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// A file whose content is a bearer token admitted.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// Basic-auth users admitted.
    #[serde(default)]
    pub basic: Vec<BasicUser>,
}

impl AuthConfig {
    /// The tokens and users, read from files where given; errors start with the key's path
    /// below `auth` (".bearer_token_file: ...").
    pub fn credentials(&self) -> Result<Credentials, String> {
        let mut c = Credentials::facade();
        if let Some(t) = &self.bearer_token {
            if !t.is_empty() {
                c.tokens.push(t.clone());
            }
        }
        if let Some(f) = &self.bearer_token_file {
            c.tokens
                .push(read_secret_file(f).map_err(|e| format!(".bearer_token_file: {e}"))?);
        }
        for u in &self.basic {
            let pw = match (&u.password, &u.password_file) {
                (Some(p), None) => p.clone(),
                (None, Some(f)) => read_secret_file(f).map_err(|e| format!(".basic: {e}"))?,
                _ => {
                    return Err(format!(
                        ".basic user {:?} needs exactly one of password or password_file",
                        u.username
                    ))
                }
            };
            c.users.push((u.username.clone(), pw));
        }
        if c.tokens.is_empty() && c.users.is_empty() {
            return Err(" is set but holds no bearer token or user".into());
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// The user name.
    pub username: String,
    /// Its password (or `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding its password.
    #[serde(default)]
    pub password_file: Option<String>,
}

impl PromqlExporterConfig {
    pub fn validate(&self) -> Result<(), String> {
        crate::config::parse_listen_address(&self.endpoint)?;
        if self.retention < Duration::from_secs(60) {
            return Err("retention must be at least 1m".into());
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            return Err(format!(
                "path_prefix {:?} must start with '/'",
                self.path_prefix
            ));
        }
        if self.query_timeout.is_zero() {
            return Err("query_timeout must be above 0".into());
        }
        if self.max_concurrent_queries == 0 {
            return Err("max_concurrent_queries must be above 0".into());
        }
        if self.max_query_memory == Some(0) {
            return Err("max_query_memory must be above 0".into());
        }
        if let Some(v) = self.prometheus_compat.as_deref() {
            parse_compat(v)?;
        }
        if let Some(p) = &self.peers {
            p.validate()?;
        }
        self.credentials()?;
        self.peer_credentials().map(|_| ())
    }

    /// The query API's credentials.
    pub fn credentials(&self) -> Result<Credentials, String> {
        match &self.auth {
            Some(a) => a.credentials().map_err(|e| format!("auth{e}")),
            None => Ok(Credentials::facade()),
        }
    }

    /// The peer API's credentials: `peers.auth` when set, else the query API's.
    pub fn peer_credentials(&self) -> Result<Credentials, String> {
        match self.peers.as_ref().and_then(|p| p.auth.as_ref()) {
            Some(a) => a.credentials().map_err(|e| format!("peers.auth{e}")),
            None => self.credentials(),
        }
    }

    /// Evaluation options; `memory_limit` is the agent's memory limit when it has one (its
    /// `memory_limiter`'s), from which the default query memory budget is sized.
    pub fn eval_options(&self, memory_limit: Option<u64>) -> EvalOptions {
        let (compat, legacy) = self
            .prometheus_compat
            .as_deref()
            .and_then(|v| parse_compat(v).ok())
            .unwrap_or((Compat::V3, false));
        EvalOptions {
            lookback_ms: self
                .lookback_delta
                .unwrap_or(Duration::from_secs(300))
                .as_millis() as i64,
            compat,
            legacy_rate_extrapolation: legacy,
            max_samples: self.max_samples_per_query,
            max_memory: self.query_memory(memory_limit),
            ..Default::default()
        }
    }

    /// The per-query memory budget in bytes.
    pub fn query_memory(&self, memory_limit: Option<u64>) -> usize {
        const MIB: u64 = 1 << 20;
        let bytes = match self.max_query_memory {
            Some(b) => b,
            None => match memory_limit.or_else(crate::processors::memory_limiter::cgroup_limit) {
                Some(limit) => (limit / 8).clamp(16 * MIB, 512 * MIB),
                None => 64 * MIB,
            },
        };
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }
}

impl PromqlExporterConfig {
    /// Starts the façade: its store (taking over `ctx.window` when the store's bound is
    /// unchanged, so Flagger's next check sees the same window), its server, and the task
    /// that ingests the pipeline's samples.
    pub async fn start(
        &self,
        ctx: crate::exporters::ExporterContext,
        input: crate::exporters::Input,
    ) -> Result<crate::exporters::StartedExporter, String> {
        let addr = crate::config::parse_listen_address(&self.endpoint)?;
        let (router, store) = self.facade(
            &ctx.name,
            ctx.telemetry.clone(),
            ctx.memory_limit,
            ctx.agent,
            ctx.window,
        )?;
        let server = crate::http_server::listen(&ctx.name, addr, router, &ctx.telemetry).await?;
        let task = tokio::spawn(run_ingest(
            ctx.name,
            self.clone(),
            store.clone(),
            input,
            ctx.telemetry,
        ));
        Ok(crate::exporters::StartedExporter {
            task,
            server: Some(server),
            store: Some(store),
        })
    }

    /// The façade of this config: its store (`window`, the store of the instance it replaces,
    /// when its bound is unchanged: Flagger's next check sees the same window, not an empty
    /// one) and one router for the Prometheus HTTP API, the query page and the peers' gRPC
    /// API. `memory_limit` sizes the default query memory budget.
    pub fn facade(
        &self,
        name: &str,
        telemetry: SharedTelemetry,
        memory_limit: Option<u64>,
        agent: Arc<crate::agent::AgentState>,
        window: Option<Arc<Store>>,
    ) -> Result<(axum::Router, Arc<Store>), String> {
        let store = match window {
            Some(s) if s.max_series() == self.max_series => s,
            _ => Arc::new(Store::new(self.max_series)),
        };
        store.set_window(self.retention);
        let credentials = self.credentials()?;
        let peer_credentials = self.peer_credentials()?;
        let opts = self.eval_options(memory_limit);
        // Tells this façade's own answer apart when it is among its peers.
        let id = crate::agent::random_id();
        // Agents fan queries out to each other with the credentials they accept.
        let fanout = self
            .peers
            .as_ref()
            .map(|p| peer::Fanout::new(p.clone(), peer_credentials.authorization(), id));
        let peer_api = peer::PeerService {
            store: store.clone(),
            compat: opts.compat,
            credentials: peer_credentials,
            max_samples: self.max_samples_per_query,
            max_memory: opts.max_memory,
            retention: self.retention,
            timeout: self.query_timeout,
            targets: agent.targets.clone(),
            id,
        };
        let state = Arc::new(api::ApiState {
            store: store.clone(),
            opts,
            query_timeout: self.query_timeout,
            credentials,
            queryz: queryz::QueryLog::new(self.queryz_size),
            checks: canaryz::CheckLog::default(),
            parsed: Default::default(),
            fanout,
            turns: tokio::sync::Semaphore::new(self.max_concurrent_queries),
            retention: self.retention,
            agent,
            settings: self.clone(),
            id,
        });
        // One port for the Prometheus HTTP API, the page and the peers' gRPC API; a path none
        // of them serves gets an HTTP answer, never gRPC's.
        let pages = ui::router(self.path_prefix.trim_end_matches('/'));
        let router = api::router(&self.path_prefix, state, pages, name, telemetry)
            .merge(tonic::service::Routes::new(peer_api.server()).into_axum_router())
            .fallback(api::not_found);
        Ok((router, store))
    }
}

/// `"3"`, `"2"` or `"2.N"` → semantics, and whether rate extrapolation predates 2.51.
pub fn parse_compat(v: &str) -> Result<(Compat, bool), String> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let major = parts.next().and_then(|m| m.parse::<u32>().ok());
    let minor = parts.next().and_then(|m| m.parse::<u32>().ok());
    match (major, minor) {
        (Some(3), _) => Ok((Compat::V3, false)),
        (Some(2), None) => Ok((Compat::V2, false)),
        (Some(2), Some(m)) => Ok((Compat::V2, m < 51)),
        _ => Err(format!(
            "prometheus_compat {v:?} must be \"3\", \"2\" or a 2.x version like \"2.42\""
        )),
    }
}

pub use crate::clock::now_ms;

/// Feeds the store from the pipeline and trims it to the retention window.
pub async fn run_ingest(
    name: String,
    cfg: PromqlExporterConfig,
    store: Arc<Store>,
    mut input: mpsc::Receiver<Metrics>,
    telemetry: SharedTelemetry,
) {
    let labels = Telemetry::labels(&[("exporter", &name)]);
    let retention = cfg.retention.as_millis() as i64;
    let mut trim = tokio::time::interval(Duration::from_secs(30));
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = input.recv() => match m {
                Some(m) => {
                    let points = m.point_count();
                    let appender = store.clone();
                    // Appending takes shard locks; keep it off the async workers.
                    let stored = tokio::task::spawn_blocking(move || appender.append_metrics(&m)).await.unwrap_or(0);
                    telemetry.exporter_sent.get_or_create(&labels).inc_by(stored as f64);
                    telemetry.window_series.get_or_create(&labels).set(store.series_count() as i64);
                    if stored < points {
                        telemetry.exporter_send_failed.get_or_create(&labels).inc_by((points - stored) as f64);
                    }
                }
                None => return,
            },
            _ = trim.tick() => {
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.trim(now_ms() - retention)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_versions() {
        let c: PromqlExporterConfig =
            serde_saphyr::from_str("prometheus_compat: \"2.42\"\n").expect("parses");
        let o = c.eval_options(None);
        assert_eq!((o.compat, o.legacy_rate_extrapolation), (Compat::V2, true));
        assert_eq!(parse_compat("2.53"), Ok((Compat::V2, false)));
        assert_eq!(parse_compat("3"), Ok((Compat::V3, false)));
        assert!(parse_compat("4").is_err());
    }
}
