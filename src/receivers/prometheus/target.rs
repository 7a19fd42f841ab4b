//! Turning discovered target groups into scrape targets: Prometheus's label population and
//! target relabeling, then the scrape URL.

use std::collections::BTreeMap;
use std::time::Duration;

use super::config::ResolvedScrapeConfig;
use crate::config::units::{format_duration, parse_duration};
use crate::model::relabel::{relabel, LabelMap};

/// A target after relabeling, ready to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Labels before relabeling (shown on zpages, like Prometheus's "discovered labels").
    pub discovered: LabelMap,
    /// Final target labels: `job`, `instance` and whatever relabeling added; no `__` labels.
    pub labels: LabelMap,
    pub url: String,
    pub scheme: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Target {
    /// Stable identity: same labels and URL means the same scrape loop.
    pub fn key(&self) -> u64 {
        let mut s = String::new();
        for (k, v) in &self.labels {
            s.push_str(k);
            s.push('\u{0}');
            s.push_str(v);
            s.push('\u{0}');
        }
        s.push_str(&self.url);
        xxhash_rust::xxh3::xxh3_64(s.as_bytes())
    }

    pub fn job(&self) -> &str {
        self.labels.get("job").map(String::as_str).unwrap_or("")
    }

    pub fn instance(&self) -> &str {
        self.labels
            .get("instance")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Why a discovered target did not become a scrape target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Relabeling dropped it (normal; Prometheus lists these as dropped targets), with its
    /// labels before relabeling.
    Relabeled(LabelMap),
    /// It is broken: no address, bad interval...
    Invalid(String),
}

/// Prometheus's `PopulateLabels`: defaults, relabeling, `__` cleanup, `instance`.
pub fn populate(
    cfg: &ResolvedScrapeConfig,
    group_labels: &LabelMap,
    target_labels: &LabelMap,
) -> Result<Target, Dropped> {
    let mut lset: LabelMap = group_labels.clone();
    for (k, v) in target_labels {
        lset.insert(k.clone(), v.clone());
    }
    let defaults = [
        ("job", cfg.job_name.clone()),
        ("__scheme__", cfg.scheme.clone()),
        ("__metrics_path__", cfg.metrics_path.clone()),
        ("__scrape_interval__", format_duration(cfg.interval)),
        ("__scrape_timeout__", format_duration(cfg.timeout)),
    ];
    for (k, v) in defaults {
        lset.entry(k.to_string()).or_insert(v);
    }
    for (name, values) in &cfg.params {
        if let Some(first) = values.first() {
            lset.entry(format!("__param_{name}"))
                .or_insert_with(|| first.clone());
        }
    }
    let discovered = lset.clone();
    if !relabel(&mut lset, &cfg.relabel_configs) {
        return Err(Dropped::Relabeled(discovered));
    }
    let address = match lset.get("__address__") {
        Some(a) if !a.is_empty() => a.clone(),
        _ => {
            return Err(Dropped::Invalid(
                "no __address__ label after relabeling".into(),
            ))
        }
    };
    if address.contains('/') {
        return Err(Dropped::Invalid(format!("invalid address {address:?}")));
    }
    let interval = match lset.get("__scrape_interval__") {
        Some(s) => {
            parse_duration(s).map_err(|e| Dropped::Invalid(format!("__scrape_interval__: {e}")))?
        }
        None => cfg.interval,
    };
    let timeout = match lset.get("__scrape_timeout__") {
        Some(s) => {
            parse_duration(s).map_err(|e| Dropped::Invalid(format!("__scrape_timeout__: {e}")))?
        }
        None => cfg.timeout,
    };
    if interval.is_zero() {
        return Err(Dropped::Invalid("scrape interval is 0".into()));
    }
    if timeout > interval {
        return Err(Dropped::Invalid(format!(
            "scrape timeout {} greater than interval {}",
            format_duration(timeout),
            format_duration(interval)
        )));
    }
    let scheme = lset
        .get("__scheme__")
        .cloned()
        .unwrap_or_else(|| cfg.scheme.clone());
    let path = lset
        .get("__metrics_path__")
        .cloned()
        .unwrap_or_else(|| cfg.metrics_path.clone());
    // Query string: configured params, overridden by `__param_*` labels.
    let mut params: BTreeMap<String, Vec<String>> = cfg.params.clone();
    for (k, v) in &lset {
        if let Some(name) = k.strip_prefix("__param_") {
            params.insert(name.to_string(), vec![v.clone()]);
        }
    }
    let mut url = format!("{scheme}://{address}{path}");
    let mut first = !path.contains('?');
    for (k, vs) in &params {
        for v in vs {
            url.push(if first { '?' } else { '&' });
            first = false;
            url.push_str(&urlencode(k));
            url.push('=');
            url.push_str(&urlencode(v));
        }
    }
    lset.entry("instance".to_string()).or_insert(address);
    lset.retain(|k, _| !k.starts_with("__"));
    Ok(Target {
        discovered,
        labels: lset,
        url,
        scheme,
        interval,
        timeout,
    })
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::prometheus::config::PrometheusConfig;

    fn cfg(yaml: &str) -> ResolvedScrapeConfig {
        let c: PrometheusConfig = serde_saphyr::from_str(yaml).expect("parses");
        c.resolve().expect("valid").remove(0)
    }

    fn map(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn istio_annotation_rules() {
        let c = cfg(r#"
scrape_configs:
  - job_name: pods
    scrape_interval: 15s
    params: {format: [prometheus]}
    relabel_configs:
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
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
"#);
        let t = populate(
            &c,
            &map(&[("__meta_kubernetes_namespace", "shop")]),
            &map(&[
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
            ]),
        )
        .expect("kept");
        assert_eq!(
            t.url,
            "http://10.1.2.3:15020/stats/prometheus?format=prometheus"
        );
        assert_eq!(
            t.labels,
            map(&[
                ("instance", "10.1.2.3:15020"),
                ("job", "pods"),
                ("namespace", "shop")
            ])
        );
        assert_eq!(t.interval, Duration::from_secs(15));
        let dropped = populate(&c, &LabelMap::new(), &map(&[("__address__", "x:1")]));
        assert!(matches!(dropped, Err(Dropped::Relabeled(_))));
    }
}
