//! The `zpages` extension: `/debug/servicez`, `/debug/pipelinez`, `/debug/extensionz`,
//! `/debug/featurez`, `/debug/targetz` (every scrape target with its last scrape) and
//! `/debug/exporterz` (every exporter's deliveries: last success, last error and what the
//! backend said, retries, queue, points sent, refused and dropped).
//! Each page is HTML; add `?format=json` for the same data as JSON.

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::agent::AgentState;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZpagesConfig {
    /// The address the pages are served on.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
}

fn default_endpoint() -> String {
    "localhost:55679".into()
}

impl Default for ZpagesConfig {
    fn default() -> Self {
        ZpagesConfig {
            endpoint: default_endpoint(),
        }
    }
}

/// What the pages show: the agent's own account of itself (config, reloads, targets) and
/// its self telemetry (exporter deliveries).
pub struct ZpagesState {
    pub agent: Arc<AgentState>,
    pub telemetry: crate::telemetry::SharedTelemetry,
}

use crate::http_server::html_escape as esc;

fn page(title: &str, body: String) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut s = String::from("<table><tr>");
    for h in headers {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{}</td>", esc(&c)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn wants_json(q: &HashMap<String, String>) -> bool {
    q.get("format").is_some_and(|f| f == "json")
}

async fn servicez(
    State(s): State<Arc<ZpagesState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let cfg = s.agent.config.load();
    let uptime = s.agent.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let info = serde_json::json!({
        "name": "meshmetrics",
        "version": env!("CARGO_PKG_VERSION"),
        "config_source": cfg.source,
        "uptime_seconds": uptime,
        "pipelines": cfg.pipelines.len(),
        "last_reload": s.agent.reload.load().as_deref(),
    });
    if wants_json(&q) {
        return axum::Json(info).into_response();
    }
    let rows = vec![
        vec!["Version".into(), env!("CARGO_PKG_VERSION").into()],
        vec!["Config".into(), cfg.source.clone()],
        vec!["Uptime (s)".into(), uptime.to_string()],
        vec![
            "Last reload".into(),
            s.agent
                .reload
                .load()
                .as_deref()
                .unwrap_or("none since start")
                .to_string(),
        ],
    ];
    let links = "<p><a href=\"/debug/pipelinez\">pipelinez</a> · <a href=\"/debug/extensionz\">extensionz</a> · <a href=\"/debug/featurez\">featurez</a> · <a href=\"/debug/targetz\">targetz</a> · <a href=\"/debug/exporterz\">exporterz</a></p>";
    page(
        "meshmetrics service",
        format!("{}{links}", table(&["", ""], rows)),
    )
    .into_response()
}

async fn pipelinez(
    State(s): State<Arc<ZpagesState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let cfg = s.agent.config.load();
    let join = |v: &[crate::config::ComponentId]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    };
    if wants_json(&q) {
        let v: Vec<_> = cfg
            .pipelines
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id,
                    "receivers": p.receivers.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "processors": p.processors.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "exporters": p.exporters.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        return axum::Json(v).into_response();
    }
    let rows = cfg
        .pipelines
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                join(&p.receivers),
                join(&p.processors),
                join(&p.exporters),
            ]
        })
        .collect();
    page(
        "Pipelines",
        table(&["Pipeline", "Receivers", "Processors", "Exporters"], rows),
    )
    .into_response()
}

async fn extensionz(
    State(s): State<Arc<ZpagesState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let cfg = s.agent.config.load();
    let names: Vec<String> = cfg.extensions.iter().map(|i| i.to_string()).collect();
    if wants_json(&q) {
        return axum::Json(names).into_response();
    }
    page(
        "Extensions",
        table(&["Extension"], names.into_iter().map(|n| vec![n]).collect()),
    )
    .into_response()
}

async fn featurez(Query(q): Query<HashMap<String, String>>) -> Response {
    let features = crate::features::listed();
    if wants_json(&q) {
        let v: Vec<_> = features
            .iter()
            .map(|(id, st, d)| serde_json::json!({"id": id, "state": st, "description": d}))
            .collect();
        return axum::Json(v).into_response();
    }
    let rows = features
        .iter()
        .map(|(a, b, c)| vec![a.to_string(), b.to_string(), c.to_string()])
        .collect();
    page(
        "Feature gates",
        table(&["ID", "State", "Description"], rows),
    )
    .into_response()
}

async fn exporterz(
    State(s): State<Arc<ZpagesState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let exporters = s.telemetry.exporter_status.snapshot();
    if wants_json(&q) {
        let v: Vec<_> = exporters
            .iter()
            .map(|(name, st)| {
                let mut o = serde_json::to_value(st).unwrap_or_default();
                o["exporter"] = name.clone().into();
                o
            })
            .collect();
        return axum::Json(v).into_response();
    }
    let when = |ms: Option<i64>| match ms {
        Some(ms) if ms > 0 => httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
        ),
        _ => "never".into(),
    };
    let rows = exporters
        .iter()
        .map(|(name, st)| {
            vec![
                name.clone(),
                when(st.last_success_unix_ms),
                match &st.last_error {
                    Some(e) => format!("{}: {e}", when(st.last_error_unix_ms)),
                    None => String::new(),
                },
                st.last_error_body.clone().unwrap_or_default(),
                st.retries.to_string(),
                format!(
                    "{} batches, {} bytes on disk",
                    st.queue_batches, st.queue_bytes_on_disk
                ),
                st.points_sent.to_string(),
                st.points_refused.to_string(),
                st.points_dropped.to_string(),
            ]
        })
        .collect();
    page(
        "Exporters",
        table(
            &[
                "Exporter",
                "Last success",
                "Last error",
                "Backend said",
                "Retries",
                "Queue",
                "Points sent",
                "Refused",
                "Dropped",
            ],
            rows,
        ),
    )
    .into_response()
}

async fn targetz(
    State(s): State<Arc<ZpagesState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let targets: Vec<_> = s
        .agent
        .targets
        .active
        .lock()
        .map(|t| t.values().cloned().collect())
        .unwrap_or_default();
    if wants_json(&q) {
        let v: Vec<_> = targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "job": t.job,
                    "url": t.url,
                    "health": t.health,
                    "labels": t.labels,
                    "discovered_labels": t.discovered,
                    "last_scrape_unix_ms": t.last_scrape_unix_ms,
                    "last_scrape_duration_seconds": t.last_duration.as_secs_f64(),
                    "last_samples": t.last_samples,
                    "last_out_of_bounds": t.last_out_of_bounds,
                    "out_of_bounds_total": t.out_of_bounds_total,
                    "last_error": t.last_error,
                    "interval_seconds": t.interval.as_secs_f64(),
                })
            })
            .collect();
        return axum::Json(v).into_response();
    }
    let rows = targets
        .iter()
        .map(|t| {
            let labels: Vec<String> = t
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let last = if t.last_scrape_unix_ms > 0 {
                httpdate::fmt_http_date(
                    SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_millis(t.last_scrape_unix_ms as u64),
                )
            } else {
                "never".into()
            };
            vec![
                t.job.clone(),
                t.url.clone(),
                t.health.to_string(),
                labels.join(", "),
                last,
                format!("{:.3}s", t.last_duration.as_secs_f64()),
                t.last_samples.to_string(),
                match t.out_of_bounds_total {
                    0 => String::new(),
                    n => format!("{} last scrape, {n} in all", t.last_out_of_bounds),
                },
                t.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    page(
        "Scrape targets",
        table(
            &[
                "Job",
                "URL",
                "Health",
                "Labels",
                "Last scrape",
                "Duration",
                "Samples",
                "Out-of-bounds timestamps",
                "Error",
            ],
            rows,
        ),
    )
    .into_response()
}

impl ZpagesConfig {
    /// Serves the pages.
    pub async fn start(
        &self,
        ctx: super::ExtensionContext,
    ) -> Result<crate::http_server::Served, String> {
        let addr = crate::config::parse_listen_address(&self.endpoint)?;
        let state = Arc::new(ZpagesState {
            agent: ctx.agent,
            telemetry: ctx.telemetry.clone(),
        });
        crate::http_server::listen(&ctx.name, addr, router(state), &ctx.telemetry).await
    }
}

/// Routes for the zpages server.
pub fn router(state: Arc<ZpagesState>) -> axum::Router {
    axum::Router::new()
        .route("/debug/servicez", axum::routing::get(servicez))
        .route("/debug/pipelinez", axum::routing::get(pipelinez))
        .route("/debug/extensionz", axum::routing::get(extensionz))
        .route("/debug/featurez", axum::routing::get(featurez))
        .route("/debug/targetz", axum::routing::get(targetz))
        .route("/debug/exporterz", axum::routing::get(exporterz))
        .with_state(state)
}
