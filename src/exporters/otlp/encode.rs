//! Prometheus model → OTLP metrics, following the OTel spec's
//! "Prometheus and OpenMetrics compatibility" rules:
//! counter → monotonic cumulative Sum; gauge/unknown → Gauge; classic histogram → Histogram
//! (the +Inf bound dropped, its count kept; no `_count` → dropped; no `_sum` → sum unset);
//! summary → Summary; info/stateset → non-monotonic Sum; `_created` → start time;
//! `target_info` → resource attributes; `otel_scope_*` labels → scope;
//! staleness marker → a point flagged NoRecordedValue with no value.
//!
//! The request is written as protobuf bytes directly from the model: building prost structs
//! first cost two `String`s per attribute per point, and allocation dominated the export
//! path (`cargo bench --bench agents`). The tests decode the bytes with prost and compare
//! them with prost's own encoding, so every check of the structure also checks the writer;
//! the JSON encoding decodes them the same way (`http.rs`).

use std::collections::HashMap;

use crate::model::{
    is_stale_nan, Labels, MetricFamily, MetricKind, Metrics, ResourceMetrics, Sample,
};

const NO_RECORDED_VALUE: u32 = 1;
/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: u64 = 2;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

/// A string field, omitted when empty as proto3 does.
fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        key(out, field, LEN);
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

/// A `KeyValue` with a string value, its size computed up front: attributes are most of the
/// bytes, and need no scratch buffer.
fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &str) {
    let any_value = 1 + varint_len(v.len() as u64) + v.len();
    let key_field = if k.is_empty() {
        0
    } else {
        1 + varint_len(k.len() as u64) + k.len()
    };
    let key_value = key_field + 1 + varint_len(any_value as u64) + any_value;
    key(out, field, LEN);
    varint(out, key_value as u64);
    string(out, 1, k);
    key(out, 2, LEN);
    varint(out, any_value as u64);
    // The oneof is set even for an empty string.
    key(out, 1, LEN);
    varint(out, v.len() as u64);
    out.extend_from_slice(v.as_bytes());
}

/// Writes nested messages: each is written into a scratch buffer, then copied into its
/// parent after its length. A byte is copied once per nesting level, much cheaper than the
/// allocations it replaces; buffers are reused.
#[derive(Default)]
struct Writer {
    spare: Vec<Vec<u8>>,
}

impl Writer {
    fn message(
        &mut self,
        out: &mut Vec<u8>,
        field: u32,
        body: impl FnOnce(&mut Self, &mut Vec<u8>),
    ) {
        self.message_if(out, field, |w, buf| {
            body(w, buf);
            true
        });
    }

    /// A message left out when `body` says it wrote nothing worth sending.
    fn message_if(
        &mut self,
        out: &mut Vec<u8>,
        field: u32,
        body: impl FnOnce(&mut Self, &mut Vec<u8>) -> bool,
    ) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        if body(self, &mut buf) {
            key(out, field, LEN);
            varint(out, buf.len() as u64);
            out.extend_from_slice(&buf);
        }
        self.spare.push(buf);
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

fn attributes(out: &mut Vec<u8>, field: u32, labels: &Labels, kind: MetricKind) {
    for l in labels.iter().filter(|l| !is_structural(&l.name, kind)) {
        key_value(out, field, &l.name, &l.value);
    }
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

/// Encodes a batch as the protobuf bytes of one `ExportMetricsServiceRequest`, appended to
/// `out`.
pub fn encode_to(metrics: &Metrics, out: &mut Vec<u8>) {
    let mut w = Writer::default();
    for r in &metrics.resources {
        encode_resource(&mut w, out, r);
    }
}

fn is_target_info(f: &MetricFamily) -> bool {
    &*f.name == "target_info" || (&*f.name == "target" && f.kind == MetricKind::Info)
}

/// One `ResourceMetrics` (field 1 of the request), tag and length included. Its scopes'
/// metrics are most of a batch's bytes: their lengths are known before the resource's
/// header is written, so they are copied into `out` once, not through two scratch buffers.
fn encode_resource(w: &mut Writer, out: &mut Vec<u8>, r: &ResourceMetrics) {
    // target_info's labels describe the resource; the metric itself is not exported.
    let mut extra: Vec<(&str, &str)> = Vec::new();
    for f in r.families.iter().filter(|f| is_target_info(f)) {
        if let Some(s) = f.samples.iter().find(|s| !s.is_stale()) {
            for l in s.labels.iter() {
                let known = r.resource.iter().any(|(k, _)| *k == *l.name)
                    || extra.iter().any(|(k, _)| *k == &*l.name);
                if !known {
                    extra.push((&l.name, &l.value));
                }
            }
        }
    }
    let mut head = Vec::new();
    w.message(&mut head, 1, |_, out| {
        for (k, v) in &r.resource {
            key_value(out, 1, k, v);
        }
        for (k, v) in &extra {
            key_value(out, 1, k, v);
        }
    });
    // Scopes: the receiver's own, plus one per distinct otel_scope_name/version, in order
    // of first appearance; each scope's metrics are written into its own buffer.
    let mut scopes: Vec<((&str, &str), Vec<u8>)> = Vec::new();
    let default_scope = (r.scope_name.as_str(), r.scope_version.as_str());
    for f in r.families.iter().filter(|f| !is_target_info(f)) {
        // One lookup per sample: only `otel_scope_name` makes a sample leave the default scope.
        let has_scope_labels = f
            .samples
            .iter()
            .any(|s| s.labels.get("otel_scope_name").is_some());
        if !has_scope_labels {
            let samples: Vec<&Sample> = f.samples.iter().collect();
            let i = scope_index(&mut scopes, default_scope);
            encode_family(w, &mut scopes[i].1, f, &samples);
            continue;
        }
        let mut by_scope: Vec<((&str, &str), Vec<&Sample>)> = Vec::new();
        for s in &f.samples {
            let key = match scope_of(s) {
                (Some(n), v) => (n, v.unwrap_or("")),
                (None, _) => default_scope,
            };
            match by_scope.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(s),
                None => by_scope.push((key, vec![s])),
            }
        }
        for (key, samples) in by_scope {
            let i = scope_index(&mut scopes, key);
            encode_family(w, &mut scopes[i].1, f, &samples);
        }
    }
    // Every family of a scope may have been dropped: such a scope is left out.
    let scopes: Vec<(Vec<u8>, &Vec<u8>)> = scopes
        .iter()
        .filter(|(_, metrics)| !metrics.is_empty())
        .map(|((name, version), metrics)| {
            let mut scope = Vec::new();
            string(&mut scope, 1, name);
            string(&mut scope, 2, version);
            (scope, metrics)
        })
        .collect();
    let field = |len: usize| 1 + varint_len(len as u64) + len;
    let scope_len = |(scope, metrics): &(Vec<u8>, &Vec<u8>)| field(scope.len()) + metrics.len();
    let body = head.len() + scopes.iter().map(|s| field(scope_len(s))).sum::<usize>();
    key(out, 1, LEN);
    varint(out, body as u64);
    out.extend_from_slice(&head);
    for s in &scopes {
        key(out, 2, LEN);
        varint(out, scope_len(s) as u64);
        key(out, 1, LEN);
        varint(out, s.0.len() as u64);
        out.extend_from_slice(&s.0);
        out.extend_from_slice(s.1);
    }
}

fn scope_index<'a>(
    scopes: &mut Vec<((&'a str, &'a str), Vec<u8>)>,
    key: (&'a str, &'a str),
) -> usize {
    match scopes.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            scopes.push((key, Vec::new()));
            scopes.len() - 1
        }
    }
}

/// The fields of a `NumberDataPoint` (its caller writes the tag and length).
fn number_point(out: &mut Vec<u8>, s: &Sample, kind: MetricKind, start_ns: u64) {
    let stale = is_stale_nan(s.value);
    fixed64(out, 2, start_ns);
    fixed64(out, 3, ms_to_ns(s.timestamp_ms));
    if !stale {
        double(out, 4, s.value);
    }
    attributes(out, 7, &s.labels, kind);
    if stale {
        uint(out, 8, u64::from(NO_RECORDED_VALUE));
    }
}

/// A `Metric` (field 2 of its ScopeMetrics) with the header fields; `data` writes its
/// oneof and reports whether it wrote any point (a metric without points is left out).
fn metric(
    w: &mut Writer,
    out: &mut Vec<u8>,
    f: &MetricFamily,
    name: &str,
    data: impl FnOnce(&mut Writer, &mut Vec<u8>) -> bool,
) {
    w.message_if(out, 2, |w, body| {
        string(body, 1, name);
        string(body, 2, &f.help);
        string(body, 3, &f.unit);
        data(w, body)
    });
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

fn encode_family(w: &mut Writer, out: &mut Vec<u8>, f: &MetricFamily, samples: &[&Sample]) {
    if samples.is_empty() {
        return;
    }
    match f.kind {
        // Gauge histograms have no OTLP equivalent that Honeycomb accepts.
        MetricKind::GaugeHistogram => {}
        MetricKind::Gauge | MetricKind::Unknown => metric(w, out, f, &f.name, |w, out| {
            w.message(out, 5, |w, out| {
                for s in samples {
                    w.message(out, 1, |_, out| number_point(out, s, f.kind, 0));
                }
            });
            true
        }),
        MetricKind::Counter | MetricKind::Info | MetricKind::StateSet => {
            let created = created_times(f, samples);
            let points: Vec<&&Sample> = samples
                .iter()
                .filter(|s| !s.name.ends_with("_created") || f.kind != MetricKind::Counter)
                .collect();
            if points.is_empty() {
                return;
            }
            metric(w, out, f, &f.otlp_name(), |w, out| {
                w.message(out, 7, |w, out| {
                    for s in points {
                        let start = if created.is_empty() {
                            0
                        } else {
                            created
                                .get(&point_key(&s.labels, f.kind))
                                .copied()
                                .unwrap_or(0)
                        };
                        w.message(out, 1, |_, out| number_point(out, s, f.kind, start));
                    }
                    uint(out, 2, CUMULATIVE);
                    uint(out, 3, u64::from(f.kind == MetricKind::Counter));
                });
                true
            })
        }
        MetricKind::Histogram => encode_histogram(w, out, f, samples),
        MetricKind::Summary => encode_summary(w, out, f, samples),
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

/// Whether two label sets name the same data point (equal but for structural labels).
fn same_point(a: &Labels, b: &Labels, kind: MetricKind) -> bool {
    // Usually the same labels in the same places (shared pairs: compared by address) but
    // for `le` or `quantile`; anything else gets the full comparison.
    let (x, y) = (a.as_slice(), b.as_slice());
    if x.len() == y.len()
        && x.iter()
            .zip(y)
            .all(|(p, q)| p == q || (p.name == q.name && is_structural(&p.name, kind)))
    {
        return true;
    }
    let mut a = a.iter().filter(|l| !is_structural(&l.name, kind));
    let mut b = b.iter().filter(|l| !is_structural(&l.name, kind));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) => {
                let same = |p: &std::sync::Arc<str>, q: &std::sync::Arc<str>| {
                    std::sync::Arc::ptr_eq(p, q) || p == q
                };
                if !same(&x.name, &y.name) || !same(&x.value, &y.value) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

fn group<'a>(f: &MetricFamily, samples: &[&'a Sample]) -> Vec<Group<'a>> {
    let base = &*f.name;
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut index: HashMap<Vec<(&'a str, &'a str)>, usize> = HashMap::new();
    let mut last: Option<usize> = None;
    for s in samples {
        // Series of one point (a histogram's buckets, _sum and _count) are usually adjacent:
        // compare with the last point before building a key.
        let i = match last {
            Some(i)
                if groups[i]
                    .attrs
                    .is_some_and(|a| same_point(a, &s.labels, f.kind)) =>
            {
                i
            }
            _ => *index
                .entry(point_key(&s.labels, f.kind))
                .or_insert_with(|| {
                    groups.push(Group::default());
                    groups.len() - 1
                }),
        };
        last = Some(i);
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

/// A histogram or summary point that went stale: its time, attributes and the
/// NoRecordedValue flag (the two messages number those fields differently).
fn stale_point(out: &mut Vec<u8>, g: &Group<'_>, kind: MetricKind, attrs: u32, flags: u32) {
    fixed64(out, 3, ms_to_ns(g.ts));
    if let Some(l) = g.attrs {
        attributes(out, attrs, l, kind);
    }
    uint(out, flags, u64::from(NO_RECORDED_VALUE));
}

/// Writes each group as a data point (field 1 of the histogram or summary message): stale
/// ones by `stale_point` with the point message's (attributes, flags) field numbers; the
/// others as start time, time and `_count` (fields 2-4 in both), then what `point` writes
/// (fields 5 on), then the attributes. A group without `_count` cannot be represented and is
/// left out. Returns whether any point was written.
fn grouped_points(
    w: &mut Writer,
    out: &mut Vec<u8>,
    groups: Vec<Group<'_>>,
    kind: MetricKind,
    (attrs, flags): (u32, u32),
    mut point: impl FnMut(&mut Writer, &mut Vec<u8>, &mut Group<'_>, f64),
) -> bool {
    let mut any = false;
    for mut g in groups {
        if g.stale {
            w.message(out, 1, |_, out| stale_point(out, &g, kind, attrs, flags));
            any = true;
            continue;
        }
        let Some(count) = g.count else { continue };
        any = true;
        w.message(out, 1, |w, out| {
            fixed64(out, 2, g.created);
            fixed64(out, 3, ms_to_ns(g.ts));
            fixed64(out, 4, count.max(0.0) as u64);
            point(w, out, &mut g, count);
            if let Some(l) = g.attrs {
                attributes(out, attrs, l, kind);
            }
        });
    }
    any
}

fn encode_histogram(w: &mut Writer, out: &mut Vec<u8>, f: &MetricFamily, samples: &[&Sample]) {
    let groups = group(f, samples);
    metric(w, out, f, &f.name, |w, out| {
        let mut any = false;
        w.message(out, 9, |w, out| {
            any = grouped_points(w, out, groups, f.kind, (9, 10), |_, out, g, count| {
                g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if let Some(sum) = g.sum {
                    double(out, 5, sum);
                }
                // bucket_counts (packed fixed64): one per finite bound, plus +Inf's.
                let finite = g.buckets.iter().filter(|b| !b.0.is_infinite()).count();
                key(out, 6, LEN);
                varint(out, 8 * (finite as u64 + 1));
                let mut prev = 0f64;
                for &(le, cum) in &g.buckets {
                    if le.is_infinite() {
                        continue;
                    }
                    out.extend_from_slice(&((cum - prev).max(0.0) as u64).to_le_bytes());
                    prev = cum.max(prev);
                }
                // The +Inf bucket: whatever the count holds beyond the last finite bound.
                out.extend_from_slice(&((count - prev).max(0.0) as u64).to_le_bytes());
                if finite > 0 {
                    key(out, 7, LEN);
                    varint(out, 8 * finite as u64);
                    for &(le, _) in g.buckets.iter().filter(|b| !b.0.is_infinite()) {
                        out.extend_from_slice(&le.to_le_bytes());
                    }
                }
            });
            uint(out, 2, CUMULATIVE);
        });
        any
    })
}

fn encode_summary(w: &mut Writer, out: &mut Vec<u8>, f: &MetricFamily, samples: &[&Sample]) {
    let groups = group(f, samples);
    metric(w, out, f, &f.name, |w, out| {
        let mut any = false;
        w.message(out, 11, |w, out| {
            any = grouped_points(w, out, groups, f.kind, (7, 8), |w, out, g, _| {
                g.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                // A plain double: omitted at zero, as proto3 does.
                let sum = g.sum.unwrap_or(0.0);
                if sum != 0.0 {
                    double(out, 5, sum);
                }
                for &(quantile, value) in &g.quantiles {
                    w.message(out, 6, |_, out| {
                        if quantile != 0.0 {
                            double(out, 1, quantile);
                        }
                        if value != 0.0 {
                            double(out, 2, value);
                        }
                    });
                }
            });
        });
        any
    })
}

#[cfg(test)]
mod tests {
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
