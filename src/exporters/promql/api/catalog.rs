//! What the window holds, for Grafana and tools: `/api/v1/series`, `/labels`,
//! `/label/<name>/values` and `/metadata`, over this agent's window and, with peers, every
//! agent's: the same question goes to each peer (`peer/`), under the same credentials,
//! timeouts and partial-response rule as queries, and the answers are merged here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::format::{labels_json, parse_time};
use super::{bad_data, error, param, success_with_warnings, Admitted, ApiState, Params};
use crate::exporters::promql::local::{self, LabelsKind, LabelsQuestion};
use crate::exporters::promql::peer::{proto, to_proto_selectors, Answer, Ask};
use crate::model::Labels;
use crate::promql::{EvalError, LabelMatcher, MatchKind};
use crate::store::{SelectBounds, SelectStop};

/// Matchers from `match[]` selectors; none means every series.
fn selectors(p: &Params, st: &ApiState) -> Result<Vec<Vec<LabelMatcher>>, Response> {
    let mut out = Vec::new();
    for (k, v) in p {
        if k != "match[]" {
            continue;
        }
        let (expr, _) = crate::promql::parse_checked(v)
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

/// The answer to a label question from every agent, with `limit` applied and Prometheus's
/// truncation warning, plus one warning per peer that did not answer (partial responses).
async fn answer(
    st: &Arc<ApiState>,
    p: &Params,
    kind: LabelsKind,
    label_name: &str,
) -> Result<(Vec<Labels>, Vec<String>, Vec<String>), Response> {
    let (start, end) = time_range(p)?;
    let limit = limit_param(p)?;
    let question = LabelsQuestion {
        selectors: selectors(p, st)?,
        start,
        end,
        kind,
        label_name: label_name.to_string(),
        // One item past the limit tells whether the answer was cut.
        limit: if limit > 0 {
            limit.saturating_add(1)
        } else {
            0
        },
    };
    let deadline = Instant::now() + st.query_timeout;
    // Scans take turns with queries: each may hold up to the memory budget.
    let Ok(Ok(_turn)) = tokio::time::timeout_at(deadline.into(), st.turns.acquire()).await else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "query timed out waiting for a turn: too many queries in flight",
        ));
    };
    let req = proto::LabelsRequest {
        selectors: to_proto_selectors(question.selectors.iter().map(|m| (m, start, end))),
        kind: kind as i32,
        label_name: question.label_name.clone(),
        limit: question.limit as u64,
    };
    let peers = async {
        let Some(f) = &st.fanout else {
            return Ok(None);
        };
        f.ask_all(Ask::Labels(req), deadline.into())
            .await
            .map(Some)
            .map_err(|m| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m))
    };
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _abandon = crate::exporters::promql::peer::Abandon(abandoned.clone());
    let bounds = SelectBounds {
        max_bytes: st.opts.max_memory,
        max_series: 0,
        deadline: Some(deadline),
        abandoned: Some(abandoned),
    };
    let store = st.store.clone();
    let q = Arc::new(question);
    let local_q = q.clone();
    let scan = tokio::task::spawn_blocking(move || local::label_sets(&store, &local_q, &bounds));
    let (local, peers) = tokio::join!(tokio::time::timeout_at(deadline.into(), scan), peers);
    let mut sets = match local {
        Ok(Ok(Ok(sets))) => sets,
        Ok(Ok(Err(SelectStop::Budget))) => {
            return Err(super::query::eval_error(&EvalError::OverMemoryBudget(
                st.opts.max_memory,
            )))
        }
        Ok(Ok(Err(SelectStop::Deadline))) | Err(_) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "query timed out while selecting series",
            ))
        }
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "execution",
                &format!("series selection failed: {e}"),
            ))
        }
    };
    let mut values: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    match peers? {
        None => {
            if kind != LabelsKind::Series {
                values = local::labels_answer(&sets, &q).values;
            }
        }
        Some(asked) => {
            let mut seen: foldhash::HashSet<Labels> = sets.iter().cloned().collect();
            let mut distinct: BTreeSet<String> =
                local::labels_answer(&sets, &q).values.into_iter().collect();
            for a in asked.answers {
                let (_, Answer::Labels(resp)) = a else {
                    continue;
                };
                for s in resp.series {
                    let l = local::from_proto_labels(s.labels);
                    if seen.insert(l.clone()) {
                        sets.push(l);
                    }
                }
                distinct.extend(resp.values);
            }
            values = distinct.into_iter().collect();
            warnings = st
                .fanout
                .as_ref()
                .map_or(Ok(Vec::new()), |f| f.settle(asked.failures, asked.peers))
                .map_err(|m| error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m))?;
        }
    }
    // `limit` over the whole answer, as Prometheus cuts it.
    let n = if kind == LabelsKind::Series {
        sets.len()
    } else {
        values.len()
    };
    if limit > 0 && n > limit {
        warnings.push("results truncated due to limit".to_string());
        sets.truncate(limit);
        values.truncate(limit);
    }
    Ok((sets, values, warnings))
}

pub async fn series(State(st): State<Arc<ApiState>>, a: Admitted) -> Response {
    let p = a.params;
    if !p.iter().any(|(k, _)| k == "match[]") {
        return bad_data("no match[] parameter provided");
    }
    let (sets, _, warnings) = match answer(&st, &p, LabelsKind::Series, "").await {
        Ok(a) => a,
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
    success_with_warnings(out, &warnings)
}

fn list(values: Vec<String>, warnings: &[String]) -> Response {
    success_with_warnings(
        serde_json::to_string(&values).unwrap_or_else(|_| "[]".into()),
        warnings,
    )
}

pub async fn labels(State(st): State<Arc<ApiState>>, a: Admitted) -> Response {
    let p = a.params;
    match answer(&st, &p, LabelsKind::Names, "").await {
        Ok((_, values, warnings)) => list(values, &warnings),
        Err(r) => r,
    }
}

pub async fn label_values(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    a: Admitted,
) -> Response {
    let p = a.params;
    if !crate::model::is_label_name(&name) {
        return bad_data(format!("invalid label name: {name:?}"));
    }
    match answer(&st, &p, LabelsKind::Values, &name).await {
        Ok((_, values, warnings)) => list(values, &warnings),
        Err(r) => r,
    }
}

/// `/api/v1/metadata`: type, help and unit by family name (`metric`, `limit`,
/// `limit_per_metric`), from every agent.
pub async fn metadata(State(st): State<Arc<ApiState>>, a: Admitted) -> Response {
    let p = a.params;
    let limit = match limit_param(&p) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let per_metric = match param(&p, "limit_per_metric") {
        None | Some("") => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return bad_data(format!(
                    "invalid parameter \"limit_per_metric\": cannot parse {v:?} to a valid limit"
                ))
            }
        },
    };
    let metric = param(&p, "metric").unwrap_or("").to_string();
    let mut answers = vec![local::metadata(&st.store, &metric, limit)];
    let mut warnings = Vec::new();
    if let Some(f) = &st.fanout {
        let deadline = Instant::now() + st.query_timeout;
        let req = proto::MetadataRequest {
            metric: metric.clone(),
            limit: limit as u64,
        };
        let asked = match f.ask_all(Ask::Metadata(req), deadline.into()).await {
            Ok(a) => a,
            Err(m) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m),
        };
        answers.extend(asked.answers.into_iter().filter_map(|(_, a)| match a {
            Answer::Metadata(m) => Some(m),
            _ => None,
        }));
        warnings = match f.settle(asked.failures, asked.peers) {
            Ok(w) => w,
            Err(m) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m),
        };
    }
    let mut by_name: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for m in answers.into_iter().flat_map(|a| a.families) {
        by_name
            .entry(m.name)
            .or_default()
            .insert((m.r#type, m.help, m.unit));
    }
    if limit > 0 {
        while by_name.len() > limit {
            by_name.pop_last();
        }
    }
    let data: serde_json::Map<String, serde_json::Value> = by_name
        .into_iter()
        .map(|(name, metas)| {
            let n = if per_metric == 0 {
                metas.len()
            } else {
                per_metric
            };
            let list: Vec<serde_json::Value> = metas
                .into_iter()
                .take(n)
                .map(|(t, help, unit)| serde_json::json!({"type": t, "help": help, "unit": unit}))
                .collect();
            (name, serde_json::Value::Array(list))
        })
        .collect();
    success_with_warnings(serde_json::Value::Object(data).to_string(), &warnings)
}
