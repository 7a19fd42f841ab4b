//! The query façade's hot paths without HTTP: appending scrapes to the store, and evaluating
//! Flagger's builtin checks and a heavy aggregation over a 15-minute window.

#[path = "support/workload.rs"]
mod workload;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meshmetrics::model::exposition::{Entry, Format, Parser};
use meshmetrics::model::{
    Interner, Label, Labels, MetricFamily, MetricKind, Metrics, ResourceMetrics, Sample,
};
use meshmetrics::promql::{
    explain, explain_loaded, instant_query, instant_query_loaded, range_query, Compat, EvalOptions,
};
use meshmetrics::store::Store;
use std::hint::black_box;
use std::sync::Arc;

/// Sidecars in the store: `MM_QUERY_SIDECARS` (default 4; the façade benchmark uses 30).
fn sidecar_count() -> usize {
    std::env::var("MM_QUERY_SIDECARS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}
const STEPS: u64 = 180;

/// One scrape of a sidecar as the scrape loop hands it to the pipeline: sample labels
/// interned as the loop interns them, `job`/`instance` on the resource.
fn scrape(body: &str, instance: &str, t: i64, interner: &Interner) -> Metrics {
    let mut p = Parser::new(body.as_bytes(), Format::Text);
    let mut samples = Vec::new();
    while let Ok(Some(e)) = p.next_entry() {
        if let Entry::Sample(s) = e {
            let v: Vec<Label> = p
                .labels()
                .iter()
                .map(|l| interner.label(p.label_name(l), &p.label_value(l)))
                .collect();
            samples.push(Sample {
                name: Arc::from(s.name),
                labels: Labels::from_vec(v),
                value: s.value,
                timestamp_ms: t,
            });
        }
    }
    Metrics {
        resources: vec![ResourceMetrics {
            resource: vec![
                ("service.name".into(), "mesh".into()),
                ("service.instance.id".into(), instance.into()),
            ],
            scope_name: String::new(),
            scope_version: String::new(),
            families: vec![MetricFamily {
                name: Arc::from("mixed"),
                kind: MetricKind::Unknown,
                help: Arc::from(""),
                unit: Arc::from(""),
                samples,
            }],
        }],
    }
}

/// The same scrape at another time with other values: one label set, as the scrape cache
/// keeps it across scrapes.
fn restamped(first: &Metrics, values: &Metrics, t: i64) -> Metrics {
    let mut m = first.clone();
    let fresh = values.resources[0].families[0].samples.iter();
    for (s, v) in m.resources[0].families[0].samples.iter_mut().zip(fresh) {
        s.value = v.value;
        s.timestamp_ms = t;
    }
    m
}

fn bench(c: &mut Criterion) {
    let sidecars: Vec<workload::Sidecar> =
        (0..sidecar_count()).map(workload::Sidecar::new).collect();
    let store = Store::new(0);
    let interner = Interner::default();
    let mut body = String::new();
    let instance = |i: usize| format!("10.0.0.{i}:15090");
    let first: Vec<Metrics> = sidecars
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.render(1, None, &mut body);
            scrape(&body, &instance(i), 0, &interner)
        })
        .collect();
    // Every scrape of every sidecar, as the pipeline would hand them over.
    let mut per_step: Vec<Vec<Metrics>> = Vec::new();
    for step in 1..=STEPS {
        let t = (step as i64 - 1) * 5000;
        per_step.push(
            sidecars
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.render(step, None, &mut body);
                    let values = scrape(&body, &instance(i), t, &interner);
                    restamped(&first[i], &values, t)
                })
                .collect(),
        );
    }
    for scrapes in &per_step {
        for m in scrapes {
            store.append_metrics(m);
        }
    }
    let series: usize = first.iter().map(Metrics::point_count).sum();
    println!(
        "store: {series} series × {STEPS} samples, {} bytes of chunks",
        store.chunk_bytes()
    );

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(series as u64));
    g.bench_function("append one scrape of every sidecar", |b| {
        let extra = Store::new(0);
        let mut step = 0usize;
        let mut batches = per_step.iter().cycle();
        b.iter_batched(
            || {
                // Later times than any before, for the same series.
                step += 1;
                let t = step as i64 * 5000;
                let scrapes = batches.next().expect("cycles");
                scrapes
                    .iter()
                    .zip(&first)
                    .map(|(m, f)| restamped(f, m, t))
                    .collect::<Vec<_>>()
            },
            |scrapes| {
                for m in &scrapes {
                    extra.append_metrics(m);
                }
                scrapes
            },
            BatchSize::LargeInput,
        )
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
        // The answer, then its warnings with every selection read from the store again.
        g.bench_function(format!("{name} + warnings"), |b| {
            b.iter(|| {
                let v = instant_query(&store, &expr, at, &opts, &never).expect("evaluates");
                black_box(explain(&store, &expr, at, &v, &opts))
            })
        });
        // What the API does for every instant answer it gives without peers: the warnings
        // read what the evaluation loaded (for a healthy answer, nothing more).
        g.bench_function(format!("{name} + warnings from its selections"), |b| {
            b.iter(|| {
                let (v, loaded) =
                    instant_query_loaded(&store, &expr, at, &opts, &never).expect("evaluates");
                black_box(explain_loaded(&store, &expr, at, &v, &opts, &loaded))
            })
        });
    }
    // A dashboard panel over the last hour at a 15 s step: the window holds its last 15
    // minutes, so most steps find no samples at all.
    let panel = promql_parser::parser::parse(
        "sum by (destination_workload) (rate(istio_requests_total{reporter=\"destination\"}[1m]))",
    )
    .expect("parses");
    g.bench_function("dashboard-panel 1h range at 15s", |b| {
        b.iter(|| {
            black_box(
                range_query(&store, &panel, at - 3_600_000, at, 15_000, &opts, &never)
                    .expect("evaluates"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
