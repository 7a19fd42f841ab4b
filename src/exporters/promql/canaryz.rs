//! `/debug/canaryz`: the checks callers made recently, grouped by query — the value Flagger
//! read from each answer over time (as a small chart), the answer's warnings, and who asked.
//! Bounded: the most recently asked queries, and the last answers of each.

use axum::response::{Html, IntoResponse, Response};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

/// Queries kept, and answers kept per query.
const QUERIES: usize = 64;
const POINTS: usize = 120;
const CALLERS: usize = 8;

/// One answer to a query: when, and the value Flagger reads from it (`None`: "no values
/// found", or an error).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub unix_ms: i64,
    pub value: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryChecks {
    pub query: String,
    pub callers: BTreeSet<String>,
    pub checks: VecDeque<Check>,
    /// The last answer's warnings.
    pub warnings: Vec<String>,
}

#[derive(Default)]
pub struct CheckLog {
    /// Most recently asked last.
    queries: Mutex<VecDeque<QueryChecks>>,
}

/// Flagger's value of an instant answer: the last series' value, unless NaN.
pub fn flagger_value(v: &crate::promql::Value) -> Option<f64> {
    match v {
        crate::promql::Value::Vector(s) => s.last().map(|s| s.value).filter(|v| !v.is_nan()),
        _ => None,
    }
}

use crate::http_server::html_escape as esc;

impl CheckLog {
    pub fn record(&self, caller: &str, query: &str, check: Check, warnings: &[String]) {
        // The same check arrives with its template's line breaks: grouped as Flagger sends it.
        let key: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let key = key.chars().take(4096).collect::<String>();
        let Ok(mut q) = self.queries.lock() else {
            return;
        };
        let mut entry = match q.iter().position(|e| e.query == key) {
            Some(i) => q.remove(i).unwrap_or_else(|| new_entry(&key)),
            None => new_entry(&key),
        };
        // Who, not which connection: the caller's address without its port.
        let who = match caller.split_once(' ') {
            Some((addr, rest)) => format!("{} {rest}", without_port(addr)),
            None => without_port(caller).to_string(),
        };
        if entry.callers.len() < CALLERS {
            entry.callers.insert(who.chars().take(256).collect());
        }
        if entry.checks.len() == POINTS {
            entry.checks.pop_front();
        }
        entry.checks.push_back(check);
        entry.warnings = warnings
            .iter()
            .take(8)
            .map(|w| w.chars().take(1024).collect())
            .collect();
        if q.len() == QUERIES {
            q.pop_front();
        }
        q.push_back(entry);
    }

    pub fn entries(&self) -> Vec<QueryChecks> {
        self.queries
            .lock()
            .map(|q| q.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    pub fn render(&self, json: bool) -> Response {
        let entries = self.entries();
        if json {
            return axum::Json(entries).into_response();
        }
        let mut body = String::new();
        for e in &entries {
            let last = e.checks.back();
            let now = match last {
                Some(Check { value: Some(v), .. }) => format!("{v}"),
                Some(Check {
                    error: Some(err), ..
                }) => format!("error: {}", esc(err)),
                _ => "no values found".into(),
            };
            let callers: Vec<String> = e.callers.iter().map(|c| esc(c)).collect();
            let warnings: String = e
                .warnings
                .iter()
                .map(|w| format!("<li>{}</li>", esc(w)))
                .collect();
            body.push_str(&format!(
                "<section class=\"check\"><pre>{}</pre><p>now <b>{now}</b> · {} answers · asked by {}</p>{}{}</section>",
                esc(&e.query),
                e.checks.len(),
                callers.join(", "),
                sparkline(&e.checks),
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!("<ul class=\"warnings\">{warnings}</ul>")
                }
            ));
        }
        if entries.is_empty() {
            body.push_str("<p>No instant queries yet.</p>");
        }
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>canaryz</title>\
             <style>body{{font-family:sans-serif;max-width:70em}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:4px}}\
             .warnings li{{color:#8a4b00}}section{{border-bottom:1px solid #ddd;padding:6px 0}}</style></head>\
             <body><h1>Canary checks</h1><p>Instant queries by query, newest first: the value Flagger reads from each answer (the last series', none when empty or NaN), \
             the answer's warnings, who asked. <a href=\"?format=json\">JSON</a></p>{body}</body></html>"
        ))
        .into_response()
    }
}

fn without_port(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    }
}

fn new_entry(key: &str) -> QueryChecks {
    QueryChecks {
        query: key.to_string(),
        callers: BTreeSet::new(),
        checks: VecDeque::new(),
        warnings: Vec::new(),
    }
}

/// The values over time as an inline SVG line; answers without a value are red ticks.
fn sparkline(checks: &VecDeque<Check>) -> String {
    let (w, h) = (360.0, 60.0);
    let values: Vec<f64> = checks
        .iter()
        .filter_map(|c| c.value)
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (t0, t1) = match (checks.front(), checks.back()) {
        (Some(a), Some(b)) => (
            a.unix_ms as f64,
            (b.unix_ms as f64).max(a.unix_ms as f64 + 1.0),
        ),
        _ => return String::new(),
    };
    let x = |t: i64| 4.0 + (w - 8.0) * (t as f64 - t0) / (t1 - t0);
    let y = |v: f64| {
        if hi > lo {
            h - 6.0 - (h - 12.0) * (v - lo) / (hi - lo)
        } else {
            h / 2.0
        }
    };
    let mut points = String::new();
    let mut misses = String::new();
    for c in checks {
        match c.value.filter(|v| v.is_finite()) {
            Some(v) => points.push_str(&format!("{:.1},{:.1} ", x(c.unix_ms), y(v))),
            None => misses.push_str(&format!(
                "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#c00\"/>",
                x(c.unix_ms),
                h - 10.0,
                h
            )),
        }
    }
    let range = if values.is_empty() {
        String::new()
    } else {
        format!("<text x=\"{}\" y=\"10\" font-size=\"10\" text-anchor=\"end\">{hi}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{lo}</text>", w - 2.0, w - 2.0, h - 2.0)
    };
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fbfbfb\"/><polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{points}\"/>{misses}{range}</svg>"
    )
}
