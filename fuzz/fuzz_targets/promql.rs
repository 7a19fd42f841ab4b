//! PromQL from parse to answer: every query that parses is evaluated instant and range over a
//! small store with the façade's default limits, and must give a value or an error, never a
//! panic, within the evaluation deadline the façade would apply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmetrics::model::Labels;
use meshmetrics::promql::{instant_query, range_query, EvalOptions};
use meshmetrics::store::Store;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let store = Store::new(0);
        for i in 0..20i64 {
            for (job, v) in [("api", 1.0), ("db", 2.5)] {
                let instance = format!("10.0.0.{}:9090", i % 3);
                let le = if i % 2 == 0 { "0.5" } else { "+Inf" };
                let labels = Labels::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("job", job),
                    ("le", le),
                    ("instance", instance.as_str()),
                ]);
                for t in 0..30i64 {
                    let _ = store.append(&labels, t * 15_000, v * t as f64 + i as f64);
                }
            }
        }
        store
    })
}

fuzz_target!(|query: &[u8]| {
    // libfuzzer-sys's panic hook aborts on every panic, even one `promql::parse` catches on
    // purpose (promql-parser panics on some duration literals). Back to the default hook:
    // panics that escape still fail the run, as the harness aborts on them itself.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(expr) = meshmetrics::promql::parse(query) else {
        return;
    };
    let opts = EvalOptions::default();
    let deadline = Instant::now() + Duration::from_secs(4);
    let cancel = || Instant::now() > deadline;
    let _ = instant_query(store(), &expr, 300_000, &opts, &cancel);
    let _ = range_query(store(), &expr, 0, 450_000, 15_000, &opts, &cancel);
});
