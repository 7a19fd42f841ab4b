//! How a scrape's samples become OTLP-shaped output: the family each sample belongs to (by
//! the body's metadata, as Prometheus looks it up), the resource of each job and instance,
//! and staleness markers for the series a scrape no longer has.

use std::collections::HashMap;
use std::sync::Arc;

use super::series::Tracked;
use crate::model::{stale_nan, MetricFamily, MetricKind, Metrics, ResourceMetrics, Sample};

/// Scope name put on scraped data.
pub const SCOPE_NAME: &str = "meshmetrics/receiver/prometheus";

/// A family within one target's output: (family name, job, instance).
pub(super) type FamilyKey = (Arc<str>, Arc<str>, Arc<str>);

/// Resource attributes for a target, per the OTel Prometheus compatibility spec.
pub fn resource_for(job: &str, instance: &str, scheme: &str) -> Vec<(String, String)> {
    let mut r = vec![
        ("service.name".to_string(), job.to_string()),
        ("service.instance.id".to_string(), instance.to_string()),
    ];
    if let Some((host, port)) = instance.rsplit_once(':') {
        if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() {
            r.push((
                "server.address".into(),
                host.trim_matches(['[', ']']).to_string(),
            ));
            r.push(("server.port".into(), port.to_string()));
        } else {
            r.push(("server.address".into(), instance.to_string()));
        }
    } else {
        r.push(("server.address".into(), instance.to_string()));
    }
    r.push(("url.scheme".into(), scheme.to_string()));
    r
}

/// Finds the family a sample belongs to from the body's metadata, the way Prometheus looks
/// metadata up: the exact name, else the name without a type-specific suffix.
pub(super) fn family_of(
    meta: &HashMap<String, (MetricKind, Arc<str>, Arc<str>)>,
    exposed: &str,
    final_name: &Arc<str>,
) -> (Arc<str>, MetricKind, Arc<str>, Arc<str>) {
    let unknown = || {
        (
            final_name.clone(),
            MetricKind::Unknown,
            Arc::from(""),
            Arc::from(""),
        )
    };
    if exposed != &**final_name {
        return unknown(); // renamed by relabeling: the exposed metadata no longer applies
    }
    if let Some((k, h, u)) = meta.get(exposed) {
        return (final_name.clone(), *k, h.clone(), u.clone());
    }
    const SUFFIXES: &[(&str, &[MetricKind])] = &[
        ("_total", &[MetricKind::Counter]),
        (
            "_created",
            &[
                MetricKind::Counter,
                MetricKind::Histogram,
                MetricKind::Summary,
            ],
        ),
        (
            "_bucket",
            &[MetricKind::Histogram, MetricKind::GaugeHistogram],
        ),
        ("_count", &[MetricKind::Histogram, MetricKind::Summary]),
        ("_sum", &[MetricKind::Histogram, MetricKind::Summary]),
        ("_gcount", &[MetricKind::GaugeHistogram]),
        ("_gsum", &[MetricKind::GaugeHistogram]),
        ("_info", &[MetricKind::Info]),
    ];
    for (suffix, kinds) in SUFFIXES {
        if let Some(base) = exposed.strip_suffix(suffix) {
            if let Some((k, h, u)) = meta.get(base) {
                if kinds.contains(k) {
                    return (Arc::from(base), *k, h.clone(), u.clone());
                }
            }
        }
    }
    unknown()
}

pub(super) fn family_index_owners(idx: &HashMap<FamilyKey, usize>) -> Vec<(Arc<str>, Arc<str>)> {
    let mut owners = vec![(Arc::from(""), Arc::from("")); idx.len()];
    for ((_, job, inst), i) in idx {
        owners[*i] = (job.clone(), inst.clone());
    }
    owners
}

/// Groups families under a resource per (job, instance); usually exactly one.
pub(super) fn assemble(
    families: Vec<MetricFamily>,
    owners: &[(Arc<str>, Arc<str>)],
    base: &[(String, String)],
    scheme: &str,
) -> Metrics {
    let mut m = Metrics::default();
    for (f, (job, inst)) in families.into_iter().zip(owners) {
        if f.samples.is_empty() {
            continue; // its only sample was a duplicate
        }
        resource_slot(&mut m, job, inst, scheme, base)
            .families
            .push(f);
    }
    m
}

pub(super) fn resource_slot<'a>(
    m: &'a mut Metrics,
    job: &str,
    instance: &str,
    scheme: &str,
    base: &[(String, String)],
) -> &'a mut ResourceMetrics {
    let pos = m.resources.iter().position(|r| {
        r.resource_attr("service.name") == Some(job)
            && r.resource_attr("service.instance.id") == Some(instance)
    });
    match pos {
        Some(i) => &mut m.resources[i],
        None => {
            let base_job = base
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.as_str());
            let base_inst = base
                .iter()
                .find(|(k, _)| k == "service.instance.id")
                .map(|(_, v)| v.as_str());
            let resource = if base_job == Some(job) && base_inst == Some(instance) {
                base.to_vec()
            } else {
                resource_for(job, instance, scheme)
            };
            m.resources.push(ResourceMetrics {
                resource,
                scope_name: SCOPE_NAME.to_string(),
                scope_version: env!("CARGO_PKG_VERSION").to_string(),
                families: Vec::new(),
            });
            m.resources.last_mut().expect("just pushed")
        }
    }
}

pub(super) fn append_stale(
    m: &mut Metrics,
    stale: Vec<Tracked>,
    ts: i64,
    base: &[(String, String)],
    scheme: &str,
) {
    for t in stale {
        let rm = resource_slot(m, &t.entry.job.value, &t.entry.instance.value, scheme, base);
        let sample = Sample {
            name: t.entry.name.clone(),
            labels: t.entry.labels.clone(),
            value: stale_nan(),
            timestamp_ms: ts,
        };
        match rm.families.iter_mut().find(|f| f.name == t.family) {
            Some(f) => f.samples.push(sample),
            None => rm.families.push(MetricFamily {
                name: t.family.clone(),
                kind: t.kind,
                help: Arc::from(""),
                unit: Arc::from(""),
                samples: vec![sample],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_attributes() {
        let r = resource_for("envoy", "10.0.0.1:15090", "http");
        assert_eq!(
            r,
            vec![
                ("service.name".to_string(), "envoy".to_string()),
                (
                    "service.instance.id".to_string(),
                    "10.0.0.1:15090".to_string()
                ),
                ("server.address".to_string(), "10.0.0.1".to_string()),
                ("server.port".to_string(), "15090".to_string()),
                ("url.scheme".to_string(), "http".to_string()),
            ]
        );
    }

    #[test]
    fn family_lookup_by_suffix() {
        let mut meta = HashMap::new();
        meta.insert(
            "rq".to_string(),
            (MetricKind::Histogram, Arc::from("h"), Arc::from("")),
        );
        meta.insert(
            "c".to_string(),
            (MetricKind::Counter, Arc::from(""), Arc::from("")),
        );
        let n: Arc<str> = Arc::from("rq_bucket");
        assert_eq!(family_of(&meta, "rq_bucket", &n).0.as_ref(), "rq");
        let n: Arc<str> = Arc::from("c_total");
        assert_eq!(family_of(&meta, "c_total", &n).1, MetricKind::Counter);
        let n: Arc<str> = Arc::from("rq_total");
        assert_eq!(family_of(&meta, "rq_total", &n).1, MetricKind::Unknown);
    }
}
