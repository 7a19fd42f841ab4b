//! The peer API's request, as another agent (or anyone reaching the port with its
//! credentials) sends it: decoded by prost, checked by the same function the service runs,
//! and answered over a small store within the bounds the service sets. Never a panic, and
//! never an answer larger than the memory budget allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmetrics::exporters::promql::peer::{proto, requested_selections};
use meshmetrics::model::Labels;
use meshmetrics::promql::Compat;
use meshmetrics::store::{SelectBounds, Store};
use prost::Message;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BUDGET: usize = 1 << 20;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let store = Store::new(0);
        for i in 0..50i64 {
            let pod = format!("pod-{i}");
            let labels = Labels::from_pairs([
                ("__name__", "istio_requests_total"),
                ("pod", pod.as_str()),
                ("response_code", if i % 5 == 0 { "503" } else { "200" }),
            ]);
            for t in 0..40i64 {
                let _ = store.append(&labels, t * 15_000, (t * i) as f64);
            }
        }
        store
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = proto::SelectRequest::decode(data) else {
        return;
    };
    let Ok(selections) = requested_selections(&req.selectors, Compat::V3) else {
        return;
    };
    let bounds = SelectBounds {
        max_bytes: BUDGET,
        deadline: Some(Instant::now() + Duration::from_secs(2)),
        ..Default::default()
    };
    for s in &selections {
        if let Ok(found) = store().select_bounded(&s.matchers, s.mint, s.maxt, true, &bounds) {
            let held: usize = found.iter().map(|f| f.samples.len()).sum();
            assert!(meshmetrics::promql::memory_cost(held, found.len()) <= BUDGET * 2);
        }
    }
});
