//! `/debug/queryz`: the last queries, who asked, what they got and how long it took — what
//! Flagger asked and was answered, which Flagger itself never logs.

use axum::response::{Html, IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One answered (or failed) query.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub at: SystemTime,
    pub caller: String,
    pub query: String,
    pub latency: Duration,
    pub outcome: Result<String, String>,
}

impl QueryRecord {
    pub fn new(
        caller: &str,
        query: &str,
        latency: Duration,
        outcome: Result<String, String>,
    ) -> Self {
        // Callers choose these strings: the log keeps a bounded prefix of each.
        QueryRecord {
            at: SystemTime::now(),
            caller: truncate(caller, 256),
            query: truncate(query, 4096),
            latency,
            outcome: match outcome {
                Ok(s) => Ok(truncate(&s, 1024)),
                Err(e) => Err(truncate(&e, 1024)),
            },
        }
    }
}

/// `s`, or its first `max` bytes (at a character boundary) and how much was left out.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

/// A bounded log of recent queries.
pub struct QueryLog {
    size: usize,
    entries: Mutex<VecDeque<QueryRecord>>,
}

use crate::http_server::html_escape as esc;

impl QueryLog {
    pub fn new(size: usize) -> Self {
        QueryLog {
            size: size.max(1),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, r: QueryRecord) {
        let outcome = match &r.outcome {
            Ok(s) => s.as_str(),
            Err(e) => e.as_str(),
        };
        tracing::debug!(caller = %r.caller, query = %r.query, latency = ?r.latency, outcome, "query");
        if let Ok(mut e) = self.entries.lock() {
            if e.len() == self.size {
                e.pop_front();
            }
            e.push_back(r);
        }
    }

    pub fn entries(&self) -> Vec<QueryRecord> {
        self.entries
            .lock()
            .map(|e| e.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    pub fn render(&self, json: bool) -> Response {
        let entries = self.entries();
        if json {
            let v: Vec<_> = entries
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "time": httpdate::fmt_http_date(r.at),
                        "caller": r.caller,
                        "query": r.query,
                        "latency_seconds": r.latency.as_secs_f64(),
                        "result": r.outcome.as_ref().ok(),
                        "error": r.outcome.as_ref().err(),
                    })
                })
                .collect();
            return axum::Json(v).into_response();
        }
        let mut rows = String::new();
        for r in &entries {
            let (res, err) = match &r.outcome {
                Ok(s) => (s.as_str(), ""),
                Err(e) => ("", e.as_str()),
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{:.3} ms</td><td>{}</td><td>{}</td></tr>",
                esc(&httpdate::fmt_http_date(r.at)),
                esc(&r.caller),
                esc(&r.query),
                r.latency.as_secs_f64() * 1000.0,
                esc(res),
                esc(err)
            ));
        }
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>queryz</title>\
             <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;vertical-align:top}}</style></head>\
             <body><h1>Recent queries</h1><table><tr><th>Time</th><th>Caller</th><th>Query</th><th>Latency</th><th>Result</th><th>Error</th></tr>{rows}</table></body></html>"
        ))
        .into_response()
    }
}
