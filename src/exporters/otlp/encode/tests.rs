//! The encoder against prost's own encoding of the same messages, and the mapping's rules.

use super::*;
use crate::model::stale_nan;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pb;
use prost::Message;
use std::sync::Arc;

/// The request as prost decodes it.
fn encode(metrics: &Metrics) -> ExportMetricsServiceRequest {
    let mut bytes = Vec::new();
    encode_to(metrics, &mut bytes);
    ExportMetricsServiceRequest::decode(bytes.as_slice()).expect("a valid request")
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        key_strindex: 0,
    }
}

fn s(name: &str, labels: &[(&str, &str)], v: f64) -> Sample {
    Sample {
        name: Arc::from(name),
        labels: Labels::from_pairs(labels.iter().copied()),
        value: v,
        timestamp_ms: 1_700_000_000_000,
    }
}

fn fam(name: &str, kind: MetricKind, samples: Vec<Sample>) -> MetricFamily {
    MetricFamily {
        name: Arc::from(name),
        kind,
        help: Arc::from("help"),
        unit: Arc::from(""),
        samples,
    }
}

fn one(families: Vec<MetricFamily>) -> pb::ResourceMetrics {
    let m = Metrics {
        resources: vec![ResourceMetrics {
            resource: vec![("service.name".into(), "job".into())],
            scope_name: "scope".into(),
            scope_version: "1".into(),
            families,
        }],
    };
    // The writer's bytes are exactly what prost writes for the same message: canonical
    // varints, fields in order, defaults left out.
    let mut bytes = Vec::new();
    encode_to(&m, &mut bytes);
    let decoded = encode(&m);
    assert_eq!(decoded.encode_to_vec(), bytes, "not prost's encoding");
    decoded
        .resource_metrics
        .into_iter()
        .next()
        .expect("one resource")
}

#[test]
fn summaries_stale_points_and_long_attributes() {
    let long = "v".repeat(300); // lengths past one varint byte
    let r = one(vec![
        fam(
            "rpc",
            MetricKind::Summary,
            vec![
                s("rpc", &[("quantile", "0"), ("m", &long)], 0.0),
                s("rpc", &[("quantile", "0.99"), ("m", &long)], 7.5),
                s("rpc_sum", &[("m", &long)], 0.0),
                s("rpc_count", &[("m", &long)], 3.0),
                s("rpc", &[("quantile", "0.5"), ("m", "gone")], stale_nan()),
            ],
        ),
        fam(
            "h",
            MetricKind::Histogram,
            vec![s("h_bucket", &[("le", "+Inf"), ("x", "")], stale_nan())],
        ),
    ]);
    let ms = &r.scope_metrics[0].metrics;
    let Some(pb::metric::Data::Summary(sm)) = &ms[0].data else {
        panic!("not a summary")
    };
    let p = &sm.data_points[0];
    assert_eq!((p.count, p.sum), (3, 0.0));
    assert_eq!(p.quantile_values.len(), 2);
    assert_eq!(p.quantile_values[1].quantile, 0.99);
    assert_eq!(p.quantile_values[1].value, 7.5);
    assert_eq!(p.attributes, vec![kv("m", &long)]);
    assert_eq!(sm.data_points[1].flags, 1);
    let Some(pb::metric::Data::Histogram(h)) = &ms[1].data else {
        panic!("not a histogram")
    };
    assert_eq!(h.data_points[0].flags, 1);
    assert!(h.data_points[0].bucket_counts.is_empty());
}

#[test]
fn histogram_buckets_become_per_bucket_counts() {
    let r = one(vec![fam(
        "rq",
        MetricKind::Histogram,
        vec![
            s("rq_bucket", &[("le", "0.5"), ("a", "x")], 1.0),
            s("rq_bucket", &[("le", "1"), ("a", "x")], 3.0),
            s("rq_bucket", &[("le", "+Inf"), ("a", "x")], 4.0),
            s("rq_sum", &[("a", "x")], 2.5),
            s("rq_count", &[("a", "x")], 4.0),
            s("rq_created", &[("a", "x")], 1_600_000_000.5),
        ],
    )]);
    let m = &r.scope_metrics[0].metrics[0];
    let Some(pb::metric::Data::Histogram(h)) = &m.data else {
        panic!("not a histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds, vec![0.5, 1.0]);
    assert_eq!(p.bucket_counts, vec![1, 2, 1]);
    assert_eq!((p.count, p.sum), (4, Some(2.5)));
    assert_eq!(p.start_time_unix_nano, 1_600_000_000_500_000_000);
    assert_eq!(p.attributes, vec![kv("a", "x")]);
}

#[test]
fn scope_labels_found_on_any_series_split_the_family() {
    let lib = [("otel_scope_name", "lib"), ("a", "y")];
    let r = one(vec![
        fam(
            "rq",
            MetricKind::Histogram,
            vec![
                s("rq_bucket", &[("le", "1"), ("a", "x")], 1.0),
                s("rq_bucket", &[("le", "+Inf"), ("a", "x")], 2.0),
                s("rq_count", &[("a", "x")], 2.0),
                // A point whose series carry a scope, after an unscoped bucket.
                s("rq_bucket", &[("le", "1"), ("a", "y")], 3.0),
                s("rq_bucket", &[("le", "+Inf"), lib[0], lib[1]], 4.0),
                s("rq_count", &lib, 4.0),
            ],
        ),
        fam(
            "c",
            MetricKind::Counter,
            vec![
                s("c_total", &[("k", "v")], 5.0),
                s("c_created", &[("k", "v"), ("otel_scope_name", "lib")], 9.0),
            ],
        ),
    ]);
    let names: Vec<&str> = r
        .scope_metrics
        .iter()
        .map(|s| s.scope.as_ref().map_or("", |s| s.name.as_str()))
        .collect();
    assert_eq!(names, vec!["scope", "lib"]);
    let histogram_points = |i: usize| match &r.scope_metrics[i].metrics[0].data {
        Some(pb::metric::Data::Histogram(h)) => h.data_points.clone(),
        other => panic!("not a histogram: {other:?}"),
    };
    // The unscoped bucket of point y has no count: only x stays in the default scope.
    let default = histogram_points(0);
    assert_eq!(default.len(), 1);
    assert_eq!(default[0].attributes, vec![kv("a", "x")]);
    let scoped = histogram_points(1);
    assert_eq!((scoped.len(), scoped[0].count), (1, 4));
    assert_eq!(scoped[0].attributes, vec![kv("a", "y")]);
    // The counter's start time was in another scope: its point has none.
    let Some(pb::metric::Data::Sum(c)) = &r.scope_metrics[0].metrics[1].data else {
        panic!("the counter stays in the default scope")
    };
    assert_eq!(c.data_points[0].start_time_unix_nano, 0);
    assert_eq!(
        r.scope_metrics[1].metrics.len(),
        1,
        "no counter point in lib"
    );
}

/// Resources of one request, each with scopes of its own, encode as each would alone:
/// the scope buffers handed from one to the next carry nothing over.
#[test]
fn each_resource_encodes_as_when_alone() {
    let resource = |job: &str, scoped: &str| ResourceMetrics {
        resource: vec![("service.name".into(), job.into())],
        scope_name: "scope".into(),
        scope_version: "1".into(),
        families: vec![fam(
            "c",
            MetricKind::Counter,
            vec![
                s("c_total", &[("k", job)], 5.0),
                s("c_total", &[("k", "w"), ("otel_scope_name", scoped)], 6.0),
            ],
        )],
    };
    let alone = |r: ResourceMetrics| {
        let mut bytes = Vec::new();
        encode_to(&Metrics { resources: vec![r] }, &mut bytes);
        bytes
    };
    let (a, b) = (resource("first", "lib"), resource("second", "other"));
    let mut both = Vec::new();
    encode_to(
        &Metrics {
            resources: vec![resource("first", "lib"), resource("second", "other")],
        },
        &mut both,
    );
    assert_eq!(both, [alone(a), alone(b)].concat());
}

#[test]
fn histogram_without_count_is_dropped_without_sum_unset() {
    let r = one(vec![
        fam(
            "a",
            MetricKind::Histogram,
            vec![s("a_bucket", &[("le", "+Inf")], 1.0)],
        ),
        fam(
            "b",
            MetricKind::Histogram,
            vec![
                s("b_bucket", &[("le", "+Inf")], 1.0),
                s("b_count", &[], 1.0),
            ],
        ),
    ]);
    let ms = &r.scope_metrics[0].metrics;
    assert_eq!(ms.len(), 1);
    let Some(pb::metric::Data::Histogram(h)) = &ms[0].data else {
        panic!()
    };
    assert_eq!(h.data_points[0].sum, None);
}

#[test]
fn counters_staleness_target_info_scope() {
    let r = one(vec![
        fam(
            "c",
            MetricKind::Counter,
            vec![
                s("c_total", &[("k", "v")], 5.0),
                s("c_created", &[("k", "v")], 100.0),
            ],
        ),
        fam(
            "g",
            MetricKind::Gauge,
            vec![s(
                "g",
                &[("otel_scope_name", "lib"), ("otel_scope_version", "2")],
                stale_nan(),
            )],
        ),
        fam(
            "target_info",
            MetricKind::Gauge,
            vec![s("target_info", &[("k8s_cluster", "prod")], 1.0)],
        ),
    ]);
    let res = r.resource.as_ref().expect("resource");
    assert!(res.attributes.contains(&kv("k8s_cluster", "prod")));
    assert_eq!(r.scope_metrics.len(), 2);
    let c = &r.scope_metrics[0].metrics[0];
    assert_eq!(c.name, "c_total");
    let Some(pb::metric::Data::Sum(sum)) = &c.data else {
        panic!()
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.data_points.len(), 1);
    assert_eq!(sum.data_points[0].start_time_unix_nano, 100_000_000_000);
    let lib = &r.scope_metrics[1];
    assert_eq!(lib.scope.as_ref().map(|s| s.name.as_str()), Some("lib"));
    let Some(pb::metric::Data::Gauge(g)) = &lib.metrics[0].data else {
        panic!()
    };
    assert_eq!(g.data_points[0].flags, 1);
    assert_eq!(g.data_points[0].value, None);
    assert!(g.data_points[0].attributes.is_empty());
}
