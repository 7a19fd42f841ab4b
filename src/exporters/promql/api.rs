//! Prometheus's HTTP query API (`/api/v1/...`) over the store: the JSON clients expect, byte
//! for byte where they care (values as strings in Go's `'f', -1` format, `"NaN"`, `"+Inf"`),
//! Prometheus's error types and status codes, GET and POST forms, bearer and basic auth.

// Handlers return early with a ready HTTP response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queryz::{QueryLog, QueryRecord};
use super::{now_ms, Credentials};
use crate::promql::bounds::QueryShape;
use crate::promql::{
    format_value, instant_query, range_query, selections, EvalError, EvalOptions, LabelMatcher,
    MatchKind, Queryable, Value,
};
use crate::store::{SelectBounds, SelectStop, Store};

/// Everything a request handler needs.
pub struct ApiState {
    pub store: Arc<Store>,
    pub opts: EvalOptions,
    pub query_timeout: Duration,
    pub credentials: Credentials,
    pub queryz: QueryLog,
    /// Parsed expressions by query text: Flagger repeats the same queries every interval,
    /// and parsing (with its regex compilation) would otherwise dominate small queries.
    pub parsed: ParseCache,
    /// Set when the exporter has peers: queries cover their series too.
    pub fanout: Option<super::peer::Fanout>,
    /// Turns to evaluate: queries beyond `max_concurrent_queries` wait until their deadline.
    pub turns: tokio::sync::Semaphore,
    /// The window kept (the exporter's `retention`).
    pub retention: Duration,
}

/// Parsed queries kept by text, bounded in bytes (each entry counted at what its text,
/// nodes and compiled regexes can hold: [`QueryShape::parsed_bytes`]).
#[derive(Default)]
pub struct ParseCache {
    inner: std::sync::Mutex<ParseCacheInner>,
}

#[derive(Default)]
struct ParseCacheInner {
    entries: std::collections::HashMap<String, (promql_parser::parser::Expr, usize)>,
    bytes: usize,
}

/// Most bytes the parse cache holds; Flagger's and a dashboard's queries fit many times.
const PARSE_CACHE_BYTES: usize = 16 << 20;
/// Queries longer than this are parsed every time: no caller repeats a megabyte of PromQL.
const PARSE_CACHE_MAX_QUERY: usize = 8 << 10;

impl ParseCache {
    fn get(&self, query: &str) -> Option<promql_parser::parser::Expr> {
        let c = self.inner.lock().ok()?;
        c.entries.get(query).map(|(e, _)| e.clone())
    }

    fn insert(&self, query: &str, expr: &promql_parser::parser::Expr, shape: QueryShape) {
        let cost = shape.parsed_bytes(query.len());
        if query.len() > PARSE_CACHE_MAX_QUERY || cost > PARSE_CACHE_BYTES / 16 {
            return;
        }
        if let Ok(mut c) = self.inner.lock() {
            if c.bytes + cost > PARSE_CACHE_BYTES {
                c.entries.clear();
                c.bytes = 0;
            }
            if c.entries
                .insert(query.to_string(), (expr.clone(), cost))
                .is_none()
            {
                c.bytes += cost;
            }
        }
    }
}

impl ApiState {
    fn parse(&self, query: &str) -> Result<promql_parser::parser::Expr, String> {
        if let Some(e) = self.parsed.get(query) {
            return Ok(e);
        }
        let (e, shape) = crate::promql::parse_checked(query)?;
        self.parsed.insert(query, &e, shape);
        Ok(e)
    }
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

/// The furthest time from the epoch a request may name, in ms (about 146 million years):
/// room enough that no sum of it with a duration or an offset the evaluator forms overflows
/// unnoticed. Prometheus's own bound (Go's time range) is wider, but nothing is stored there.
pub const MAX_TIME_MS: i64 = 1 << 62;

/// Parses Prometheus API times: float Unix seconds or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let invalid = || format!("cannot parse {s:?} to a valid timestamp");
    let ms = match s.parse::<f64>() {
        Ok(f) if f.is_finite() => (f * 1000.0).round(),
        _ => parse_rfc3339(s).ok_or_else(invalid)? as f64,
    };
    if ms.abs() > MAX_TIME_MS as f64 {
        return Err(invalid());
    }
    Ok(ms as i64)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        let padded = format!("{digits:0<3}");
        frac_ms = padded[..3].parse().ok()?;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' => 0,
        b'+' | b'-' => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se - offset_s) * 1000) + frac_ms)
}

/// Parses a step or timeout: float seconds or a Prometheus duration.
pub fn parse_duration_param(s: &str) -> Result<Duration, String> {
    if let Ok(f) = s.trim().parse::<f64>() {
        // `try_`: a step of 1e300 seconds is an error, not a panic in the handler.
        if let Ok(d) = Duration::try_from_secs_f64(f) {
            return Ok(d);
        }
        return Err(format!("cannot parse {s:?} to a valid duration"));
    }
    crate::config::units::parse_duration(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

fn ts_json(ms: i64) -> String {
    // As Prometheus's MarshalTimestamp: seconds, then exactly three fraction digits if any.
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    match a % 1000 {
        0 => format!("{sign}{}", a / 1000),
        f => format!("{sign}{}.{f:03}", a / 1000),
    }
}

fn labels_json(labels: &crate::model::Labels, out: &mut String) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&*l.name).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(&*l.value).unwrap_or_default());
    }
    out.push('}');
}

fn point_json(t: i64, v: f64, out: &mut String) {
    out.push('[');
    out.push_str(&ts_json(t));
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

/// `data` of a query result.
pub fn result_json(v: &Value, ts: i64) -> String {
    let mut out = String::with_capacity(256);
    match v {
        Value::Scalar(f) => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            point_json(ts, *f, &mut out);
            out.push('}');
        }
        Value::String(s) => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            out.push_str(&ts_json(ts));
            out.push(',');
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
            out.push_str("]}");
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels_json(&s.labels, &mut out);
                out.push_str(",\"value\":");
                point_json(ts, s.value, &mut out);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(series) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels_json(&s.labels, &mut out);
                out.push_str(",\"values\":[");
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point_json(*t, *v, &mut out);
                }
                out.push_str("]}");
            }
            out.push_str("]}");
        }
    }
    out
}

/// Checks credentials; returns who the caller is (never the secret).
fn authorize(creds: &Credentials, headers: &HeaderMap) -> Result<String, Response> {
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

fn eval_error(e: &EvalError) -> Response {
    match e {
        EvalError::BadData(m) => bad_data(m),
        EvalError::Canceled => error(StatusCode::SERVICE_UNAVAILABLE, "timeout", &e.to_string()),
        EvalError::Execution(_) | EvalError::TooManySamples | EvalError::OverMemoryBudget(_) => {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "execution",
                &e.to_string(),
            )
        }
    }
}

/// Summary for queryz: type, series count, first values.
fn summarize(v: &Value) -> String {
    match v {
        Value::Scalar(f) => format!("scalar {}", format_value(*f)),
        Value::String(s) => format!("string {s:?}"),
        Value::Vector(s) => {
            let first: Vec<String> = s
                .iter()
                .take(3)
                .map(|x| format!("{} {}", x.labels, format_value(x.value)))
                .collect();
            format!("vector, {} series: {}", s.len(), first.join("; "))
        }
        Value::Matrix(m) => format!("matrix, {} series", m.len()),
    }
}

async fn run_query(st: Arc<ApiState>, p: Params, range: bool, who: String) -> Response {
    let started = Instant::now();
    let Some(query) = param(&p, "query").map(str::to_string) else {
        return bad_data("invalid parameter \"query\": missing query");
    };
    let mut timeout = st.query_timeout;
    if let Some(t) = param(&p, "timeout") {
        match parse_duration_param(t) {
            Ok(d) => timeout = timeout.min(d),
            Err(e) => return bad_data(format!("invalid parameter \"timeout\": {e}")),
        }
    }
    let times = if range {
        let get = |n: &str| -> Result<&str, Response> {
            param(&p, n).ok_or_else(|| bad_data(format!("invalid parameter \"{n}\": missing")))
        };
        let parsed = (|| -> Result<(i64, i64, i64), Response> {
            let start = parse_time(get("start")?)
                .map_err(|e| bad_data(format!("invalid parameter \"start\": {e}")))?;
            let end = parse_time(get("end")?)
                .map_err(|e| bad_data(format!("invalid parameter \"end\": {e}")))?;
            let step = parse_duration_param(get("step")?)
                .map_err(|e| bad_data(format!("invalid parameter \"step\": {e}")))?;
            let step = step.as_millis() as i64;
            if end < start {
                return Err(bad_data(
                    "invalid parameter \"end\": end timestamp must not be before start time",
                ));
            }
            if step <= 0 {
                return Err(bad_data("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"));
            }
            if (i128::from(end) - i128::from(start)) / i128::from(step) > 11_000 {
                return Err(bad_data("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"));
            }
            Ok((start, end, step))
        })();
        match parsed {
            Ok(t) => t,
            Err(r) => return r,
        }
    } else {
        let ts = match param(&p, "time") {
            Some(t) => match parse_time(t) {
                Ok(ts) => ts,
                Err(e) => return bad_data(format!("invalid parameter \"time\": {e}")),
            },
            None => now_ms(),
        };
        (ts, ts, 0)
    };
    let deadline = started + timeout;
    let timed_out = |what: &str| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!("query timed out {what}"),
        )
    };
    // A turn first: evaluations beyond the limit wait, within the query's own deadline.
    let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline.into(), st.turns.acquire()).await else {
        st.queryz.record(QueryRecord::new(
            &who,
            &query,
            started.elapsed(),
            Err("no turn to evaluate before the deadline".into()),
        ));
        return timed_out("waiting for a turn: too many queries in flight");
    };
    // Parsing compiles regexes: off the async workers, under the deadline too.
    let parser = st.clone();
    let text = query.clone();
    let parsed = tokio::time::timeout_at(
        deadline.into(),
        tokio::task::spawn_blocking(move || parser.parse(&text)),
    )
    .await;
    let parsed = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => Err(format!("the parser failed: {e}")),
        Err(_) => return timed_out("while parsing"),
    };
    let expr = match parsed {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("invalid parameter \"query\": {e}");
            st.queryz.record(QueryRecord::new(
                &who,
                &query,
                started.elapsed(),
                Err(msg.clone()),
            ));
            return bad_data(msg);
        }
    };
    // With peers: first the samples of the query's selectors from every agent.
    let gathered = match &st.fanout {
        None => None,
        Some(f) => {
            let gathered = match selections(&expr, times.0, times.1, &st.opts) {
                Ok(sel) => f
                    .gather(
                        &st.store,
                        &sel,
                        peer_sample_limit(&st.opts),
                        st.retention,
                        tokio::time::Instant::from_std(deadline),
                    )
                    .await
                    .map_err(|m| (error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m), m)),
                Err(e) => Err((eval_error(&e), e.to_string())),
            };
            match gathered {
                Ok(g) => Some(g),
                Err((resp, msg)) => {
                    st.queryz
                        .record(QueryRecord::new(&who, &query, started.elapsed(), Err(msg)));
                    return resp;
                }
            }
        }
    };
    let (warnings, peers) = gathered
        .as_ref()
        .map(|g| (g.warnings.clone(), g.peers))
        .unwrap_or_default();
    let st2 = st.clone();
    let result = tokio::task::spawn_blocking(move || {
        let cancel = || Instant::now() > deadline;
        let q: &dyn Queryable = match &gathered {
            Some(g) => &g.merged,
            None => st2.store.as_ref(),
        };
        if range {
            range_query(q, &expr, times.0, times.1, times.2, &st2.opts, &cancel)
        } else {
            instant_query(q, &expr, times.0, &st2.opts, &cancel)
        }
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => Err(EvalError::Execution(format!("query failed: {e}"))),
    };
    let elapsed = started.elapsed();
    match result {
        Ok(v) => {
            let mut summary = summarize(&v);
            if peers > 0 {
                summary.push_str(&format!(" (over {peers} peers)"));
            }
            if !warnings.is_empty() {
                summary.push_str(&format!(" (partial: {})", warnings.join("; ")));
            }
            st.queryz
                .record(QueryRecord::new(&who, &query, elapsed, Ok(summary)));
            success_with_warnings(result_json(&v, times.0), &warnings)
        }
        Err(e) => {
            st.queryz
                .record(QueryRecord::new(&who, &query, elapsed, Err(e.to_string())));
            eval_error(&e)
        }
    }
}

/// The most samples peers may send for one query: its sample limit, or what its memory
/// budget holds if that is less.
fn peer_sample_limit(opts: &EvalOptions) -> usize {
    let by_memory = match opts.max_memory {
        0 => 0,
        m => (m / crate::promql::memory_cost(1, 0)).max(1),
    };
    match (opts.max_samples, by_memory) {
        (0, l) | (l, 0) => l,
        (a, b) => a.min(b),
    }
}

/// Authorizes the caller and collects the request's parameters.
fn admit(
    st: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, Params), Response> {
    let who = authorize(&st.credentials, headers)?;
    Ok((who, params(method, uri, headers, body)?))
}

async fn query_handler(
    st: Arc<ApiState>,
    addr: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    range: bool,
) -> Response {
    match admit(&st, &method, &uri, &headers, &body) {
        Ok((who, p)) => run_query(st.clone(), p, range, caller(Some(addr), &headers, &who)).await,
        Err(r) => r,
    }
}

pub async fn query(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    query_handler(st, addr, method, uri, headers, body, false).await
}

pub async fn query_range(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    query_handler(st, addr, method, uri, headers, body, true).await
}

/// Matchers from `match[]` selectors; none means every series.
fn selectors(p: &Params, st: &ApiState) -> Result<Vec<Vec<LabelMatcher>>, Response> {
    let mut out = Vec::new();
    for (k, v) in p {
        if k != "match[]" {
            continue;
        }
        let expr = crate::promql::parse(v)
            .map_err(|e| bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(bad_data(format!(
                "invalid parameter \"match[]\": {v:?} is not a series selector"
            )));
        };
        let mut ms = Vec::new();
        for m in &vs.matchers.matchers {
            let kind = match m.op {
                promql_parser::label::MatchOp::Equal => MatchKind::Equal,
                promql_parser::label::MatchOp::NotEqual => MatchKind::NotEqual,
                promql_parser::label::MatchOp::Re(_) => MatchKind::Re,
                promql_parser::label::MatchOp::NotRe(_) => MatchKind::NotRe,
            };
            ms.push(
                LabelMatcher::with_compat(&m.name, kind, &m.value, st.opts.compat)
                    .map_err(bad_data)?,
            );
        }
        if let Some(n) = &vs.name {
            if !ms.iter().any(|m| m.name == "__name__") {
                ms.push(LabelMatcher::new("__name__", MatchKind::Equal, n).map_err(bad_data)?);
            }
        }
        out.push(ms);
    }
    if out.is_empty() {
        out.push(vec![
            LabelMatcher::new("__name__", MatchKind::Re, ".+").map_err(bad_data)?
        ]);
    }
    Ok(out)
}

fn time_range(p: &Params) -> Result<(i64, i64), Response> {
    let start = match param(p, "start") {
        Some(s) => {
            parse_time(s).map_err(|e| bad_data(format!("invalid parameter \"start\": {e}")))?
        }
        None => i64::MIN,
    };
    let end = match param(p, "end") {
        Some(s) => {
            parse_time(s).map_err(|e| bad_data(format!("invalid parameter \"end\": {e}")))?
        }
        None => i64::MAX,
    };
    Ok((start, end))
}

/// Prometheus's `limit` parameter of the metadata endpoints (0 or absent: no limit).
fn limit_param(p: &Params) -> Result<usize, Response> {
    match param(p, "limit") {
        None | Some("") => Ok(0),
        Some(v) => v.parse::<usize>().map_err(|_| {
            bad_data(format!(
                "invalid parameter \"limit\": cannot parse {v:?} to a valid limit"
            ))
        }),
    }
}

/// The label sets of series matching the request's `match[]` (all series without one),
/// distinct, in order found. Scanned off the async workers, in a turn among the queries,
/// stopped at the query timeout and at the query memory budget; with `max_sets`, at that
/// many sets.
async fn matching_labelsets(
    st: &Arc<ApiState>,
    p: &Params,
    max_sets: usize,
) -> Result<Vec<crate::model::Labels>, Response> {
    let (start, end) = time_range(p)?;
    let selectors = selectors(p, st)?;
    let deadline = Instant::now() + st.query_timeout;
    // Scans take turns with queries: each may hold up to the memory budget.
    let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline.into(), st.turns.acquire()).await else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "query timed out waiting for a turn: too many queries in flight",
        ));
    };
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _abandon = super::peer::Abandon(abandoned.clone());
    let bounds = SelectBounds {
        max_bytes: st.opts.max_memory,
        max_series: max_sets,
        deadline: Some(deadline),
        abandoned: Some(abandoned),
    };
    let store = st.store.clone();
    let scan = tokio::task::spawn_blocking(move || {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for ms in selectors {
            let found = store
                .select_bounded(&ms, start, end, false, &bounds)
                .map_err(|e| (e, out.len()))?;
            for s in found {
                if seen.insert(s.labels.clone()) {
                    out.push(s.labels);
                    if max_sets > 0 && out.len() >= max_sets {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    });
    match tokio::time::timeout_at(deadline.into(), scan).await {
        Ok(Ok(Ok(sets))) => Ok(sets),
        Ok(Ok(Err((SelectStop::Budget, _)))) => {
            Err(eval_error(&EvalError::OverMemoryBudget(st.opts.max_memory)))
        }
        Ok(Ok(Err((SelectStop::Deadline, _)))) | Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "query timed out while selecting series",
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
            &format!("series selection failed: {e}"),
        )),
    }
}

/// `limit`'s truncation, as Prometheus says it.
fn truncated(n: usize, limit: usize) -> Vec<String> {
    if limit > 0 && n > limit {
        vec!["results truncated due to limit".to_string()]
    } else {
        Vec::new()
    }
}

pub async fn series(
    State(st): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match admit(&st, &method, &uri, &headers, &body) {
        Ok((_, p)) => p,
        Err(r) => return r,
    };
    if !p.iter().any(|(k, _)| k == "match[]") {
        return bad_data("no match[] parameter provided");
    }
    let limit = match limit_param(&p) {
        Ok(l) => l,
        Err(r) => return r,
    };
    // One set past the limit tells whether the answer was cut.
    let bound = if limit > 0 {
        limit.saturating_add(1)
    } else {
        0
    };
    let mut sets = match matching_labelsets(&st, &p, bound).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let warnings = truncated(sets.len(), limit);
    if limit > 0 {
        sets.truncate(limit);
    }
    let mut out = String::from("[");
    for (i, l) in sets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        labels_json(l, &mut out);
    }
    out.push(']');
    success_with_warnings(out, &warnings)
}

/// A sorted, distinct list answer with `limit` applied.
fn list_answer(mut items: Vec<String>, limit: usize) -> Response {
    items.sort();
    items.dedup();
    let warnings = truncated(items.len(), limit);
    if limit > 0 {
        items.truncate(limit);
    }
    success_with_warnings(
        serde_json::to_string(&items).unwrap_or_else(|_| "[]".into()),
        &warnings,
    )
}

pub async fn labels(
    State(st): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match admit(&st, &method, &uri, &headers, &body) {
        Ok((_, p)) => p,
        Err(r) => return r,
    };
    let limit = match limit_param(&p) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let sets = match matching_labelsets(&st, &p, 0).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let names: std::collections::BTreeSet<&str> = sets
        .iter()
        .flat_map(|l| l.iter().map(|x| &*x.name))
        .collect();
    list_answer(names.into_iter().map(str::to_string).collect(), limit)
}

pub async fn label_values(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match admit(&st, &method, &uri, &headers, &body) {
        Ok((_, p)) => p,
        Err(r) => return r,
    };
    if !crate::receivers::prometheus::relabel::is_label_name(&name) {
        return bad_data(format!("invalid label name: {name:?}"));
    }
    let limit = match limit_param(&p) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let sets = match matching_labelsets(&st, &p, 0).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let values: std::collections::BTreeSet<&str> =
        sets.iter().filter_map(|l| l.get(&name)).collect();
    list_answer(values.into_iter().map(str::to_string).collect(), limit)
}

pub async fn buildinfo() -> Response {
    success(
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "application": "meshmetrics",
        })
        .to_string(),
    )
}

pub async fn queryz(State(st): State<Arc<ApiState>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st.credentials, &headers) {
        return r;
    }
    let json = uri.query().is_some_and(|q| q.contains("format=json"));
    st.queryz.render(json)
}

/// The router, under `prefix` (empty for `/`).
pub fn router(prefix: &str, state: Arc<ApiState>) -> axum::Router {
    use axum::routing::{get, post};
    let p = prefix.trim_end_matches('/');
    axum::Router::new()
        .route(&format!("{p}/api/v1/query"), get(query).post(query))
        .route(
            &format!("{p}/api/v1/query_range"),
            get(query_range).post(query_range),
        )
        .route(&format!("{p}/api/v1/series"), get(series).post(series))
        .route(&format!("{p}/api/v1/labels"), get(labels).post(labels))
        .route(
            &format!("{p}/api/v1/label/{{name}}/values"),
            get(label_values),
        )
        .route(&format!("{p}/api/v1/status/buildinfo"), get(buildinfo))
        .route(
            &format!("{p}/-/healthy"),
            get(|| async { "Prometheus Server is Healthy.\n" }),
        )
        .route(
            &format!("{p}/-/ready"),
            get(|| async { "Prometheus Server is Ready.\n" }),
        )
        .route(&format!("{p}/debug/queryz"), get(queryz))
        .route(
            &format!("{p}/api/v1/write"),
            post(|| async {
                bad_data("remote write is not accepted; send data through a pipeline")
            }),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00"),
            Ok(1_435_781_451_000)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration_param("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration_param("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration_param("1e300").is_err());
        assert!(parse_duration_param("-1").is_err());
        assert_eq!(ts_json(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts_json(1_435_781_451_000), "1435781451");
        assert_eq!(ts_json(1_435_781_451_990), "1435781451.990");
        assert_eq!(ts_json(1_435_781_451_005), "1435781451.005");
    }

    #[test]
    fn credentials_admit_bearer_and_basic() {
        use crate::config::secret::Secret;
        let creds = Credentials {
            tokens: vec![Secret::new("t0k")],
            users: vec![("user".into(), Secret::new("pass"))],
        };
        assert_eq!(
            creds.admit(["Basic dXNlcjpwYXNz"]),
            Some("basic user user".into())
        );
        assert_eq!(creds.admit(["bearer t0k"]), Some("bearer token".into()));
        assert_eq!(
            creds.admit(["Bearer nope, Bearer t0k"]),
            Some("bearer token".into())
        );
        assert_eq!(creds.admit(["Basic dXNlcjpwYXN6"]), None);
        assert_eq!(creds.admit(["Basic !!!"]), None);
        assert_eq!(creds.admit(Vec::<&str>::new()), None);
        let back = creds.authorization().expect("has one");
        assert_eq!(back.expose(), "Bearer t0k");
        let basic_only = Credentials {
            tokens: vec![],
            users: creds.users.clone(),
        };
        let header = basic_only.authorization().expect("basic");
        assert_eq!(
            basic_only.admit([header.expose()]),
            Some("basic user user".into())
        );
    }
}
