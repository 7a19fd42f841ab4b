//! Prometheus model → OTLP metrics, following the OTel spec's
//! "Prometheus and OpenMetrics compatibility" rules:
//! counter → monotonic cumulative Sum; gauge/unknown → Gauge; classic histogram → Histogram
//! (the +Inf bound dropped, its count kept; no `_count` → dropped; no `_sum` → sum unset);
//! summary → Summary; info/stateset → non-monotonic Sum; `_created` → start time;
//! `target_info` → resource attributes; `otel_scope_*` labels → scope;
//! staleness marker → a point flagged NoRecordedValue with no value.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pb;
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::HashMap;

use crate::model::{
    is_stale_nan, Labels, MetricFamily, MetricKind, Metrics, ResourceMetrics, Sample,
};

const NO_RECORDED_VALUE: u32 = 1;
const CUMULATIVE: i32 = pb::AggregationTemporality::Cumulative as i32;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        key_strindex: 0,
    }
}

fn ms_to_ns(ms: i64) -> u64 {
    if ms <= 0 {
        0
    } else {
        ms as u64 * 1_000_000
    }
}

/// `_created` values are float seconds; like Prometheus, keep millisecond precision
/// (a direct `* 1e9` would show float noise in the nanoseconds).
fn secs_to_ns(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).round() as u64 * 1_000_000
    } else {
        0
    }
}

/// Labels that are not data-point attributes.
fn is_structural(name: &str, kind: MetricKind) -> bool {
    match name {
        "otel_scope_name" | "otel_scope_version" => true,
        "le" => matches!(kind, MetricKind::Histogram | MetricKind::GaugeHistogram),
        "quantile" => kind == MetricKind::Summary,
        _ => false,
    }
}

fn attributes(labels: &Labels, kind: MetricKind) -> Vec<KeyValue> {
    labels
        .iter()
        .filter(|l| !is_structural(&l.name, kind))
        .map(|l| kv(&l.name, &l.value))
        .collect()
}

/// Identity of a data point: its labels without the structural ones.
fn point_key(labels: &Labels, kind: MetricKind) -> Vec<(&str, &str)> {
    labels
        .iter()
        .filter(|l| !is_structural(&l.name, kind))
        .map(|l| (&*l.name, &*l.value))
        .collect()
}

fn scope_of(s: &Sample) -> (Option<&str>, Option<&str>) {
    (
        s.labels.get("otel_scope_name"),
        s.labels.get("otel_scope_version"),
    )
}

/// Encodes a batch as one export request.
pub fn encode(metrics: &Metrics) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: metrics.resources.iter().map(encode_resource).collect(),
    }
}

fn is_target_info(f: &MetricFamily) -> bool {
    &*f.name == "target_info" || (&*f.name == "target" && f.kind == MetricKind::Info)
}

fn encode_resource(r: &ResourceMetrics) -> pb::ResourceMetrics {
    let mut resource: Vec<KeyValue> = r.resource.iter().map(|(k, v)| kv(k, v)).collect();
    // target_info's labels describe the resource; the metric itself is not exported.
    for f in r.families.iter().filter(|f| is_target_info(f)) {
        if let Some(s) = f.samples.iter().find(|s| !s.is_stale()) {
            for l in s.labels.iter() {
                if !resource.iter().any(|kv| kv.key == *l.name) {
                    resource.push(kv(&l.name, &l.value));
                }
            }
        }
    }
    // Scopes: the receiver's own, plus one per distinct otel_scope_name/version.
    let mut scopes: Vec<((String, String), Vec<pb::Metric>)> = Vec::new();
    let default_scope = (r.scope_name.clone(), r.scope_version.clone());
    for f in r.families.iter().filter(|f| !is_target_info(f)) {
        let has_scope_labels = f.samples.iter().any(|s| scope_of(s).0.is_some());
        if !has_scope_labels {
            if let Some(m) = encode_family(f, &f.samples.iter().collect::<Vec<_>>()) {
                push_scoped(&mut scopes, default_scope.clone(), m);
            }
            continue;
        }
        let mut by_scope: Vec<((String, String), Vec<&Sample>)> = Vec::new();
        for s in &f.samples {
            let key = match scope_of(s) {
                (Some(n), v) => (n.to_string(), v.unwrap_or("").to_string()),
                (None, _) => default_scope.clone(),
            };
            match by_scope.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(s),
                None => by_scope.push((key, vec![s])),
            }
        }
        for (key, samples) in by_scope {
            if let Some(m) = encode_family(f, &samples) {
                push_scoped(&mut scopes, key, m);
            }
        }
    }
    pb::ResourceMetrics {
        resource: Some(Resource {
            attributes: resource,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }),
        scope_metrics: scopes
            .into_iter()
            .map(|((name, version), metrics)| pb::ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name,
                    version,
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                metrics,
                schema_url: String::new(),
            })
            .collect(),
        schema_url: String::new(),
    }
}

fn push_scoped(
    scopes: &mut Vec<((String, String), Vec<pb::Metric>)>,
    key: (String, String),
    m: pb::Metric,
) {
    match scopes.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => v.push(m),
        None => scopes.push((key, vec![m])),
    }
}

fn number_point(s: &Sample, kind: MetricKind, start_ns: u64) -> pb::NumberDataPoint {
    let stale = is_stale_nan(s.value);
    pb::NumberDataPoint {
        attributes: attributes(&s.labels, kind),
        start_time_unix_nano: start_ns,
        time_unix_nano: ms_to_ns(s.timestamp_ms),
        exemplars: Vec::new(),
        flags: if stale { NO_RECORDED_VALUE } else { 0 },
        value: if stale {
            None
        } else {
            Some(pb::number_data_point::Value::AsDouble(s.value))
        },
    }
}

fn metric(f: &MetricFamily, name: String, data: pb::metric::Data) -> pb::Metric {
    pb::Metric {
        name,
        description: f.help.to_string(),
        unit: f.unit.to_string(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

/// Start times from `<family>_created` samples, by point identity.
fn created_times<'a>(
    f: &MetricFamily,
    samples: &[&'a Sample],
) -> HashMap<Vec<(&'a str, &'a str)>, u64> {
    let created = format!(
        "{}_created",
        f.name.strip_suffix("_total").unwrap_or(&f.name)
    );
    samples
        .iter()
        .filter(|s| *s.name == *created && !s.is_stale())
        .map(|s| (point_key(&s.labels, f.kind), secs_to_ns(s.value)))
        .collect()
}

fn encode_family(f: &MetricFamily, samples: &[&Sample]) -> Option<pb::Metric> {
    if samples.is_empty() {
        return None;
    }
    match f.kind {
        MetricKind::Gauge | MetricKind::Unknown | MetricKind::GaugeHistogram => {
            // Unknown families hold one name; gauge histograms have no OTLP equivalent that
            // Honeycomb accepts, so their series travel as gauges under their own names.
            if f.kind == MetricKind::GaugeHistogram {
                return None;
            }
            let points = samples.iter().map(|s| number_point(s, f.kind, 0)).collect();
            Some(metric(
                f,
                f.name.to_string(),
                pb::metric::Data::Gauge(pb::Gauge {
                    data_points: points,
                }),
            ))
        }
        MetricKind::Counter | MetricKind::Info | MetricKind::StateSet => {
            let created = created_times(f, samples);
            let points: Vec<pb::NumberDataPoint> = samples
                .iter()
                .filter(|s| !s.name.ends_with("_created") || f.kind != MetricKind::Counter)
                .map(|s| {
                    let start = created
                        .get(&point_key(&s.labels, f.kind))
                        .copied()
                        .unwrap_or(0);
                    number_point(s, f.kind, start)
                })
                .collect();
            if points.is_empty() {
                return None;
            }
            Some(metric(
                f,
                f.otlp_name(),
                pb::metric::Data::Sum(pb::Sum {
                    data_points: points,
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: f.kind == MetricKind::Counter,
                }),
            ))
        }
        MetricKind::Histogram => encode_histogram(f, samples),
        MetricKind::Summary => encode_summary(f, samples),
    }
}

#[derive(Default)]
struct Group<'a> {
    attrs: Option<&'a Labels>,
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    quantiles: Vec<(f64, f64)>,
    created: u64,
    ts: i64,
    stale: bool,
}

fn group<'a>(f: &MetricFamily, samples: &[&'a Sample]) -> Vec<Group<'a>> {
    let base = &*f.name;
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut index: HashMap<Vec<(&'a str, &'a str)>, usize> = HashMap::new();
    for s in samples {
        let key = point_key(&s.labels, f.kind);
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Group::default());
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.attrs.get_or_insert(&s.labels);
        g.ts = g.ts.max(s.timestamp_ms);
        if s.is_stale() {
            g.stale = true;
            continue;
        }
        let suffix = s.name.strip_prefix(base).unwrap_or("");
        match suffix {
            "_bucket" => {
                if let Some(le) = s.labels.get("le").and_then(parse_bound) {
                    g.buckets.push((le, s.value));
                }
            }
            "_count" => g.count = Some(s.value),
            "_sum" => g.sum = Some(s.value),
            "_created" => g.created = secs_to_ns(s.value),
            "" => {
                if let Some(q) = s.labels.get("quantile").and_then(parse_bound) {
                    g.quantiles.push((q, s.value));
                }
            }
            _ => {}
        }
    }
    groups
}

fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

fn encode_histogram(f: &MetricFamily, samples: &[&Sample]) -> Option<pb::Metric> {
    let mut points = Vec::new();
    for mut g in group(f, samples) {
        let attrs = g.attrs.map(|l| attributes(l, f.kind)).unwrap_or_default();
        if g.stale {
            points.push(pb::HistogramDataPoint {
                attributes: attrs,
                time_unix_nano: ms_to_ns(g.ts),
                flags: NO_RECORDED_VALUE,
                ..Default::default()
            });
            continue;
        }
        // A histogram without _count cannot be represented.
        let Some(count) = g.count else { continue };
        g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bounds = Vec::new();
        let mut counts = Vec::new();
        let mut prev = 0f64;
        for &(le, cum) in &g.buckets {
            if le.is_infinite() {
                continue;
            }
            bounds.push(le);
            counts.push((cum - prev).max(0.0) as u64);
            prev = cum.max(prev);
        }
        // The +Inf bucket: whatever the count holds beyond the last finite bound.
        counts.push((count - prev).max(0.0) as u64);
        points.push(pb::HistogramDataPoint {
            attributes: attrs,
            start_time_unix_nano: g.created,
            time_unix_nano: ms_to_ns(g.ts),
            count: count.max(0.0) as u64,
            sum: g.sum,
            bucket_counts: counts,
            explicit_bounds: bounds,
            exemplars: Vec::new(),
            flags: 0,
            min: None,
            max: None,
        });
    }
    if points.is_empty() {
        return None;
    }
    Some(metric(
        f,
        f.name.to_string(),
        pb::metric::Data::Histogram(pb::Histogram {
            data_points: points,
            aggregation_temporality: CUMULATIVE,
        }),
    ))
}

fn encode_summary(f: &MetricFamily, samples: &[&Sample]) -> Option<pb::Metric> {
    let mut points = Vec::new();
    for mut g in group(f, samples) {
        let attrs = g.attrs.map(|l| attributes(l, f.kind)).unwrap_or_default();
        if g.stale {
            points.push(pb::SummaryDataPoint {
                attributes: attrs,
                time_unix_nano: ms_to_ns(g.ts),
                flags: NO_RECORDED_VALUE,
                ..Default::default()
            });
            continue;
        }
        let Some(count) = g.count else { continue };
        g.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.push(pb::SummaryDataPoint {
            attributes: attrs,
            start_time_unix_nano: g.created,
            time_unix_nano: ms_to_ns(g.ts),
            count: count.max(0.0) as u64,
            sum: g.sum.unwrap_or(0.0),
            quantile_values: g
                .quantiles
                .iter()
                .map(
                    |&(quantile, value)| pb::summary_data_point::ValueAtQuantile {
                        quantile,
                        value,
                    },
                )
                .collect(),
            flags: 0,
        });
    }
    if points.is_empty() {
        return None;
    }
    Some(metric(
        f,
        f.name.to_string(),
        pb::metric::Data::Summary(pb::Summary {
            data_points: points,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stale_nan;
    use std::sync::Arc;

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
        encode(&m).resource_metrics.remove(0)
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
}
