//! The query façade's hot paths without HTTP: appending scrapes to the store, and evaluating
//! Flagger's builtin checks and a heavy aggregation over a 15-minute window.

#[path = "support/workload.rs"]
mod workload;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmetrics::model::{Interner, Label, Labels};
use meshmetrics::promql::{instant_query, Compat, EvalOptions};
use meshmetrics::receivers::prometheus::exposition::{Entry, Format, Parser};
use meshmetrics::store::Store;
use std::hint::black_box;

const SIDECARS: usize = 4;
const STEPS: u64 = 180;

/// Parses one rendered body into (labels, value) pairs with job/instance attached.
fn samples(body: &str, instance: &str, interner: &Interner) -> Vec<(Labels, f64)> {
    let mut p = Parser::new(body.as_bytes(), Format::Text);
    let mut out = Vec::new();
    while let Ok(Some(e)) = p.next_entry() {
        if let Entry::Sample(s) = e {
            // Interned as the scrape loop interns them, so the store holds what it would.
            let mut v: Vec<Label> = p
                .labels()
                .iter()
                .map(|l| interner.label(p.label_name(l), &p.label_value(l)))
                .collect();
            v.push(interner.label("__name__", s.name));
            v.push(interner.label("job", "mesh"));
            v.push(interner.label("instance", instance));
            out.push((Labels::from_vec(v), s.value));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let sidecars: Vec<workload::Sidecar> = (0..SIDECARS).map(workload::Sidecar::new).collect();
    let store = Store::new(0);
    let interner = Interner::default();
    let mut body = String::new();
    // Series labels once; values per step from a fresh render.
    let label_sets: Vec<Vec<Labels>> = sidecars
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.render(1, None, &mut body);
            samples(&body, &format!("10.0.0.{i}:15090"), &interner)
                .into_iter()
                .map(|(l, _)| l)
                .collect()
        })
        .collect();
    let mut per_step: Vec<Vec<Vec<f64>>> = Vec::new();
    for step in 1..=STEPS {
        per_step.push(
            sidecars
                .iter()
                .map(|s| {
                    s.render(step, None, &mut body);
                    samples(&body, "x", &interner)
                        .into_iter()
                        .map(|(_, v)| v)
                        .collect()
                })
                .collect(),
        );
    }
    for (step, values) in per_step.iter().enumerate() {
        let t = step as i64 * 5000;
        for (pod, vals) in values.iter().enumerate() {
            for (l, v) in label_sets[pod].iter().zip(vals) {
                let _ = store.append(l, t, *v);
            }
        }
    }
    let series: usize = label_sets.iter().map(Vec::len).sum();
    println!(
        "store: {series} series × {STEPS} samples, {} bytes of chunks",
        store.chunk_bytes()
    );

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(series as u64));
    g.bench_function("append one scrape of every sidecar", |b| {
        let extra = Store::new(0);
        let mut t = 0i64;
        b.iter(|| {
            t += 5000;
            for (pod, vals) in per_step[(t / 5000) as usize % per_step.len()]
                .iter()
                .enumerate()
            {
                for (l, v) in label_sets[pod].iter().zip(vals) {
                    let _ = extra.append(l, t, *v);
                }
            }
        })
    });
    g.finish();

    let opts = EvalOptions {
        compat: Compat::V2,
        ..Default::default()
    };
    let at = (STEPS as i64 - 1) * 5000;
    let never = || false;
    let queries = [
        ("flagger-success-rate", "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo-canary\",response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo-canary\"}[1m])) * 100"),
        ("flagger-p99-duration", "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_workload_namespace=\"test\",destination_workload=~\"podinfo-canary\"}[1m])) by (le))"),
        ("heavy-aggregation", "histogram_quantile(0.5, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket[1m])))"),
    ];
    let mut g = c.benchmark_group("query");
    for (name, q) in queries {
        let expr = promql_parser::parser::parse(q).expect("parses");
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(instant_query(&store, &expr, at, &opts, &never).expect("evaluates"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
