//! OTLP metrics → the internal model, by the OpenTelemetry spec's OTLP → Prometheus rules
//! (as Prometheus's own OTLP endpoint applies them with its default
//! `UnderscoreEscapingWithSuffixes` strategy): names escaped and suffixed with their unit and
//! `_total`, attributes → labels, monotonic cumulative sums → counters, histograms → classic
//! `_bucket`/`_sum`/`_count` series, summaries → quantiles, resource attributes → `target_info`.
//! What Prometheus cannot represent (delta temporality, exponential histograms) is refused
//! point by point, with a reason the sender gets back as a partial success.

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, NumberDataPoint,
};

use crate::model::format_value;
use crate::model::{stale_nan, Interner, Label, Labels, MetricFamily, MetricKind, Metrics};
use crate::model::{ResourceMetrics, Sample};

/// Data point flag: the source had no value at this time (OTLP's staleness signal).
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// The outcome of one request.
#[derive(Debug, Default)]
pub struct Translated {
    pub metrics: Metrics,
    /// Points that could not be represented, with the first reasons.
    pub rejected: u64,
    pub errors: Vec<String>,
}

impl Translated {
    fn reject(&mut self, points: usize, why: String) {
        self.rejected += points as u64;
        // A sender needs to know why, not every instance of it.
        if self.errors.len() < 5 && !self.errors.contains(&why) {
            self.errors.push(why);
        }
    }
}

/// What the metric becomes in Prometheus terms, which decides its name's suffixes.
#[derive(Clone, Copy, PartialEq)]
enum NameKind {
    Gauge,
    Counter,
    Other,
}

const UNIT_NAMES: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

const PER_UNIT_NAMES: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

fn lookup(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// A unit part as name characters: invalid ones become `_`, runs collapse, no leading `_`.
fn clean_unit(u: &str) -> String {
    let mut out = String::with_capacity(u.len());
    for c in u.chars() {
        let c = if is_metric_char(c) { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_start_matches('_').to_string()
}

/// `unit` as (main, per) suffixes: `By/s` → ("bytes", "per_second"); annotations (`{req}`)
/// contribute nothing.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(lookup(UNIT_NAMES, main).unwrap_or(main))
    };
    let per = match parts.next().map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            let p = clean_unit(lookup(PER_UNIT_NAMES, p).unwrap_or(p));
            let p = p.trim_end_matches('_');
            if p.is_empty() {
                String::new()
            } else {
                format!("per_{p}")
            }
        }
        _ => String::new(),
    };
    (main, per)
}

/// The Prometheus name of an OTLP metric: `http.server.request.duration` in `s` →
/// `http_server_request_duration_seconds`; monotonic sums end in `_total`, gauges of unit
/// `1` in `_ratio`.
fn metric_name(name: &str, unit: &str, kind: NameKind) -> String {
    let mut tokens: Vec<&str> = name
        .split(|c: char| !is_metric_char(c))
        .filter(|t| !t.is_empty())
        .collect();
    let (mut main, per) = unit_suffixes(unit);
    if tokens.contains(&main.as_str()) {
        main.clear();
    }
    let per = if tokens.contains(&per.as_str()) {
        String::new()
    } else {
        per
    };
    if !per.is_empty() {
        main = main.trim_end_matches('_').to_string();
    }
    if !main.is_empty() {
        tokens.push(&main);
    }
    if !per.is_empty() {
        tokens.push(&per);
    }
    if kind == NameKind::Counter {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if unit == "1" && kind == NameKind::Gauge {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

/// The Prometheus name of an attribute: invalid characters become `_` (runs collapse,
/// `__reserved__` names keep their frame), a leading digit gains `key_`.
pub fn label_name(key: &str) -> Option<String> {
    let (reserved, inner) = if key.len() >= 4 && key.starts_with("__") && key.ends_with("__") {
        (true, &key[2..key.len() - 2])
    } else {
        (false, key)
    };
    let mut out = String::with_capacity(key.len() + 4);
    for c in inner.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if reserved {
        out = format!("__{out}__");
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    if out.chars().all(|c| c == '_') {
        return None;
    }
    Some(out)
}

/// An attribute value as a label value, as the collector's `pcommon.Value.AsString` gives it.
fn value_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_value(*d),
        Some(any_value::Value::BytesValue(b)) => base64(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<serde_json::Value> = a.values.iter().map(json_value).collect();
            serde_json::Value::Array(items).to_string()
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let map: serde_json::Map<String, serde_json::Value> = kv
                .values
                .iter()
                .map(|k| {
                    let v = k.value.as_ref().map(json_value);
                    (k.key.clone(), v.unwrap_or(serde_json::Value::Null))
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        }
        // A profiles-only dictionary reference, meaningless in metrics.
        Some(any_value::Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn json_value(v: &AnyValue) -> serde_json::Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone().into(),
        Some(any_value::Value::BoolValue(b)) => (*b).into(),
        Some(any_value::Value::IntValue(i)) => (*i).into(),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| format_value(*d).into()),
        _ => value_string(v).into(),
    }
}

/// Bytes attributes become label values in standard base64, as the collector writes them.
fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Attributes as label pairs; names that collide after escaping join their values with `;`
/// in the order of the original keys, and empty values are left out (as Prometheus does).
fn attribute_labels(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let Some(name) = label_name(&kv.key) else {
            continue;
        };
        let value = kv.value.as_ref().map(value_string).unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        out.entry(name)
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// Builds label sets through one interner, so repeated names and values share memory.
struct LabelBuilder<'a> {
    interner: &'a Interner,
}

impl LabelBuilder<'_> {
    fn labels(&self, pairs: &BTreeMap<String, String>, extra: Option<(&str, &str)>) -> Labels {
        let mut v: Vec<Label> = pairs
            .iter()
            // job and instance come from the resource, the name from the metric.
            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
            .map(|(k, val)| self.interner.label(k, val))
            .collect();
        if let Some((k, val)) = extra {
            v.retain(|l| &*l.name != k);
            v.push(self.interner.label(k, val));
        }
        Labels::from_vec(v)
    }
}

fn nanos_to_ms(t: u64) -> i64 {
    (t / 1_000_000).min(i64::MAX as u64) as i64
}

fn number_value(p: &NumberDataPoint) -> f64 {
    if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
        return stale_nan();
    }
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn temporality_problem(name: &str, t: i32) -> Option<String> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Cumulative) => None,
        Ok(AggregationTemporality::Delta) => Some(format!(
            "metric {name:?}: delta temporality is not supported; send cumulative data (for example through the collector's deltatocumulative processor)"
        )),
        _ => Some(format!(
            "metric {name:?}: aggregation temporality is unspecified or invalid ({t})"
        )),
    }
}

/// Translates one export request.
pub fn translate(req: &ExportMetricsServiceRequest, interner: &Interner) -> Translated {
    let mut out = Translated::default();
    let lb = LabelBuilder { interner };
    for rm in &req.resource_metrics {
        let resource: Vec<(String, String)> = rm
            .resource
            .as_ref()
            .map(|r| {
                r.attributes
                    .iter()
                    .map(|kv| {
                        let v = kv.value.as_ref().map(value_string).unwrap_or_default();
                        (kv.key.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut latest_ms: Option<i64> = None;
        let mut groups: Vec<ResourceMetrics> = Vec::new();
        for sm in &rm.scope_metrics {
            let (scope_name, scope_version) = sm
                .scope
                .as_ref()
                .map(|s| (s.name.clone(), s.version.clone()))
                .unwrap_or_default();
            let mut families = Vec::new();
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                let mut push = |samples: &mut Vec<Sample>, name: &Arc<str>, labels, v, t| {
                    latest_ms = Some(latest_ms.map_or(t, |l: i64| l.max(t)));
                    samples.push(Sample {
                        name: name.clone(),
                        labels,
                        value: v,
                        timestamp_ms: t,
                    });
                };
                let family = |name: &str, kind| MetricFamily {
                    name: interner.intern(name),
                    kind,
                    help: interner.intern(&m.description),
                    unit: interner.intern(""),
                    samples: Vec::new(),
                };
                match data {
                    Data::Gauge(g) => {
                        let name = metric_name(&m.name, &m.unit, NameKind::Gauge);
                        let mut f = family(&name, MetricKind::Gauge);
                        let sample_name = f.name.clone();
                        for p in &g.data_points {
                            let labels = lb.labels(&attribute_labels(&p.attributes), None);
                            let t = nanos_to_ms(p.time_unix_nano);
                            push(&mut f.samples, &sample_name, labels, number_value(p), t);
                        }
                        families.push(f);
                    }
                    Data::Sum(s) => {
                        if let Some(why) = temporality_problem(&m.name, s.aggregation_temporality) {
                            out.reject(s.data_points.len(), why);
                            continue;
                        }
                        let (nk, kind) = if s.is_monotonic {
                            (NameKind::Counter, MetricKind::Counter)
                        } else {
                            (NameKind::Gauge, MetricKind::Gauge)
                        };
                        let name = metric_name(&m.name, &m.unit, nk);
                        let mut f = family(&name, kind);
                        let sample_name = f.name.clone();
                        for p in &s.data_points {
                            let labels = lb.labels(&attribute_labels(&p.attributes), None);
                            let t = nanos_to_ms(p.time_unix_nano);
                            push(&mut f.samples, &sample_name, labels, number_value(p), t);
                        }
                        families.push(f);
                    }
                    Data::Histogram(h) => {
                        if let Some(why) = temporality_problem(&m.name, h.aggregation_temporality) {
                            out.reject(h.data_points.len(), why);
                            continue;
                        }
                        let name = metric_name(&m.name, &m.unit, NameKind::Other);
                        let mut f = family(&name, MetricKind::Histogram);
                        let bucket = interner.intern(&format!("{name}_bucket"));
                        let sum = interner.intern(&format!("{name}_sum"));
                        let count = interner.intern(&format!("{name}_count"));
                        for p in &h.data_points {
                            if !p.bucket_counts.is_empty()
                                && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                            {
                                out.reject(1, format!(
                                    "metric {:?}: {} bucket counts for {} explicit bounds (want bounds + 1)",
                                    m.name,
                                    p.bucket_counts.len(),
                                    p.explicit_bounds.len()
                                ));
                                continue;
                            }
                            let attrs = attribute_labels(&p.attributes);
                            let t = nanos_to_ms(p.time_unix_nano);
                            let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                            let v = |x: f64| if stale { stale_nan() } else { x };
                            let base = lb.labels(&attrs, None);
                            if let Some(s) = p.sum {
                                push(&mut f.samples, &sum, base.clone(), v(s), t);
                            }
                            push(&mut f.samples, &count, base, v(p.count as f64), t);
                            if !p.bucket_counts.is_empty() {
                                let mut cumulative = 0u64;
                                for (i, c) in p.bucket_counts.iter().enumerate() {
                                    cumulative = cumulative.saturating_add(*c);
                                    let le = match p.explicit_bounds.get(i) {
                                        Some(b) => format_value(*b),
                                        None => "+Inf".to_string(),
                                    };
                                    // The +Inf bucket holds every observation: the count.
                                    let n = if i == p.explicit_bounds.len() {
                                        p.count
                                    } else {
                                        cumulative
                                    };
                                    let labels = lb.labels(&attrs, Some(("le", &le)));
                                    push(&mut f.samples, &bucket, labels, v(n as f64), t);
                                }
                            }
                        }
                        families.push(f);
                    }
                    Data::ExponentialHistogram(h) => {
                        out.reject(
                            h.data_points.len(),
                            format!("metric {:?}: exponential histograms (native histograms in Prometheus) are not supported; use explicit bucket histograms", m.name),
                        );
                    }
                    Data::Summary(s) => {
                        let name = metric_name(&m.name, &m.unit, NameKind::Other);
                        let mut f = family(&name, MetricKind::Summary);
                        let sample_name = f.name.clone();
                        let sum = interner.intern(&format!("{name}_sum"));
                        let count = interner.intern(&format!("{name}_count"));
                        for p in &s.data_points {
                            let attrs = attribute_labels(&p.attributes);
                            let t = nanos_to_ms(p.time_unix_nano);
                            let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                            let v = |x: f64| if stale { stale_nan() } else { x };
                            let base = lb.labels(&attrs, None);
                            push(&mut f.samples, &sum, base.clone(), v(p.sum), t);
                            push(&mut f.samples, &count, base, v(p.count as f64), t);
                            for q in &p.quantile_values {
                                let labels = lb
                                    .labels(&attrs, Some(("quantile", &format_value(q.quantile))));
                                push(&mut f.samples, &sample_name, labels, v(q.value), t);
                            }
                        }
                        families.push(f);
                    }
                }
            }
            if !families.is_empty() {
                groups.push(ResourceMetrics {
                    resource: resource.clone(),
                    scope_name,
                    scope_version,
                    families,
                });
            }
        }
        // The resource's other attributes, as Prometheus keeps them: one `target_info`
        // series per job and instance, at the resource's latest point.
        if let (Some(t), Some(first)) = (latest_ms, groups.first_mut()) {
            let info: Vec<KeyValue> = rm
                .resource
                .as_ref()
                .map(|r| {
                    r.attributes
                        .iter()
                        .filter(|kv| {
                            !matches!(
                                kv.key.as_str(),
                                "service.name" | "service.namespace" | "service.instance.id"
                            )
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let labels = attribute_labels(&info);
            if !labels.is_empty() {
                let name = interner.intern("target_info");
                first.families.push(MetricFamily {
                    name: name.clone(),
                    kind: MetricKind::Gauge,
                    help: interner.intern("Target metadata"),
                    unit: interner.intern(""),
                    samples: vec![Sample {
                        name,
                        labels: lb.labels(&labels, None),
                        value: 1.0,
                        timestamp_ms: t,
                    }],
                });
            }
        }
        out.metrics.resources.extend(groups);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        let n = |name, unit, kind| metric_name(name, unit, kind);
        assert_eq!(
            n("http.server.request.duration", "s", NameKind::Other),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            n("requests.count", "1", NameKind::Counter),
            "requests_count_total"
        );
        assert_eq!(
            n("memory.usage", "By", NameKind::Gauge),
            "memory_usage_bytes"
        );
        assert_eq!(
            n("cpu.utilization", "1", NameKind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            n("network.io", "By/s", NameKind::Counter),
            "network_io_bytes_per_second_total"
        );
        assert_eq!(
            n("requests", "{request}", NameKind::Counter),
            "requests_total"
        );
        assert_eq!(n("total.requests", "", NameKind::Counter), "requests_total");
        assert_eq!(
            n("latency_seconds", "s", NameKind::Other),
            "latency_seconds"
        );
        assert_eq!(n("2xx.responses", "", NameKind::Gauge), "_2xx_responses");
        assert_eq!(n("foo__bar", "", NameKind::Gauge), "foo_bar");
        assert_eq!(
            n("istio_requests_total", "", NameKind::Counter),
            "istio_requests_total"
        );
    }

    #[test]
    fn labels_follow_the_spec() {
        assert_eq!(label_name("http.method").as_deref(), Some("http_method"));
        assert_eq!(label_name("123invalid").as_deref(), Some("key_123invalid"));
        assert_eq!(label_name("__reserved__").as_deref(), Some("__reserved__"));
        assert_eq!(label_name("a..b").as_deref(), Some("a_b"));
        assert_eq!(label_name("..."), None);
        let attrs = vec![
            KeyValue {
                key: "a.b".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("1".into())),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "a_b".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(2)),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "empty".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(String::new())),
                }),
                ..Default::default()
            },
        ];
        let l = attribute_labels(&attrs);
        assert_eq!(l.get("a_b").map(String::as_str), Some("1;2"));
        assert!(!l.contains_key("empty"));
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
    }
}
