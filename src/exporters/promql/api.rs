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
use crate::config::secret::constant_time_eq;
use crate::promql::{
    format_value, instant_query, range_query, selections, EvalError, EvalOptions, LabelMatcher,
    MatchKind, Queryable, Value,
};
use crate::store::Store;

/// Everything a request handler needs.
pub struct ApiState {
    pub store: Arc<Store>,
    pub opts: EvalOptions,
    pub query_timeout: Duration,
    pub credentials: Credentials,
    pub queryz: QueryLog,
    /// Parsed expressions by query text: Flagger repeats the same queries every interval,
    /// and parsing (with its regex compilation) would otherwise dominate small queries.
    pub parsed: std::sync::Mutex<std::collections::HashMap<String, promql_parser::parser::Expr>>,
    /// Set when the exporter has peers: queries cover their series too.
    pub fanout: Option<super::peer::Fanout>,
}

const PARSE_CACHE_SIZE: usize = 512;

impl ApiState {
    fn parse(&self, query: &str) -> Result<promql_parser::parser::Expr, String> {
        if let Some(e) = self.parsed.lock().ok().and_then(|c| c.get(query).cloned()) {
            return Ok(e);
        }
        let e = crate::promql::parse(query)?;
        if let Ok(mut c) = self.parsed.lock() {
            if c.len() >= PARSE_CACHE_SIZE {
                c.clear();
            }
            c.insert(query.to_string(), e.clone());
        }
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

/// Parses Prometheus API times: float Unix seconds or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            return Ok((f * 1000.0).round() as i64);
        }
    }
    parse_rfc3339(s).ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp"))
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

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// Checks credentials; returns who the caller is (never the secret).
fn authorize(creds: &Credentials, headers: &HeaderMap) -> Result<String, Response> {
    if creds.tokens.is_empty() && creds.users.is_empty() {
        return Ok("anonymous".into());
    }
    // Flagger may send the header more than once (secret plus custom headers): any valid
    // value admits the request.
    for h in headers.get_all(axum::http::header::AUTHORIZATION) {
        let Ok(v) = h.to_str() else { continue };
        for part in v.split(',') {
            let part = part.trim();
            if let Some(tok) = part
                .strip_prefix("Bearer ")
                .or_else(|| part.strip_prefix("bearer "))
            {
                if creds
                    .tokens
                    .iter()
                    .any(|t| t.matches(tok.trim().as_bytes()))
                {
                    return Ok("bearer token".into());
                }
            } else if let Some(b) = part
                .strip_prefix("Basic ")
                .or_else(|| part.strip_prefix("basic "))
            {
                if let Some(decoded) = base64_decode(b) {
                    let decoded = String::from_utf8_lossy(&decoded).into_owned();
                    if let Some((u, p)) = decoded.split_once(':') {
                        if creds.users.iter().any(|(cu, cp)| {
                            constant_time_eq(cu.as_bytes(), u.as_bytes()) & cp.matches(p.as_bytes())
                        }) {
                            return Ok(format!("basic user {u}"));
                        }
                    }
                }
            }
        }
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
        EvalError::Execution(_) | EvalError::TooManySamples => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
            &e.to_string(),
        ),
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
            if (end - start) / step > 11_000 {
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
    let expr = match st.parse(&query) {
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
    let deadline = started + timeout;
    // With peers: first the samples of the query's selectors from every agent.
    let gathered = match &st.fanout {
        None => None,
        Some(f) => {
            let gathered = match selections(&expr, times.0, times.1, &st.opts) {
                Ok(sel) => f
                    .gather(
                        &st.store,
                        &sel,
                        st.opts.max_samples,
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

fn matching_labelsets(st: &ApiState, p: &Params) -> Result<Vec<crate::model::Labels>, Response> {
    let (start, end) = time_range(p)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for ms in selectors(p, st)? {
        for s in st.store.select_series(&ms, start, end, false) {
            if seen.insert(s.labels.clone()) {
                out.push(s.labels);
            }
        }
    }
    Ok(out)
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
    let sets = match matching_labelsets(&st, &p) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut out = String::from("[");
    for (i, l) in sets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        labels_json(l, &mut out);
    }
    out.push(']');
    success(out)
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
    let sets = match matching_labelsets(&st, &p) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut names: Vec<String> = sets
        .iter()
        .flat_map(|l| l.iter().map(|x| x.name.to_string()))
        .collect();
    names.sort();
    names.dedup();
    success(serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()))
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
    let sets = match matching_labelsets(&st, &p) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut values: Vec<String> = sets
        .iter()
        .filter_map(|l| l.get(&name).map(str::to_string))
        .collect();
    values.sort();
    values.dedup();
    success(serde_json::to_string(&values).unwrap_or_else(|_| "[]".into()))
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
    fn constant_time_compare_and_base64() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert_eq!(
            base64_decode("dXNlcjpwYXNz").as_deref(),
            Some(&b"user:pass"[..])
        );
    }
}
