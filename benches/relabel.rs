//! Relabeling cost: the Istio annotation rules on a pod target, and metric relabeling.

use criterion::{criterion_group, criterion_main, Criterion};
use meshmetrics::model::relabel::{relabel, LabelMap, RelabelConfig};
use std::hint::black_box;

fn rules(yaml: &str) -> Vec<RelabelConfig> {
    serde_saphyr::from_str(yaml).expect("rules")
}

fn bench(c: &mut Criterion) {
    let target_rules = rules(
        r#"
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
  action: keep
  regex: "true"
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
  target_label: __metrics_path__
  regex: (.+)
- source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
  regex: ([^:]+)(?::\d+)?;(\d+)
  replacement: $1:$2
  target_label: __address__
- action: labelmap
  regex: __meta_kubernetes_pod_label_(.+)
- source_labels: [__meta_kubernetes_namespace]
  target_label: namespace
- source_labels: [__meta_kubernetes_pod_name]
  target_label: pod
- action: hashmod
  source_labels: [__address__]
  modulus: 8
  target_label: __tmp_shard
"#,
    );
    let mut pod = LabelMap::new();
    for (k, v) in [
        ("__address__", "10.1.2.3:8080"),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
            "true",
        ),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_path",
            "/stats/prometheus",
        ),
        (
            "__meta_kubernetes_pod_annotation_prometheus_io_port",
            "15020",
        ),
        ("__meta_kubernetes_namespace", "shop"),
        ("__meta_kubernetes_pod_name", "podinfo-7d9f8c6b5-x2x4z"),
        ("__meta_kubernetes_pod_label_app", "podinfo"),
        ("__meta_kubernetes_pod_label_version", "v1"),
        ("__meta_kubernetes_pod_label_pod_template_hash", "7d9f8c6b5"),
    ] {
        pod.insert(k.into(), v.into());
    }
    c.bench_function("relabel/istio-pod-target", |b| {
        b.iter(|| {
            let mut l = pod.clone();
            black_box(relabel(&mut l, black_box(&target_rules)))
        })
    });
    let metric_rules = rules(
        r#"
- source_labels: [__name__]
  regex: "istio_.*|envoy_cluster_upstream_rq.*|envoy_cluster_upstream_cx_active"
  action: keep
- regex: "source_principal|destination_principal|connection_security_policy"
  action: labeldrop
"#,
    );
    let mut series = LabelMap::new();
    series.insert("__name__".into(), "istio_requests_total".into());
    for i in 0..24 {
        series.insert(format!("label_{i}"), format!("value-{i}"));
    }
    series.insert(
        "source_principal".into(),
        "spiffe://cluster.local/ns/shop/sa/default".into(),
    );
    c.bench_function("relabel/istio-series-metric-rules", |b| {
        b.iter(|| {
            let mut l = series.clone();
            black_box(relabel(&mut l, black_box(&metric_rules)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
