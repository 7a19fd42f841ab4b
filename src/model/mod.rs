//! The one in-memory representation every pipeline stage passes along.
//!
//! It is Prometheus-shaped (metric families of samples with label sets) because that is what
//! the agent scrapes and what the query façade stores; the OTLP exporter maps it to OTLP at
//! the edge. Label sets are `Arc`-shared so a series' labels are built once per scrape cache
//! entry and then only reference-counted; each label is one pointer to a (name, value) pair
//! that the series with that label share.

pub mod exposition;
pub mod names;
pub mod regex;
pub mod relabel;
pub mod value;

mod labels;

pub use labels::{pair_hash, Interner, Label, LabelPair, LabelRole, Labels, LabelsIter};
pub use names::is_label_name;
pub use value::format_value;

use std::sync::Arc;

/// Prometheus's staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `v` is the staleness marker (not any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Metric type as declared by `# TYPE` (OpenMetrics names; `untyped` is `Unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::GaugeHistogram => "gaugehistogram",
            MetricKind::Summary => "summary",
            MetricKind::Info => "info",
            MetricKind::StateSet => "stateset",
            MetricKind::Unknown => "unknown",
        }
    }
}

/// One sample of one series. `name` is the sample's metric name (`foo_bucket`, `foo_total`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: Arc<str>,
    /// Every label except `__name__`, `job` and `instance` (those live on the resource).
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: i64,
}

impl Sample {
    pub fn is_stale(&self) -> bool {
        is_stale_nan(self.value)
    }
}

/// A metric family: the samples that share one `# TYPE`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: Arc<str>,
    pub kind: MetricKind,
    pub help: Arc<str>,
    pub unit: Arc<str>,
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    /// The name this family has as an OTLP metric: counters keep (or gain) `_total` as
    /// exposed, info metrics `_info`, every other kind its family name.
    pub fn otlp_name(&self) -> String {
        let name = &*self.name;
        let exposed_bare = self.samples.iter().any(|s| &*s.name == name);
        match self.kind {
            MetricKind::Counter if !exposed_bare && !name.ends_with("_total") => {
                format!("{name}_total")
            }
            MetricKind::Info if !exposed_bare && !name.ends_with("_info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    }
}

/// Where a group of families came from: the OTel resource plus the instrumentation scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceMetrics {
    /// Resource attributes in insertion order (`service.name`, `service.instance.id`, ...).
    pub resource: Vec<(String, String)>,
    pub scope_name: String,
    pub scope_version: String,
    pub families: Vec<MetricFamily>,
}

impl ResourceMetrics {
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn point_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// The unit of data passed between components.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub resources: Vec<ResourceMetrics>,
}

impl Metrics {
    pub fn point_count(&self) -> usize {
        self.resources.iter().map(|r| r.point_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
