//! `/api/v1/query` and `/api/v1/query_range`: parse (cached), fan out to peers when there
//! are some, evaluate off the async workers under the query's deadline and memory budget.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

use super::format::{parse_duration_param, parse_time, result_json};
use super::{bad_data, error, param, success_with_warnings, Admitted, ApiState, Params};
use crate::exporters::promql::canaryz::{flagger_value, Check};
use crate::exporters::promql::now_ms;
use crate::exporters::promql::queryz::QueryRecord;
use crate::model::format_value;
use crate::promql::bounds::QueryShape;
use crate::promql::{
    explain, explain_loaded, explanation_selections, instant_query_loaded, is_thin, range_query,
    selections, EvalError, EvalOptions, Queryable, Value,
};

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

pub(super) fn eval_error(e: &EvalError) -> Response {
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
    // Parsing compiles regexes: off the async workers, under the deadline too. A query
    // parsed before (Flagger repeats its checks) is taken from the cache in place.
    let parsed = match st.parsed.get(&query) {
        Some(e) => Ok(e),
        None => {
            let parser = st.clone();
            let text = query.clone();
            let parsed = tokio::time::timeout_at(
                deadline.into(),
                tokio::task::spawn_blocking(move || parser.parse(&text)),
            )
            .await;
            match parsed {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => Err(format!("the parser failed: {e}")),
                Err(_) => return timed_out("while parsing"),
            }
        }
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
    let (mut warnings, peers) = gathered
        .as_ref()
        .map(|g| (g.warnings.clone(), g.peers))
        .unwrap_or_default();
    let st2 = st.clone();
    let fanned_out = gathered.is_some();
    let asked = expr.clone();
    let result = tokio::task::spawn_blocking(move || {
        let cancel = || Instant::now() > deadline;
        let q: &dyn Queryable = match &gathered {
            Some(g) => &g.merged,
            None => st2.store.as_ref(),
        };
        if range {
            range_query(q, &expr, times.0, times.1, times.2, &st2.opts, &cancel)
                .map(|v| (v, Vec::new()))
        } else {
            let evaluating = Instant::now();
            let (v, loaded) = instant_query_loaded(q, &expr, times.0, &st2.opts, &cancel)?;
            // The warnings cost about what the evaluation did: left out when that would run
            // past the query's deadline. Fanned out, the data gathered covers the query's own
            // selections only; asked of it, the explanations that look beyond them would
            // claim absences falsely (see `explain_fanned_out`).
            let in_time = Instant::now() + evaluating.elapsed() < deadline;
            let why = match &gathered {
                None if in_time => explain_loaded(q, &expr, times.0, &v, &st2.opts, &loaded),
                _ => Vec::new(),
            };
            Ok((v, why))
        }
    })
    .await;
    let mut result = match result {
        Ok(r) => r,
        Err(e) => Err(EvalError::Execution(format!("query failed: {e}"))),
    };
    if let (Ok((v, why)), Some(f), false, true) = (&mut result, &st.fanout, range, fanned_out) {
        if is_thin(v) {
            *why = explain_fanned_out(&st, f, &asked, times.0, v, deadline).await;
        }
    }
    let elapsed = started.elapsed();
    match result {
        Ok((v, why)) => {
            let mut summary = summarize(&v);
            if peers > 0 {
                summary.push_str(&format!(" (over {peers} peers)"));
            }
            if !warnings.is_empty() {
                summary.push_str(&format!(" (partial: {})", warnings.join("; ")));
            }
            if !why.is_empty() {
                summary.push_str(&format!(" (warnings: {})", why.join("; ")));
            }
            warnings.extend(why);
            if !range {
                let check = Check {
                    unix_ms: crate::clock::now_ms(),
                    value: flagger_value(&v),
                    error: None,
                };
                st.checks.record(&who, &query, check, &warnings);
            }
            st.queryz
                .record(QueryRecord::new(&who, &query, elapsed, Ok(summary)));
            success_with_warnings(result_json(&v, times.0), &warnings)
        }
        Err(e) => {
            if !range {
                let check = Check {
                    unix_ms: crate::clock::now_ms(),
                    value: None,
                    error: Some(e.to_string()),
                };
                st.checks.record(&who, &query, check, &[]);
            }
            st.queryz
                .record(QueryRecord::new(&who, &query, elapsed, Err(e.to_string())));
            eval_error(&e)
        }
    }
}

/// Why a fanned-out answer is thin: a second round gathers what the explanation reads from
/// every agent (each selector a lookback further back, its metric by name, `up`). Only for
/// empty and NaN answers, so a healthy check costs no second round; a failure to gather
/// leaves the answer unexplained rather than failed.
async fn explain_fanned_out(
    st: &Arc<ApiState>,
    f: &crate::exporters::promql::peer::Fanout,
    expr: &promql_parser::parser::Expr,
    t: i64,
    v: &Value,
    deadline: Instant,
) -> Vec<String> {
    let wanted = explanation_selections(expr, t, &st.opts);
    let Ok(g) = f
        .gather(
            &st.store,
            &wanted,
            peer_sample_limit(&st.opts),
            st.retention,
            tokio::time::Instant::from_std(deadline),
        )
        .await
    else {
        return Vec::new();
    };
    let (st, expr, v) = (st.clone(), expr.clone(), v.clone());
    tokio::task::spawn_blocking(move || explain(&g.merged, &expr, t, &v, &st.opts))
        .await
        .unwrap_or_default()
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

pub async fn query(State(st): State<Arc<ApiState>>, a: Admitted) -> Response {
    run_query(st, a.params, false, a.caller).await
}

pub async fn query_range(State(st): State<Arc<ApiState>>, a: Admitted) -> Response {
    run_query(st, a.params, true, a.caller).await
}
