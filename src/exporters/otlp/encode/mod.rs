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
//! path (`cargo bench --bench agents`). Each message's size is computed before it is written,
//! so a point's bytes are written once into its scope's buffer rather than into a scratch
//! buffer per nesting level, and an attribute is one copy of its pair's pre-encoded
//! `KeyValue` (`LabelPair::otlp_key_value`). The tests decode the bytes with prost and
//! compare them with prost's own encoding, so every check of the structure also checks the
//! writer; the JSON encoding decodes them the same way (`http.rs`).

mod wire;

use std::collections::HashMap;

pub use wire::key_value_bytes;
use wire::*;

use crate::model::{
    is_stale_nan, Label, LabelPair, LabelRole, Labels, MetricFamily, MetricKind, Metrics,
    ResourceMetrics, Sample,
};

const NO_RECORDED_VALUE: u64 = 1;
/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: u64 = 2;

fn ms_to_ns(ms: i64) -> u64 {
    if ms <= 0 {
        0
    } else {
        (ms as u64).saturating_mul(1_000_000)
    }
}

/// `_created` values are float seconds; like Prometheus, keep millisecond precision
/// (a direct `* 1e9` would show float noise in the nanoseconds).
fn secs_to_ns(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        ((s * 1000.0).round() as u64).saturating_mul(1_000_000)
    } else {
        0
    }
}

/// Labels that are not data-point attributes.
fn is_structural(l: &LabelPair, kind: MetricKind) -> bool {
    match l.role() {
        LabelRole::Plain => false,
        LabelRole::ScopeName | LabelRole::ScopeVersion => true,
        LabelRole::Le => matches!(kind, MetricKind::Histogram | MetricKind::GaugeHistogram),
        LabelRole::Quantile => kind == MetricKind::Summary,
    }
}

/// Size of the attributes, and whether `otel_scope_name` was among the labels read.
fn attributes_size(labels: &Labels, kind: MetricKind) -> (usize, bool) {
    let mut size = 0;
    let mut scoped = false;
    for l in labels.iter() {
        scoped |= l.role() == LabelRole::ScopeName;
        if !is_structural(l, kind) {
            size += 1 + l.otlp_key_value(key_value_bytes).len();
        }
    }
    (size, scoped)
}

fn attributes(out: &mut Vec<u8>, field: u32, labels: &Labels, kind: MetricKind) {
    for l in labels.iter().filter(|l| !is_structural(l, kind)) {
        key(out, field, LEN);
        out.extend_from_slice(l.otlp_key_value(key_value_bytes));
    }
}

/// Identity of a data point: its labels without the structural ones.
fn point_key(labels: &Labels, kind: MetricKind) -> Vec<(&str, &str)> {
    labels
        .iter()
        .filter(|l| !is_structural(l, kind))
        .map(|l| (&*l.name, &*l.value))
        .collect()
}

fn with_role(labels: &Labels, role: LabelRole) -> Option<&LabelPair> {
    labels.iter().map(|l| &**l).find(|l| l.role() == role)
}

fn scope_of(s: &Sample) -> (Option<&str>, Option<&str>) {
    (
        with_role(&s.labels, LabelRole::ScopeName).map(|l| &*l.value),
        with_role(&s.labels, LabelRole::ScopeVersion).map(|l| &*l.value),
    )
}

/// Encodes a batch as the protobuf bytes of one `ExportMetricsServiceRequest`, appended to
/// `out`.
pub fn encode_to(metrics: &Metrics, out: &mut Vec<u8>) {
    // Scope buffers are handed from resource to resource: each grows once, to the largest
    // target's, instead of from nothing for every target.
    let mut spare = Vec::new();
    for r in &metrics.resources {
        encode_resource(out, r, &mut spare);
    }
}

fn is_target_info(f: &MetricFamily) -> bool {
    &*f.name == "target_info" || (&*f.name == "target" && f.kind == MetricKind::Info)
}

/// One `ResourceMetrics` (field 1 of the request), tag and length included. Each scope's
/// metrics are written into a buffer of their own, then copied into `out` once their
/// lengths are known; `spare` lends and takes back those buffers.
fn encode_resource(out: &mut Vec<u8>, r: &ResourceMetrics, spare: &mut Vec<Vec<u8>>) {
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
    let mut attrs = Vec::new();
    for (k, v) in &r.resource {
        key_value(&mut attrs, 1, k, v);
    }
    for (k, v) in &extra {
        key_value(&mut attrs, 1, k, v);
    }
    // Scopes: the receiver's own, plus one per distinct otel_scope_name/version, in order
    // of first appearance.
    let mut scopes: Vec<((&str, &str), Vec<u8>)> = Vec::new();
    let default_scope = (r.scope_name.as_str(), r.scope_version.as_str());
    for f in r.families.iter().filter(|f| !is_target_info(f)) {
        // Written whole into the default scope unless a sample turns out to carry
        // `otel_scope_name` (noticed while the labels are read anyway, before anything is
        // written); then the family is split by scope.
        let samples: Vec<&Sample> = f.samples.iter().collect();
        let i = scope_index(&mut scopes, default_scope, spare);
        if encode_family(&mut scopes[i].1, f, &samples, Scoping::Detect) == Scoping::Detect {
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
            let i = scope_index(&mut scopes, key, spare);
            encode_family(&mut scopes[i].1, f, &samples, Scoping::Split);
        }
    }
    // Every family of a scope may have been dropped: such a scope is left out.
    let written: Vec<(&(&str, &str), &Vec<u8>)> = scopes
        .iter()
        .filter(|(_, metrics)| !metrics.is_empty())
        .map(|(scope, metrics)| (scope, metrics))
        .collect();
    let scope_size = |(name, version): &(&str, &str)| string_size(name) + string_size(version);
    let scope_metrics_size =
        |(scope, metrics): &(&(&str, &str), &Vec<u8>)| len_field(scope_size(scope)) + metrics.len();
    let body = len_field(attrs.len())
        + written
            .iter()
            .map(|s| len_field(scope_metrics_size(s)))
            .sum::<usize>();
    len_header(out, 1, body);
    len_header(out, 1, attrs.len());
    out.extend_from_slice(&attrs);
    for s in &written {
        len_header(out, 2, scope_metrics_size(s));
        let (name, version) = s.0;
        len_header(out, 1, scope_size(s.0));
        string(out, 1, name);
        string(out, 2, version);
        out.extend_from_slice(s.1);
    }
    drop(written);
    spare.extend(scopes.into_iter().map(|(_, mut metrics)| {
        metrics.clear();
        metrics
    }));
}

/// Whether `encode_family` looks out for `otel_scope_name` (the one label that makes a
/// sample leave the default scope) or has samples already split by scope. Asked to
/// `Detect`, it answers `Split` when it found the label (having written nothing) and
/// `Detect` when it wrote the family; asked to `Split`, it writes and its answer is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scoping {
    Detect,
    Split,
}

fn scope_index<'a>(
    scopes: &mut Vec<((&'a str, &'a str), Vec<u8>)>,
    key: (&'a str, &'a str),
    spare: &mut Vec<Vec<u8>>,
) -> usize {
    match scopes.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            scopes.push((key, spare.pop().unwrap_or_default()));
            scopes.len() - 1
        }
    }
}

/// Size of a `NumberDataPoint`'s fields, and whether the sample has `otel_scope_name`.
fn number_point_size(s: &Sample, kind: MetricKind, start_ns: u64) -> (usize, bool) {
    let stale = is_stale_nan(s.value);
    let (attributes, scoped) = attributes_size(&s.labels, kind);
    let value = if stale {
        uint_size(NO_RECORDED_VALUE)
    } else {
        9
    };
    let size = fixed64_size(start_ns) + fixed64_size(ms_to_ns(s.timestamp_ms)) + value + attributes;
    (size, scoped)
}

/// The sizes of number points; `None` when one has `otel_scope_name` and `scoping` says to
/// look out for it.
fn number_point_sizes(
    points: &[(&Sample, u64)],
    kind: MetricKind,
    scoping: Scoping,
) -> Option<Vec<usize>> {
    let mut scoped = false;
    let sizes = points
        .iter()
        .map(|(s, start)| {
            let (size, has) = number_point_size(s, kind, *start);
            scoped |= has;
            size
        })
        .collect();
    (!scoped || scoping == Scoping::Split).then_some(sizes)
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
        uint(out, 8, NO_RECORDED_VALUE);
    }
}

/// Starts a `Metric` (field 2 of its ScopeMetrics): its header fields and the tag and length
/// of its data oneof (`data_field`), whose `data_size` bytes the caller writes next.
fn metric_header(
    out: &mut Vec<u8>,
    f: &MetricFamily,
    name: &str,
    data_field: u32,
    data_size: usize,
) {
    let size =
        string_size(name) + string_size(&f.help) + string_size(&f.unit) + len_field(data_size);
    len_header(out, 2, size);
    string(out, 1, name);
    string(out, 2, &f.help);
    string(out, 3, &f.unit);
    len_header(out, data_field, data_size);
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

/// Number points (field 1 each) with their start times and their sizes from
/// `number_point_size`.
fn number_points(out: &mut Vec<u8>, points: &[(&Sample, u64)], sizes: &[usize], kind: MetricKind) {
    for (&(s, start), &size) in points.iter().zip(sizes) {
        len_header(out, 1, size);
        let at = out.len();
        number_point(out, s, kind, start);
        debug_assert_eq!(out.len() - at, size, "number point size");
    }
}

/// Writes a family's metric; see `Scoping` for what it returns.
fn encode_family(
    out: &mut Vec<u8>,
    f: &MetricFamily,
    samples: &[&Sample],
    scoping: Scoping,
) -> Scoping {
    let split = Scoping::Split;
    let detect = scoping == Scoping::Detect;
    if samples.is_empty() {
        return scoping;
    }
    match f.kind {
        // Gauge histograms have no OTLP equivalent that Honeycomb accepts.
        MetricKind::GaugeHistogram => {
            if detect && samples.iter().any(|s| has_scope(&s.labels)) {
                return split;
            }
        }
        MetricKind::Gauge | MetricKind::Unknown => {
            let points: Vec<(&Sample, u64)> = samples.iter().map(|s| (*s, 0)).collect();
            let Some(sizes) = number_point_sizes(&points, f.kind, scoping) else {
                return split;
            };
            let data: usize = sizes.iter().map(|&n| len_field(n)).sum();
            metric_header(out, f, &f.name, 5, data);
            number_points(out, &points, &sizes, f.kind);
        }
        MetricKind::Counter | MetricKind::Info | MetricKind::StateSet => {
            // A counter's `_created` samples are not points: their labels are read here.
            let is_created =
                |s: &Sample| f.kind == MetricKind::Counter && s.name.ends_with("_created");
            if detect
                && samples
                    .iter()
                    .any(|s| is_created(s) && has_scope(&s.labels))
            {
                return split;
            }
            let created = created_times(f, samples);
            let points: Vec<(&Sample, u64)> = samples
                .iter()
                .filter(|s| !is_created(s))
                .map(|s| {
                    let start = if created.is_empty() {
                        0
                    } else {
                        created
                            .get(&point_key(&s.labels, f.kind))
                            .copied()
                            .unwrap_or(0)
                    };
                    (*s, start)
                })
                .collect();
            if points.is_empty() {
                return scoping;
            }
            let Some(sizes) = number_point_sizes(&points, f.kind, scoping) else {
                return split;
            };
            let monotonic = u64::from(f.kind == MetricKind::Counter);
            let data: usize = sizes.iter().map(|&n| len_field(n)).sum::<usize>()
                + uint_size(CUMULATIVE)
                + uint_size(monotonic);
            metric_header(out, f, &f.otlp_name(), 7, data);
            number_points(out, &points, &sizes, f.kind);
            uint(out, 2, CUMULATIVE);
            uint(out, 3, monotonic);
        }
        MetricKind::Histogram => return encode_grouped(out, f, samples, &HISTOGRAM, scoping),
        MetricKind::Summary => return encode_grouped(out, f, samples, &SUMMARY, scoping),
    }
    scoping
}

fn has_scope(labels: &Labels) -> bool {
    with_role(labels, LabelRole::ScopeName).is_some()
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
    same_but_bounds(a, b, kind) || same_attributes(a, b, kind)
}

/// Equal labels once the structural ones are left out (labels compare by address first).
fn same_attributes(a: &Labels, b: &Labels, kind: MetricKind) -> bool {
    let attribute = |l: &&Label| !is_structural(l, kind);
    a.iter().filter(attribute).eq(b.iter().filter(attribute))
}

/// The same pairs in the same places but for `le` or `quantile` where those are structural:
/// series of one point as exposed, compared by address without reading the pairs.
fn same_but_bounds(a: &Labels, b: &Labels, kind: MetricKind) -> bool {
    let bound_apart = |p: &Label, q: &Label| {
        p.role() == q.role()
            && matches!(p.role(), LabelRole::Le | LabelRole::Quantile)
            && is_structural(p, kind)
    };
    // Two buckets of one scraped histogram: one shared set, each with its own bound.
    if let Some((p, q)) = a.spliced_apart(b) {
        return p == q || bound_apart(p, q);
    }
    // A bucket and its histogram's `_sum` or `_count`: the shared set, with and without
    // the bound.
    if let Some(extra) = a.spliced_onto(b).or_else(|| b.spliced_onto(a)) {
        return matches!(extra.role(), LabelRole::Le | LabelRole::Quantile)
            && is_structural(extra, kind);
    }
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p == q || bound_apart(p, q))
}

/// The value of the label with `role` as a number. The label sits at the same place in
/// every series of a point, so `hint` (where it was last) is tried first.
fn bound_of(labels: &Labels, role: LabelRole, hint: &mut usize) -> Option<f64> {
    if let Some(l) = labels.nth(*hint).filter(|l| l.role() == role) {
        return l.bound();
    }
    let at = labels.iter().position(|l| l.role() == role)?;
    *hint = at;
    labels.nth(at)?.bound()
}

/// A hash of a point's identity (its labels but the structural ones), from their contents:
/// equal label sets need not share pairs.
fn point_hash(state: &foldhash::quality::RandomState, labels: &Labels, kind: MetricKind) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = state.build_hasher();
    for l in labels.iter().filter(|l| !is_structural(l, kind)) {
        l.name.hash(&mut h);
        l.value.hash(&mut h);
    }
    h.finish()
}

/// The points of a histogram or summary; `None` when a sample has `otel_scope_name` and
/// `scoping` says to look out for it.
fn group<'a>(f: &MetricFamily, samples: &[&'a Sample], scoping: Scoping) -> Option<Vec<Group<'a>>> {
    let base = &*f.name;
    let mut groups: Vec<Group<'a>> = Vec::new();
    // Groups by point identity, for series of one point that are not adjacent. Keyed by
    // content from the target: a hasher seeded at random.
    let state = foldhash::quality::RandomState::default();
    let mut index: hashbrown::HashTable<usize> = hashbrown::HashTable::new();
    let mut last: Option<usize> = None;
    let mut bound_at = 0;
    for s in samples {
        // Series of one point (a histogram's buckets, _sum and _count) are usually adjacent:
        // compare with the last point before building a key. Only a sample that differs
        // from its point's first in more than its bound has its labels read for a scope.
        let is_last = |i: usize, same: fn(&Labels, &Labels, MetricKind) -> bool| {
            groups[i].attrs.is_some_and(|a| same(a, &s.labels, f.kind))
        };
        let i = match last {
            Some(i) if is_last(i, same_but_bounds) => i,
            _ if scoping == Scoping::Detect && has_scope(&s.labels) => return None,
            Some(i) if is_last(i, same_attributes) => i,
            _ => {
                let hash = point_hash(&state, &s.labels, f.kind);
                let same = |&i: &usize| {
                    groups[i]
                        .attrs
                        .is_some_and(|a| same_point(a, &s.labels, f.kind))
                };
                match index.find(hash, same) {
                    Some(&i) => i,
                    None => {
                        // Points of one family usually have as many buckets (or quantiles)
                        // as the last: room for them saves growing the list bucket by bucket.
                        let room = groups
                            .last()
                            .map_or(0, |g| g.buckets.len() + g.quantiles.len());
                        groups.push(Group::default());
                        let i = groups.len() - 1;
                        let g = &mut groups[i];
                        if f.kind == MetricKind::Summary {
                            g.quantiles.reserve_exact(room);
                        } else {
                            g.buckets.reserve_exact(room);
                        }
                        index.insert_unique(hash, i, |&j| {
                            groups[j].attrs.map_or(0, |a| point_hash(&state, a, f.kind))
                        });
                        i
                    }
                }
            }
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
                if let Some(le) = bound_of(&s.labels, LabelRole::Le, &mut bound_at) {
                    g.buckets.push((le, s.value));
                }
            }
            "_count" => g.count = Some(s.value),
            "_sum" => g.sum = Some(s.value),
            "_created" => g.created = secs_to_ns(s.value),
            "" => {
                if let Some(q) = bound_of(&s.labels, LabelRole::Quantile, &mut bound_at) {
                    g.quantiles.push((q, s.value));
                }
            }
            _ => {}
        }
    }
    Some(groups)
}

/// How one grouped kind (histogram or summary) is written: the field of its data in
/// `Metric`, its point's attributes and flags fields, and the point fields from 5 on.
struct GroupedKind {
    data_field: u32,
    attributes_field: u32,
    flags_field: u32,
    /// Writes nothing (only sizes) when `out` is `None`; `count` is the point's `_count`.
    value_fields: fn(Option<&mut Vec<u8>>, &Group<'_>, f64) -> usize,
    /// Fields of the data message after its points.
    temporality: u64,
}

const HISTOGRAM: GroupedKind = GroupedKind {
    data_field: 9,
    attributes_field: 9,
    flags_field: 10,
    value_fields: histogram_fields,
    temporality: CUMULATIVE,
};

const SUMMARY: GroupedKind = GroupedKind {
    data_field: 11,
    attributes_field: 7,
    flags_field: 8,
    value_fields: summary_fields,
    temporality: 0,
};

/// A histogram point's sum, bucket counts and bounds (buckets sorted by bound).
fn histogram_fields(out: Option<&mut Vec<u8>>, g: &Group<'_>, count: f64) -> usize {
    let finite = g.buckets.iter().filter(|b| !b.0.is_infinite()).count();
    let counts = 8 * (finite + 1);
    let bounds = 8 * finite;
    let size =
        g.sum.map_or(0, |_| 9) + len_field(counts) + if finite > 0 { len_field(bounds) } else { 0 };
    let Some(out) = out else { return size };
    if let Some(sum) = g.sum {
        double(out, 5, sum);
    }
    // bucket_counts (packed fixed64): one per finite bound, plus +Inf's.
    len_header(out, 6, counts);
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
        len_header(out, 7, bounds);
        for &(le, _) in g.buckets.iter().filter(|b| !b.0.is_infinite()) {
            out.extend_from_slice(&le.to_le_bytes());
        }
    }
    size
}

/// A summary point's sum and quantiles (sorted by quantile).
fn summary_fields(out: Option<&mut Vec<u8>>, g: &Group<'_>, _count: f64) -> usize {
    // A plain double: omitted at zero, as proto3 does.
    let sum = g.sum.unwrap_or(0.0);
    let quantile_size = |&(q, v): &(f64, f64)| nonzero_double_size(q) + nonzero_double_size(v);
    let size = nonzero_double_size(sum)
        + g.quantiles
            .iter()
            .map(|q| len_field(quantile_size(q)))
            .sum::<usize>();
    let Some(out) = out else { return size };
    nonzero_double(out, 5, sum);
    for q in &g.quantiles {
        len_header(out, 6, quantile_size(q));
        nonzero_double(out, 1, q.0);
        nonzero_double(out, 2, q.1);
    }
    size
}

/// A grouped point's fields: stale ones are their time, attributes and the NoRecordedValue
/// flag; the others start time, time and `_count` (fields 2-4 in both kinds), the kind's
/// value fields, then the attributes. Returns their size; writes nothing when `out` is
/// `None`.
fn grouped_point(
    out: Option<&mut Vec<u8>>,
    g: &Group<'_>,
    count: f64,
    kind: MetricKind,
    how: &GroupedKind,
) -> usize {
    let attrs = g.attrs.map_or(0, |l| attributes_size(l, kind).0);
    if g.stale {
        let size = fixed64_size(ms_to_ns(g.ts)) + attrs + uint_size(NO_RECORDED_VALUE);
        if let Some(out) = out {
            fixed64(out, 3, ms_to_ns(g.ts));
            if let Some(l) = g.attrs {
                attributes(out, how.attributes_field, l, kind);
            }
            uint(out, how.flags_field, NO_RECORDED_VALUE);
        }
        return size;
    }
    let head = fixed64_size(g.created)
        + fixed64_size(ms_to_ns(g.ts))
        + fixed64_size(count.max(0.0) as u64);
    let Some(out) = out else {
        return head + (how.value_fields)(None, g, count) + attrs;
    };
    fixed64(out, 2, g.created);
    fixed64(out, 3, ms_to_ns(g.ts));
    fixed64(out, 4, count.max(0.0) as u64);
    let values = (how.value_fields)(Some(out), g, count);
    if let Some(l) = g.attrs {
        attributes(out, how.attributes_field, l, kind);
    }
    head + values + attrs
}

/// A histogram or summary: samples grouped into points by their non-structural labels.
/// A point without `_count` cannot be represented and is left out, as is a metric left
/// with no point.
fn encode_grouped(
    out: &mut Vec<u8>,
    f: &MetricFamily,
    samples: &[&Sample],
    how: &GroupedKind,
    scoping: Scoping,
) -> Scoping {
    let Some(mut groups) = group(f, samples, scoping) else {
        return Scoping::Split;
    };
    let mut points: Vec<(&Group<'_>, f64, usize)> = Vec::with_capacity(groups.len());
    for g in &mut groups {
        g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        g.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    for g in &groups {
        let count = match (g.stale, g.count) {
            (true, _) => 0.0,
            (false, Some(count)) => count,
            (false, None) => continue,
        };
        points.push((g, count, grouped_point(None, g, count, f.kind, how)));
    }
    if points.is_empty() {
        return scoping;
    }
    let data = points.iter().map(|p| len_field(p.2)).sum::<usize>() + uint_size(how.temporality);
    metric_header(out, f, &f.name, how.data_field, data);
    for &(g, count, size) in &points {
        len_header(out, 1, size);
        let at = out.len();
        let written = grouped_point(Some(out), g, count, f.kind, how);
        debug_assert_eq!((out.len() - at, written), (size, size), "point size");
    }
    uint(out, 2, how.temporality);
    scoping
}

#[cfg(test)]
mod tests;
