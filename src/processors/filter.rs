//! The `filter` processor, metrics part of the collector's legacy (non-OTTL) syntax:
//! `metrics: {include|exclude: {match_type, metric_names, resource_attributes}}`.

use regex::Regex;
use serde::Deserialize;

use super::Processor;
use crate::model::Metrics;

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Accepted for compatibility; errors never happen in the legacy matcher.
    #[serde(default)]
    pub error_mode: Option<String>,
    /// Which metrics to keep (`include`) and drop (`exclude`).
    #[serde(default)]
    pub metrics: MetricsFilter,
    /// OTTL conditions are not supported: they get a clear error in `validate`.
    #[serde(default)]
    pub traces: Option<serde_json::Value>,
    /// Log conditions are not supported (refused).
    #[serde(default)]
    pub logs: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsFilter {
    /// Only metrics that match are kept.
    #[serde(default)]
    pub include: Option<MatchProperties>,
    /// Metrics that match are dropped.
    #[serde(default)]
    pub exclude: Option<MatchProperties>,
    /// OTTL form (`metric: [...]`), refused by `validate`.
    #[serde(default)]
    pub metric: Option<Vec<String>>,
    /// OTTL form (`datapoint: [...]`), refused by `validate`.
    #[serde(default)]
    pub datapoint: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Strict,
    Regexp,
    Expr,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchProperties {
    /// How `metric_names` and attribute values compare: `strict` (equal) or `regexp`.
    #[serde(default)]
    pub match_type: MatchType,
    /// Metric names (or regexes) that match.
    #[serde(default)]
    pub metric_names: Vec<String>,
    /// Resource attributes that must all match as well.
    #[serde(default)]
    pub resource_attributes: Vec<AttributeMatch>,
    /// Expression matching is not supported (refused).
    #[serde(default)]
    pub expressions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// The resource attribute to compare.
    pub key: String,
    /// The value it must have (a regex with `match_type: regexp`).
    #[serde(default)]
    pub value: String,
}

impl FilterConfig {
    /// The `filter` processor of these settings.
    pub fn stage(&self) -> Result<super::Stage, String> {
        Ok(super::Stage::sync(Box::new(FilterProcessor::new(self)?)))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.metrics.metric.is_some() || self.metrics.datapoint.is_some() {
            return Err(
                "OTTL conditions (metrics.metric / metrics.datapoint) are not supported; \
                        use metrics.include / metrics.exclude with match_type strict or regexp"
                    .into(),
            );
        }
        for m in [&self.metrics.include, &self.metrics.exclude]
            .into_iter()
            .flatten()
        {
            if m.match_type == MatchType::Expr || !m.expressions.is_empty() {
                return Err("match_type expr is not supported; use strict or regexp".into());
            }
            if m.metric_names.is_empty() && m.resource_attributes.is_empty() {
                return Err("include/exclude needs metric_names or resource_attributes".into());
            }
            Matcher::new(m)?;
        }
        Ok(())
    }
}

/// A compiled include or exclude clause.
struct Matcher {
    names: Vec<NamePattern>,
    resource: Vec<(String, NamePattern)>,
}

enum NamePattern {
    Exact(String),
    // The collector's regexp matching is unanchored (Go's MatchString).
    Regex(Regex),
}

impl NamePattern {
    fn new(kind: MatchType, p: &str) -> Result<Self, String> {
        match kind {
            MatchType::Regexp => Regex::new(p)
                .map(NamePattern::Regex)
                .map_err(|e| format!("invalid regexp {p:?}: {e}")),
            _ => Ok(NamePattern::Exact(p.to_string())),
        }
    }
    fn matches(&self, s: &str) -> bool {
        match self {
            NamePattern::Exact(e) => e == s,
            NamePattern::Regex(r) => r.is_match(s),
        }
    }
}

impl Matcher {
    fn new(m: &MatchProperties) -> Result<Self, String> {
        Ok(Matcher {
            names: m
                .metric_names
                .iter()
                .map(|n| NamePattern::new(m.match_type, n))
                .collect::<Result<_, _>>()?,
            resource: m
                .resource_attributes
                .iter()
                .map(|a| Ok((a.key.clone(), NamePattern::new(m.match_type, &a.value)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    fn resource_matches(&self, resource: &[(String, String)]) -> bool {
        self.resource.iter().all(|(k, p)| {
            resource
                .iter()
                .find(|(rk, _)| rk == k)
                .is_some_and(|(_, v)| p.matches(v))
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|p| p.matches(name))
    }
}

pub struct FilterProcessor {
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

impl FilterProcessor {
    pub fn new(cfg: &FilterConfig) -> Result<Self, String> {
        cfg.validate()?;
        Ok(FilterProcessor {
            include: cfg.metrics.include.as_ref().map(Matcher::new).transpose()?,
            exclude: cfg.metrics.exclude.as_ref().map(Matcher::new).transpose()?,
        })
    }
}

impl Processor for FilterProcessor {
    fn process(&mut self, mut metrics: Metrics) -> Option<Metrics> {
        for r in &mut metrics.resources {
            let inc_res = self
                .include
                .as_ref()
                .map(|m| m.resource_matches(&r.resource));
            let exc_res = self
                .exclude
                .as_ref()
                .map(|m| m.resource_matches(&r.resource));
            r.families.retain(|f| {
                let name = f.otlp_name();
                if let (Some(m), Some(res_ok)) = (&self.include, inc_res) {
                    if !(res_ok && m.name_matches(&name)) {
                        return false;
                    }
                }
                if let (Some(m), Some(res_ok)) = (&self.exclude, exc_res) {
                    if res_ok && m.name_matches(&name) {
                        return false;
                    }
                }
                true
            });
        }
        metrics.resources.retain(|r| !r.families.is_empty());
        if metrics.resources.is_empty() {
            None
        } else {
            Some(metrics)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetricFamily, MetricKind, ResourceMetrics};
    use std::sync::Arc;

    fn fam(name: &str, kind: MetricKind) -> MetricFamily {
        MetricFamily {
            name: Arc::from(name),
            kind,
            help: Arc::from(""),
            unit: Arc::from(""),
            samples: vec![],
        }
    }

    fn data() -> Metrics {
        Metrics {
            resources: vec![ResourceMetrics {
                resource: vec![("service.name".into(), "envoy".into())],
                scope_name: String::new(),
                scope_version: String::new(),
                families: vec![
                    fam("istio_requests_total", MetricKind::Counter),
                    fam("envoy_cluster_upstream_rq", MetricKind::Counter),
                    fam("go_goroutines", MetricKind::Gauge),
                ],
            }],
        }
    }

    fn names(m: &Metrics) -> Vec<String> {
        m.resources[0]
            .families
            .iter()
            .map(|f| f.name.to_string())
            .collect()
    }

    #[test]
    fn include_regexp_then_exclude_strict() {
        let cfg: FilterConfig = serde_saphyr::from_str(
            "metrics:\n  include:\n    match_type: regexp\n    metric_names: ['^istio_.*', '^envoy_.*']\n  exclude:\n    match_type: strict\n    metric_names: [envoy_cluster_upstream_rq_total]\n",
        )
        .expect("parses");
        let mut p = FilterProcessor::new(&cfg).expect("valid");
        let out = p.process(data()).expect("something left");
        assert_eq!(names(&out), vec!["istio_requests_total"]);
    }

    #[test]
    fn resource_attributes_and_ottl_refusal() {
        let cfg: FilterConfig = serde_saphyr::from_str(
            "metrics:\n  exclude:\n    match_type: strict\n    resource_attributes: [{key: service.name, value: envoy}]\n",
        )
        .expect("parses");
        assert!(FilterProcessor::new(&cfg)
            .expect("valid")
            .process(data())
            .is_none());
        let cfg: FilterConfig =
            serde_saphyr::from_str("metrics:\n  metric:\n    - 'name == \"x\"'\n").expect("parses");
        assert!(cfg.validate().unwrap_err().contains("OTTL"));
    }
}
