//! Exposition parsing throughput on real scrapes, with `prometheus-parse` as the baseline.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshmetrics::model::exposition::{Entry, Format, Parser};
use std::hint::black_box;
use std::io::BufRead;

fn corpus(path: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpora")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every line parsed in full, labels included (the parser as the scrape loop used it before
/// labels were deferred).
fn ours(body: &[u8]) -> usize {
    scan(Parser::new(body, Format::Text))
}

/// Label sets only delimited: what the scrape loop does for series it already knows.
fn ours_lazy(body: &[u8]) -> usize {
    scan(Parser::new(body, Format::Text).with_lazy_labels())
}

fn scan(mut p: Parser<'_>) -> usize {
    let mut n = 0;
    while let Ok(Some(e)) = p.next_entry() {
        if let Entry::Sample(s) = e {
            // Touch what the scrape loop touches on a cache hit.
            n += s.series.len() + (s.value as usize & 1);
        }
    }
    n
}

/// Lengths of every sample's series and name, as the scrape loop knows them from the last
/// scrape of the same target.
fn known_lengths(body: &[u8]) -> Vec<(usize, usize)> {
    let mut p = Parser::new(body, Format::Text).with_lazy_labels();
    let mut out = Vec::new();
    while let Ok(Some(e)) = p.next_entry() {
        if let Entry::Sample(s) = e {
            out.push((s.series.len(), s.name.len()));
        }
    }
    out
}

/// Each series told in advance (`expect_series`): the scrape loop's steady state, where
/// label sets are taken by length instead of scanned.
fn ours_guessed(body: &[u8], lengths: &[(usize, usize)]) -> usize {
    let mut p = Parser::new(body, Format::Text).with_lazy_labels();
    let mut n = 0;
    let mut next = lengths.iter();
    loop {
        if let Some(&(series, name)) = next.clone().next() {
            p.expect_series(series, name);
        }
        match p.next_entry() {
            Ok(Some(Entry::Sample(s))) => {
                next.next();
                n += s.series.len() + s.name.len() + (s.value as usize & 1);
            }
            Ok(Some(_)) => {}
            _ => return n,
        }
    }
}

fn ours_with_labels(body: &[u8]) -> usize {
    let mut p = Parser::new(body, Format::Text);
    let mut n = 0;
    while let Ok(Some(e)) = p.next_entry() {
        if let Entry::Sample(_) = e {
            for l in p.labels() {
                n += p.label_name(l).len() + p.label_value(l).len();
            }
        }
    }
    n
}

fn baseline(body: &[u8]) -> usize {
    let lines = body.lines();
    prometheus_parse::Scrape::parse(lines)
        .map(|s| s.samples.len())
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let inputs = [
        (
            "istio-sidecar",
            corpus("envoy-istio-samples/datadog/istio-1.11.4-sidecar-merged.txt"),
            461u64,
        ),
        (
            "node-exporter",
            corpus("exporter-samples/node_exporter/e2e-output.txt"),
            3026,
        ),
    ];
    for (name, body, samples) in &inputs {
        let mut g = c.benchmark_group(format!("parse/{name}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("meshmetrics", "offsets"),
            body,
            |b, body| b.iter(|| ours(black_box(body))),
        );
        g.bench_with_input(
            BenchmarkId::new("meshmetrics", "known-series"),
            body,
            |b, body| b.iter(|| ours_lazy(black_box(body))),
        );
        g.bench_with_input(
            BenchmarkId::new("meshmetrics", "labels"),
            body,
            |b, body| b.iter(|| ours_with_labels(black_box(body))),
        );
        g.bench_with_input(
            BenchmarkId::new("prometheus-parse", "baseline"),
            body,
            |b, body| b.iter(|| baseline(black_box(body))),
        );
        g.finish();
        let mut g = c.benchmark_group(format!("parse-samples/{name}"));
        g.throughput(Throughput::Elements(*samples));
        g.bench_with_input(
            BenchmarkId::new("meshmetrics", "offsets"),
            body,
            |b, body| b.iter(|| ours(black_box(body))),
        );
        g.bench_with_input(
            BenchmarkId::new("meshmetrics", "known-series"),
            body,
            |b, body| b.iter(|| ours_lazy(black_box(body))),
        );
        let lengths = known_lengths(body);
        g.bench_with_input(
            BenchmarkId::new("meshmetrics", "expected-series"),
            body,
            |b, body| b.iter(|| ours_guessed(black_box(body), &lengths)),
        );
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
