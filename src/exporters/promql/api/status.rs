//! Prometheus's status endpoints and the rest of the API surface Grafana and tools call:
//! `status/buildinfo`, `status/config`, `status/flags`, `status/runtimeinfo`, `targets` (every
//! agent's, with peers), `format_query`, and the empty answers of what an agent without
//! rules or exemplars has (`rules`, `alerts`, `alertmanagers`, `query_exemplars`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::format::parse_time;
use super::{bad_data, error, param, success, success_with_warnings, Admitted, ApiState, Params};
use crate::clock::iso8601_ms;
use crate::exporters::promql::local;
use crate::exporters::promql::peer::{proto, Answer, Ask};
use crate::promql::Compat;

/// The Prometheus release whose answers the façade gives (`prometheus_compat`): Grafana reads
/// `version` to decide what it may ask.
fn prometheus_version(st: &ApiState) -> String {
    match st.settings.prometheus_compat.as_deref().map(str::trim) {
        Some(v) if v.starts_with('2') && v.contains('.') => {
            let v = v.trim_start_matches('v');
            if v.matches('.').count() == 1 {
                format!("{v}.0")
            } else {
                v.to_string()
            }
        }
        _ => match st.opts.compat {
            Compat::V2 => "2.53.0".into(),
            Compat::V3 => "3.0.0".into(),
        },
    }
}

pub async fn buildinfo(State(st): State<Arc<ApiState>>, _: Admitted) -> Response {
    success(
        serde_json::json!({
            "version": prometheus_version(&st),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "application": "meshmetrics",
            "meshmetricsVersion": env!("CARGO_PKG_VERSION"),
        })
        .to_string(),
    )
}

/// A query's text from `query`, checked as PromQL.
fn checked_query(p: &Params) -> Result<promql_parser::parser::Expr, Response> {
    let Some(q) = param(p, "query") else {
        return Err(bad_data("invalid parameter \"query\": missing query"));
    };
    crate::promql::parse_checked(q)
        .map(|(e, _)| e)
        .map_err(|e| bad_data(format!("invalid parameter \"query\": {e}")))
}

/// No exemplars are kept: the query and times are checked as Prometheus does, the list is
/// empty.
pub async fn query_exemplars(State(_st): State<Arc<ApiState>>, a: Admitted) -> Response {
    let p = a.params;
    if let Err(r) = checked_query(&p) {
        return r;
    }
    for name in ["start", "end"] {
        if let Some(t) = param(&p, name) {
            if let Err(e) = parse_time(t) {
                return bad_data(format!("invalid parameter \"{name}\": {e}"));
            }
        }
    }
    success("[]".into())
}

pub async fn format_query(State(_st): State<Arc<ApiState>>, a: Admitted) -> Response {
    match checked_query(&a.params) {
        Ok(e) => success(serde_json::to_string(&e.prettify()).unwrap_or_default()),
        Err(r) => r,
    }
}

/// The running config, secrets redacted.
pub async fn config(State(st): State<Arc<ApiState>>, _: Admitted) -> Response {
    let cfg = st.agent.config.load();
    success(serde_json::json!({ "yaml": cfg.redacted_yaml }).to_string())
}

/// The façade's settings under the Prometheus flag names tools read.
pub async fn flags(State(st): State<Arc<ApiState>>, _: Admitted) -> Response {
    let d = crate::config::units::format_duration;
    let s = &st.settings;
    let cfg = st.agent.config.load();
    success(
        serde_json::json!({
            "config.file": cfg.source,
            "query.lookback-delta": d(std::time::Duration::from_millis(st.opts.lookback_ms.max(0) as u64)),
            "query.max-concurrency": s.max_concurrent_queries.to_string(),
            "query.max-samples": s.max_samples_per_query.to_string(),
            "query.timeout": d(s.query_timeout),
            "storage.tsdb.retention.time": d(s.retention),
            "web.listen-address": s.endpoint,
            "web.route-prefix": if s.path_prefix.is_empty() { "/" } else { s.path_prefix.as_str() },
            "agent": "false",
        })
        .to_string(),
    )
}

fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    iso8601_ms(ms)
}

pub async fn runtimeinfo(State(st): State<Arc<ApiState>>, _: Admitted) -> Response {
    let (applied, ok) = **st.agent.applied.load();
    let rt = tokio::runtime::Handle::current().metrics();
    success(
        serde_json::json!({
            "startTime": rfc3339(st.agent.started),
            "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
            "reloadConfigSuccess": ok,
            "lastConfigTime": rfc3339(applied),
            "corruptionCount": 0,
            "goroutineCount": rt.num_alive_tasks(),
            "GOMAXPROCS": rt.num_workers(),
            "GOMEMLIMIT": 0,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": crate::config::units::format_duration(st.retention),
        })
        .to_string(),
    )
}

/// Most dropped targets one answer lists (the counts stay whole), and with peers, most
/// listed per agent: the answers of every peer are held at once.
const DROPPED_LISTED: usize = 1000;
const DROPPED_LISTED_PER_AGENT: usize = 100;

/// Every agent's scrape targets (`state`: `active`, `dropped` or `any`; `scrapePool`).
pub async fn targets(State(st): State<Arc<ApiState>>, a: Admitted) -> Response {
    let p = a.params;
    let state = param(&p, "state").unwrap_or("any").to_ascii_lowercase();
    let pool = param(&p, "scrapePool").unwrap_or("").to_string();
    let (max_dropped, per_agent) = match (state.as_str(), &st.fanout) {
        ("active", _) => (0, 0),
        (_, Some(_)) => (DROPPED_LISTED, DROPPED_LISTED_PER_AGENT),
        (_, None) => (DROPPED_LISTED, DROPPED_LISTED),
    };
    let mut all = local::targets(&st.agent.targets, st.id);
    all.dropped.truncate(per_agent);
    let mut warnings = Vec::new();
    if let Some(f) = &st.fanout {
        let deadline = Instant::now() + st.query_timeout;
        let req = proto::TargetsRequest {
            max_dropped: per_agent as u64,
        };
        let asked = match f.ask_all(Ask::Targets(req), deadline.into()).await {
            Ok(a) => a,
            Err(m) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m),
        };
        let mut seen = HashSet::from([all.agent_id]);
        for a in asked.answers {
            let (_, Answer::Targets(t)) = a else { continue };
            if !seen.insert(t.agent_id) {
                continue;
            }
            merge_targets(&mut all, t);
            all.dropped.truncate(max_dropped);
        }
        warnings = match f.settle(asked.failures, asked.peers) {
            Ok(w) => w,
            Err(m) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m),
        };
    }
    success_with_warnings(
        local::targets_json(&all, &state, &pool).to_string(),
        &warnings,
    )
}

fn merge_targets(into: &mut proto::TargetsResponse, other: proto::TargetsResponse) {
    into.active.extend(other.active);
    into.dropped.extend(other.dropped);
    for (job, n) in other.dropped_counts {
        *into.dropped_counts.entry(job).or_default() += n;
    }
}

pub async fn rules(State(_st): State<Arc<ApiState>>, _: Admitted) -> Response {
    success("{\"groups\":[]}".into())
}

pub async fn alerts(State(_st): State<Arc<ApiState>>, _: Admitted) -> Response {
    success("{\"alerts\":[]}".into())
}

pub async fn alertmanagers(State(_st): State<Arc<ApiState>>, _: Admitted) -> Response {
    success("{\"activeAlertmanagers\":[],\"droppedAlertmanagers\":[]}".into())
}
