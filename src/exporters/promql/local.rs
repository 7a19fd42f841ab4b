//! This agent's own answers to the questions about what it holds — label sets, label names
//! and values, family metadata, scrape targets — in the peer API's message types: what it
//! tells an asking peer, and what it merges with its peers' answers when it is asked.

use std::collections::{BTreeMap, BTreeSet};

use super::peer::proto;
use crate::agent::TargetRegistry;
use crate::clock::iso8601_ms;
use crate::model::Labels;
use crate::promql::LabelMatcher;
use crate::store::{SelectBounds, SelectStop, Store};

pub use proto::labels_request::Kind as LabelsKind;

/// A label question: which series (any of `selectors`, each a conjunction of matchers) in
/// `[start, end]`, and what to say of them.
pub struct LabelsQuestion {
    pub selectors: Vec<Vec<LabelMatcher>>,
    pub start: i64,
    pub end: i64,
    pub kind: LabelsKind,
    pub label_name: String,
    /// Most items answered; 0: all.
    pub limit: usize,
}

/// The distinct label sets of the series matching `q`, in the order found, at most
/// `q.limit` for a `Series` question.
pub fn label_sets(
    store: &Store,
    q: &LabelsQuestion,
    bounds: &SelectBounds,
) -> Result<Vec<Labels>, SelectStop> {
    let max_sets = match q.kind {
        LabelsKind::Series => q.limit,
        _ => 0,
    };
    let bounds = SelectBounds {
        max_series: max_sets,
        ..bounds.clone()
    };
    let mut seen = foldhash::HashSet::default();
    let mut out = Vec::new();
    for ms in &q.selectors {
        for s in store.select_bounded(ms, q.start, q.end, false, &bounds)? {
            if seen.insert(s.labels.clone()) {
                out.push(s.labels);
                if max_sets > 0 && out.len() >= max_sets {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The answer to `q` from this agent's window.
pub fn labels(
    store: &Store,
    q: &LabelsQuestion,
    bounds: &SelectBounds,
) -> Result<proto::LabelsResponse, SelectStop> {
    let sets = label_sets(store, q, bounds)?;
    Ok(labels_answer(&sets, q))
}

/// `q`'s answer made from label sets.
pub fn labels_answer(sets: &[Labels], q: &LabelsQuestion) -> proto::LabelsResponse {
    let mut resp = proto::LabelsResponse::default();
    match q.kind {
        LabelsKind::Series => {
            resp.series = sets
                .iter()
                .map(|l| proto::Series {
                    labels: to_proto_labels(l),
                    ..Default::default()
                })
                .collect();
        }
        LabelsKind::Names => {
            let names: BTreeSet<&str> = sets
                .iter()
                .flat_map(|l| l.iter().map(|x| &*x.name))
                .collect();
            resp.values = first(names, q.limit);
        }
        LabelsKind::Values => {
            let values: BTreeSet<&str> = sets.iter().filter_map(|l| l.get(&q.label_name)).collect();
            resp.values = first(values, q.limit);
        }
    }
    resp
}

fn first(items: BTreeSet<&str>, limit: usize) -> Vec<String> {
    let n = if limit == 0 { items.len() } else { limit };
    items.into_iter().take(n).map(str::to_string).collect()
}

pub fn to_proto_labels(l: &Labels) -> Vec<proto::Label> {
    l.iter()
        .map(|x| proto::Label {
            name: x.name.to_string(),
            value: x.value.to_string(),
        })
        .collect()
}

pub fn from_proto_labels(l: Vec<proto::Label>) -> Labels {
    Labels::from_vec(
        l.into_iter()
            .map(|x| crate::model::Label::new(x.name, x.value))
            .collect(),
    )
}

/// The metadata of the families this agent holds.
pub fn metadata(store: &Store, metric: &str, limit: usize) -> proto::MetadataResponse {
    let families = store
        .metadata
        .list(metric, limit)
        .into_iter()
        .flat_map(|(name, metas)| {
            metas.into_iter().map(move |m| proto::FamilyMetadata {
                name: name.clone(),
                r#type: m.kind.to_string(),
                help: m.help.to_string(),
                unit: m.unit.to_string(),
            })
        })
        .collect();
    proto::MetadataResponse { families }
}

/// Prometheus's duration format for a scrape interval (`15s`, `1m`, `1m30s`, `500ms`).
fn prom_duration(d: std::time::Duration) -> String {
    crate::config::units::format_duration(d)
}

/// This agent's scrape targets, under its façade's number `id`.
pub fn targets(registry: &TargetRegistry, id: u64) -> proto::TargetsResponse {
    let mut resp = proto::TargetsResponse {
        agent_id: id,
        ..Default::default()
    };
    if let Ok(active) = registry.active.lock() {
        resp.active = active
            .values()
            .map(|t| proto::ActiveTarget {
                discovered_labels: t.discovered.clone().into_iter().collect(),
                labels: t.labels.clone().into_iter().collect(),
                scrape_pool: t.job.clone(),
                scrape_url: t.url.clone(),
                last_error: t.last_error.clone().unwrap_or_default(),
                last_scrape_ms: t.last_scrape_unix_ms,
                last_scrape_duration_seconds: t.last_duration.as_secs_f64(),
                health: t.health.to_string(),
                scrape_interval: prom_duration(t.interval),
                scrape_timeout: prom_duration(t.timeout),
            })
            .collect();
    }
    if let Ok(dropped) = registry.dropped.lock() {
        for (job, d) in dropped.iter() {
            resp.dropped_counts.insert(job.clone(), d.count as u64);
            resp.dropped
                .extend(d.shown.iter().map(|l| proto::DroppedTarget {
                    discovered_labels: l.clone().into_iter().collect(),
                }));
        }
    }
    resp
}

/// Targets in the JSON of Prometheus's `/api/v1/targets` (`state`: `active`, `dropped` or
/// `any`), `scrapePool` filtering when not empty.
pub fn targets_json(t: &proto::TargetsResponse, state: &str, pool: &str) -> serde_json::Value {
    let sorted = |m: &std::collections::HashMap<String, String>| -> BTreeMap<String, String> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut active: Vec<serde_json::Value> = Vec::new();
    let mut dropped: Vec<serde_json::Value> = Vec::new();
    if state != "dropped" {
        for a in &t.active {
            if !pool.is_empty() && a.scrape_pool != pool {
                continue;
            }
            let last = if a.last_scrape_ms > 0 {
                iso8601_ms(a.last_scrape_ms)
            } else {
                "0001-01-01T00:00:00Z".to_string()
            };
            active.push(serde_json::json!({
                "discoveredLabels": sorted(&a.discovered_labels),
                "labels": sorted(&a.labels),
                "scrapePool": a.scrape_pool,
                "scrapeUrl": a.scrape_url,
                "globalUrl": a.scrape_url,
                "lastError": a.last_error,
                "lastScrape": last,
                "lastScrapeDuration": a.last_scrape_duration_seconds,
                "health": a.health,
                "scrapeInterval": a.scrape_interval,
                "scrapeTimeout": a.scrape_timeout,
            }));
        }
    }
    if state != "active" {
        for d in &t.dropped {
            let job = d.discovered_labels.get("job").map(String::as_str);
            if !pool.is_empty() && job != Some(pool) {
                continue;
            }
            dropped.push(serde_json::json!({"discoveredLabels": sorted(&d.discovered_labels)}));
        }
    }
    let counts: BTreeMap<&String, &u64> = t.dropped_counts.iter().collect();
    serde_json::json!({
        "activeTargets": active,
        "droppedTargets": dropped,
        "droppedTargetCounts": counts,
    })
}
