//! Prometheus's HTTP API (`/api/v1/...`) over the store, with the JSON shapes, error types
//! and status codes of Prometheus 2.x/3.x, GET and POST forms, bearer and basic auth:
//! queries (`query.rs`), what the window holds (`catalog.rs`), status and the rest of what
//! Grafana and tools call (`status.rs`), and how times and values are written (`format.rs`).
//! Any other path under `/api/v1/` answers a JSON 404, as Prometheus's does.

// Handlers return early with a ready HTTP response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod catalog;
pub mod format;
mod query;
mod status;

pub use format::{parse_duration_param, parse_time, result_json, MAX_TIME_MS};
pub use query::ParseCache;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::queryz::QueryLog;
use super::Credentials;
use crate::agent::AgentState;
use crate::promql::EvalOptions;
use crate::store::Store;

/// Everything a request handler needs.
pub struct ApiState {
    pub store: Arc<Store>,
    pub opts: EvalOptions,
    pub query_timeout: Duration,
    pub credentials: Credentials,
    pub queryz: QueryLog,
    /// Instant queries by query: values, warnings and callers (`/debug/canaryz`).
    pub checks: super::canaryz::CheckLog,
    /// Parsed expressions by query text: Flagger repeats the same queries every interval,
    /// and parsing (with its regex compilation) would otherwise dominate small queries.
    pub parsed: ParseCache,
    /// Set when the exporter has peers: queries cover their series too.
    pub fanout: Option<super::peer::Fanout>,
    /// Turns to evaluate: queries beyond `max_concurrent_queries` wait until their deadline.
    pub turns: tokio::sync::Semaphore,
    /// The window kept (the exporter's `retention`).
    pub retention: Duration,
    /// The config, start time and scrape targets the status endpoints show.
    pub agent: Arc<AgentState>,
    /// The exporter's own settings, shown as Prometheus flags.
    pub settings: super::PromqlExporterConfig,
    /// This façade's random number, as its peer service sends it.
    pub id: u64,
}

type Params = Vec<(String, String)>;

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// JSON error in Prometheus's shape.
fn error(status: StatusCode, kind: &str, msg: &str) -> Response {
    // Field order as Prometheus writes it.
    let body = format!(
        "{{\"status\":\"error\",\"errorType\":{},\"error\":{}}}",
        serde_json::to_string(kind).unwrap_or_default(),
        serde_json::to_string(msg).unwrap_or_default()
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn bad_data(msg: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_data", msg.as_ref())
}

fn success(data: String) -> Response {
    success_with_warnings(data, &[])
}

/// Prometheus's success envelope; `warnings` appear only when there are some.
fn success_with_warnings(data: String, warnings: &[String]) -> Response {
    let body = if warnings.is_empty() {
        format!("{{\"status\":\"success\",\"data\":{data}}}")
    } else {
        format!(
            "{{\"status\":\"success\",\"data\":{data},\"warnings\":{}}}",
            serde_json::to_string(warnings).unwrap_or_default()
        )
    };
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Checks credentials; returns who the caller is (never the secret).
pub(super) fn authorize(creds: &Credentials, headers: &HeaderMap) -> Result<String, Response> {
    let values = headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok());
    if let Some(who) = creds.admit(values) {
        return Ok(who);
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid credentials",
    );
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(
            "Bearer realm=\"meshmetrics\", Basic realm=\"meshmetrics\"",
        ),
    );
    Err(resp)
}

/// Query string plus, for POST, the urlencoded form body.
fn params(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Params, Response> {
    let mut p: Params = match uri.query() {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| bad_data(format!("invalid query string: {e}")))?,
        None => Vec::new(),
    };
    if method == Method::POST {
        let ct = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("application/x-www-form-urlencoded") || ct.is_empty() {
            let text = std::str::from_utf8(body).map_err(|_| bad_data("form body is not UTF-8"))?;
            let form: Params = serde_urlencoded::from_str(text)
                .map_err(|e| bad_data(format!("invalid form body: {e}")))?;
            p.extend(form);
        }
    }
    Ok(p)
}

fn caller(addr: Option<SocketAddr>, headers: &HeaderMap, who: &str) -> String {
    let ua = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match addr {
        Some(a) => format!("{a} ({ua}; {who})"),
        None => format!("({ua}; {who})"),
    }
}

/// Largest request body read (a POSTed form: a query and its parameters).
const MAX_BODY: usize = 2 << 20;

/// An admitted request, as handlers take it: who asked (address, user agent and which
/// credentials, for queryz) and its parameters (the query string, and a POST's form body).
/// A request without valid credentials is answered 401 before any handler runs.
pub struct Admitted {
    pub caller: String,
    pub params: Params,
}

impl axum::extract::FromRequest<Arc<ApiState>> for Admitted {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        st: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let who = authorize(&st.credentials, &parts.headers)?;
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_data",
                "request body too large",
            )
        })?;
        let params = params(&parts.method, &parts.uri, &parts.headers, &body)?;
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Admitted {
            caller: caller(addr, &parts.headers, &who),
            params,
        })
    }
}

pub async fn queryz(State(st): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st.credentials, &headers) {
        return r;
    }
    let json = uri.query().is_some_and(|q| q.contains("format=json"));
    st.queryz.render(json)
}

pub async fn canaryz(State(st): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st.credentials, &headers) {
        return r;
    }
    let json = uri.query().is_some_and(|q| q.contains("format=json"));
    st.checks.render(json)
}

/// Counts a request and its latency by route and status code.
async fn count_request(
    State((telemetry, exporter)): State<(crate::telemetry::SharedTelemetry, Arc<str>)>,
    matched: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let handler = matched.map_or_else(String::new, |m| m.as_str().to_string());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let code = resp.status().as_u16().to_string();
    let by_route = [("exporter", &*exporter), ("handler", handler.as_str())];
    telemetry
        .query_duration
        .get_or_create(&crate::telemetry::Telemetry::labels(&by_route))
        .observe(started.elapsed().as_secs_f64());
    let mut with_code = crate::telemetry::Telemetry::labels(&by_route);
    with_code.push(("code".into(), code));
    telemetry.query_requests.get_or_create(&with_code).inc();
    resp
}

/// The router, under `prefix` (empty for `/`), with `pages` (the query page) beside the API.
/// Each request is counted on `telemetry` under `exporter`.
pub fn router(
    prefix: &str,
    state: Arc<ApiState>,
    pages: axum::Router<Arc<ApiState>>,
    exporter: &str,
    telemetry: crate::telemetry::SharedTelemetry,
) -> axum::Router {
    use axum::routing::{get, post};
    let p = prefix.trim_end_matches('/');
    let api = |path: &str| format!("{p}/api/v1/{path}");
    axum::Router::new()
        .route(&api("query"), get(query::query).post(query::query))
        .route(
            &api("query_range"),
            get(query::query_range).post(query::query_range),
        )
        .route(
            &api("query_exemplars"),
            get(status::query_exemplars).post(status::query_exemplars),
        )
        .route(
            &api("format_query"),
            get(status::format_query).post(status::format_query),
        )
        .route(&api("series"), get(catalog::series).post(catalog::series))
        .route(&api("labels"), get(catalog::labels).post(catalog::labels))
        .route(
            &api("label/{name}/values"),
            get(catalog::label_values).post(catalog::label_values),
        )
        .route(
            &api("metadata"),
            get(catalog::metadata).post(catalog::metadata),
        )
        .route(&api("targets"), get(status::targets))
        .route(&api("rules"), get(status::rules))
        .route(&api("alerts"), get(status::alerts))
        .route(&api("alertmanagers"), get(status::alertmanagers))
        .route(&api("status/buildinfo"), get(status::buildinfo))
        .route(&api("status/config"), get(status::config))
        .route(&api("status/flags"), get(status::flags))
        .route(&api("status/runtimeinfo"), get(status::runtimeinfo))
        .route(
            &api("write"),
            post(|| async {
                bad_data("remote write is not accepted; send data through a pipeline")
            }),
        )
        .route(
            &format!("{p}/-/healthy"),
            get(|| async { "Prometheus Server is Healthy.\n" }),
        )
        .route(
            &format!("{p}/-/ready"),
            get(|| async { "Prometheus Server is Ready.\n" }),
        )
        .route(&format!("{p}/debug/queryz"), get(queryz))
        .route(&format!("{p}/debug/canaryz"), get(canaryz))
        .merge(pages)
        .route_layer(axum::middleware::from_fn_with_state(
            (telemetry, Arc::<str>::from(exporter)),
            count_request,
        ))
        .with_state(state)
}

/// What answers a path nothing else serves: under `/api/v1/`, Prometheus's JSON error
/// (a client reads its `status`); elsewhere Go's plain 404. Set after the peer API's gRPC
/// routes are merged in, so an HTTP client never gets gRPC's `200 OK` with an empty body.
pub async fn not_found(uri: Uri) -> Response {
    if uri.path().contains("/api/v1/") {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("unknown API endpoint {}", uri.path()),
        );
    }
    (
        StatusCode::NOT_FOUND,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        "404 page not found\n",
    )
        .into_response()
}
