//! The OTLP receiver's decoding of a pushed protobuf body: the decoded-size estimate walks
//! any bytes without recursion or panic, a body it accepts within the budget is decoded by
//! prost and translated to the model, and the estimate is never below what prost built.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmetrics::model::Interner;
use meshmetrics::receivers::otlp::{budget, translate};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

const BUDGET: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Some(estimate) = budget::decoded_size(data) else {
        return;
    };
    if estimate > BUDGET {
        return;
    }
    let Ok(req) = ExportMetricsServiceRequest::decode(data) else {
        return;
    };
    // A floor on what prost allocated: one struct per resource, scope, metric and point.
    let structs: usize = req
        .resource_metrics
        .iter()
        .map(|r| {
            1 + r
                .scope_metrics
                .iter()
                .map(|s| 1 + s.metrics.len())
                .sum::<usize>()
        })
        .sum();
    assert!(estimate >= structs * 64, "estimate {estimate} for {structs} structs");
    let _ = translate::translate(&req, &Interner::default());
});
