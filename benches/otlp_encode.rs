//! Prometheus model → OTLP: mapping, protobuf encoding and compression of an Istio scrape.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmetrics::exporters::otlp::encode::encode_to;
use meshmetrics::model::exposition::{Entry, Format, Parser};
use meshmetrics::model::{Labels, MetricFamily, MetricKind, Metrics, ResourceMetrics, Sample};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

/// The Istio sample as the scrape loop would hand it over.
fn istio_metrics() -> Metrics {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpora/envoy-istio-samples/datadog/istio-1.11.4-sidecar-merged.txt");
    let body = std::fs::read(p).expect("istio sample");
    let mut parser = Parser::new(&body, Format::Text);
    let mut kinds: HashMap<String, MetricKind> = HashMap::new();
    let mut fams: Vec<MetricFamily> = Vec::new();
    while let Ok(Some(e)) = parser.next_entry() {
        match e {
            Entry::Type { name, kind } => {
                kinds.insert(name.to_string(), kind);
            }
            Entry::Sample(s) => {
                let base = ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .find_map(|suf| s.name.strip_suffix(suf).filter(|b| kinds.contains_key(*b)))
                    .unwrap_or(s.name);
                let kind = kinds.get(base).copied().unwrap_or(MetricKind::Unknown);
                let labels = Labels::from_pairs(parser.labels().iter().map(|l| {
                    (
                        parser.label_name(l).to_string(),
                        parser.label_value(l).into_owned(),
                    )
                }));
                let sample = Sample {
                    name: Arc::from(s.name),
                    labels,
                    value: s.value,
                    timestamp_ms: 1_700_000_000_000,
                };
                match fams.iter_mut().find(|f| &*f.name == base) {
                    Some(f) => f.samples.push(sample),
                    None => fams.push(MetricFamily {
                        name: Arc::from(base),
                        kind,
                        help: Arc::from(""),
                        unit: Arc::from(""),
                        samples: vec![sample],
                    }),
                }
            }
            _ => {}
        }
    }
    Metrics {
        resources: vec![ResourceMetrics {
            resource: vec![
                ("service.name".into(), "envoy".into()),
                ("service.instance.id".into(), "10.0.0.1:15090".into()),
            ],
            scope_name: "meshmetrics".into(),
            scope_version: "0".into(),
            families: fams,
        }],
    }
}

fn bench(c: &mut Criterion) {
    let m = istio_metrics();
    let points = m.point_count() as u64;
    let mut g = c.benchmark_group("otlp/istio-sidecar");
    g.throughput(Throughput::Elements(points));
    // Mapping and protobuf writing are one pass.
    let mut raw = Vec::new();
    g.bench_function("map+protobuf", |b| {
        b.iter(|| {
            raw.clear();
            encode_to(black_box(&m), &mut raw);
            black_box(raw.len())
        })
    });
    g.bench_function("zstd-1", |b| {
        b.iter(|| black_box(zstd::bulk::compress(black_box(&raw), 1).expect("zstd")))
    });
    g.bench_function("gzip-fast", |b| {
        b.iter(|| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(black_box(&raw)).expect("gzip");
            black_box(e.finish().expect("gzip"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
